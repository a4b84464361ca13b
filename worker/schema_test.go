package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// A worker on a schema a migration behind its own version (a column it
// needs is missing) says so and returns, rather than waiting forever as
// for an unreachable database.
func TestWorkerOnAnOlderSchemaReturnsErrSchemaMissing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	m, err := tasuki.NewMigrator(pool)
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	_, latest, err := m.Version(ctx)
	require.NoError(t, err)
	_, err = m.DownTo(ctx, latest-1)
	require.NoError(t, err)

	w := newWorker(t, pool, func(context.Context, *tasuki.Job[task]) error { return nil }, worker.Config{})
	// The bound only keeps a broken test from hanging.
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = w.Run(rctx)
	require.ErrorIs(t, err, tasuki.ErrSchemaMissing)
	require.Contains(t, err.Error(), "older than this version")
}
