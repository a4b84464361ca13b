package faults

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/pgtemp"
	"github.com/tasukiq/tasuki/internal/testdb"
)

// restartServer restarts the throwaway cluster (pg_ctl restart -m fast),
// failing the test if it does not come back within bound.
func restartServer(t *testing.T, c *pgtemp.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	require.NoError(t, c.Restart(ctx))
}

// pgtemp.Cluster.Restart returns once the server is back, and the server
// then accepts connections.
func TestClusterRestartReturns(t *testing.T) {
	c := testdb.Cluster()
	if c == nil {
		t.Skip("TEST_DATABASE_URL is set")
	}
	done := make(chan error, 1)
	go func() { done <- c.Restart(context.Background()) }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(bound):
		t.Fatal("Cluster.Restart did not return")
	}
}
