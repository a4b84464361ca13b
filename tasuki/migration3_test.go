package tasuki_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// Migration 3 tells the operator of a large table to build
// tasuki_job_finished_queue_idx first, with CREATE INDEX CONCURRENTLY. Such
// a build that is interrupted (a statement_timeout, a Ctrl-C, a deadlock)
// leaves an INVALID index of that name behind: the migration builds it
// again rather than take it for built.
func TestMigration3RebuildsAnInvalidPrebuiltIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.NewEmpty(t)
	m, err := tasuki.NewMigrator(pool)
	require.NoError(t, err)
	defer m.Close()
	_, err = m.Up(ctx)
	require.NoError(t, err)
	_, err = m.DownTo(ctx, 2)
	require.NoError(t, err)

	// The operator's concurrent build waits for an open transaction, and is
	// interrupted.
	blocker, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer blocker.Rollback(ctx)
	_, err = blocker.Exec(ctx, "LOCK TABLE tasuki_job IN ROW EXCLUSIVE MODE") // a writer
	require.NoError(t, err)
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "SET statement_timeout = '200ms'")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `CREATE INDEX CONCURRENTLY tasuki_job_finished_queue_idx
		ON tasuki_job (queue, status, finished_at)
		WHERE status IN ('completed', 'failed', 'canceled')`)
	require.Error(t, err, "the build was interrupted")
	require.NoError(t, blocker.Rollback(ctx))
	var valid bool
	require.NoError(t, pool.QueryRow(ctx,
		`SELECT indisvalid FROM pg_index WHERE indexrelid = 'tasuki_job_finished_queue_idx'::regclass`).Scan(&valid))
	require.False(t, valid, "an interrupted concurrent build leaves an invalid index")

	applied, err := m.Up(ctx)
	t.Logf("applied %d migration(s)", len(applied))
	if err != nil {
		t.Logf("migrate up: %v", err)
		return // refusing to go on is a fine answer
	}
	var usable int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_index i
		WHERE i.indrelid = 'tasuki_job'::regclass AND i.indisvalid
		  AND i.indexrelid IN ('tasuki_job_finished_queue_idx'::regclass)`).Scan(&usable))
	assert.Equal(t, 1, usable, "migration 3 succeeded, but the index the cleaner needs is invalid, and the old one is dropped")
}
