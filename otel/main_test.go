package tasukiotel_test

import (
	"testing"

	"github.com/tasukiq/tasuki/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }
