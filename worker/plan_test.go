package worker

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
)

// runningIndexScans is how often this connection's statements read the
// running jobs' partial index, once its statistics are flushed.
func runningIndexScans(t *testing.T, q *db.Queries, conn *pgxpool.Conn) int64 {
	t.Helper()
	ctx := context.Background()
	_, err := conn.Exec(ctx, "SELECT pg_stat_force_next_flush()")
	require.NoError(t, err)
	var n int64
	require.NoError(t, conn.QueryRow(ctx, `SELECT idx_scan FROM pg_stat_user_indexes
		WHERE indexrelname = 'tasuki_job_running_expiry_idx' AND schemaname = current_schema()`).Scan(&n))
	return n
}

// Outcomes and lease renewals find their jobs by primary key, never by
// reading the running jobs' partial index: while an old snapshot holds
// back vacuum, that index keeps an entry for every job run since, and the
// planner, which statistics tell that few jobs run, would read it whole
// for every batch.
func TestOutcomesAndRenewalsDoNotReadTheRunningIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	q := db.New(conn)
	_, err = conn.Exec(ctx, `INSERT INTO tasuki_job (kind, payload, status, finished_at)
		SELECT 'task', '{}', 'completed', now() FROM generate_series(1, 5000)`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO tasuki_job (kind, payload) SELECT 'task', '{}' FROM generate_series(1, 20)`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "ANALYZE tasuki_job")
	require.NoError(t, err)
	rows, err := q.JobLease(ctx, testdb.Lease(db.JobLeaseParams{LeaseUs: 60_000_000, SkipIds: []int64{}, OnlyIds: []int64{}}, "default", "task", 20))
	require.NoError(t, err)
	require.Len(t, rows, 20)
	ids := make([]int64, len(rows))
	tokens := make([]pgtype.UUID, len(rows))
	for i, r := range rows {
		ids[i], tokens[i] = r.ID, r.LeaseToken
	}

	before := runningIndexScans(t, q, conn)
	renewed, err := q.JobHeartbeatMany(ctx, db.JobHeartbeatManyParams{Ids: ids, Tokens: tokens, LeaseUs: 60_000_000})
	require.NoError(t, err)
	assert.Len(t, renewed, len(ids))
	n := len(ids)
	finished, err := q.JobFinishMany(ctx, db.JobFinishManyParams{
		Ids: ids, Tokens: tokens, Statuses: repeat("completed", n), DelaysUs: repeat(int64(0), n),
		Errors: repeat("", n), GiveBack: repeat(false, n),
	})
	require.NoError(t, err)
	assert.Len(t, finished, len(ids))
	assert.Equal(t, before, runningIndexScans(t, q, conn), "a renewal or an outcome read the running jobs' index")
}

func repeat[V any](v V, n int) []V {
	out := make([]V, n)
	for i := range out {
		out[i] = v
	}
	return out
}
