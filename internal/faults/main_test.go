package faults

import (
	"os"
	"testing"

	"github.com/tasukiq/tasuki/internal/testdb"
)

// TestMain runs the tests, or, in a child process started by a test, the
// worker role.
func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "worker" {
		os.Exit(runRole())
	}
	testdb.Main(m)
}
