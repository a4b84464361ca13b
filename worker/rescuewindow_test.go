package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
)

// rwRescue runs a lease of no jobs that rescues for process id, as the
// worker's sweeper does.
func rwRescue(t *testing.T, q *db.Queries, id pgtype.UUID, full bool, max int32) {
	t.Helper()
	p := testdb.Lease(db.JobLeaseParams{LeaseUs: 1, Rescue: true, RescueMax: max, RescueFull: full,
		RescueMarginUs: time.Second.Microseconds(), Beat: true, ProcessID: id, ProcessHost: "test", ProcessPid: 1,
		ProcessQueues: []string{"default"}, ProcessKinds: []string{"task"}, ProcessTtlUs: time.Minute.Microseconds(),
		SkipIds: []int64{}, OnlyIds: []int64{}}, "default", "task", 0)
	_, err := q.JobLease(context.Background(), p)
	require.NoError(t, err)
}

// rwRunning inserts a running job whose lease expires at now() plus ago
// (negative: in the past), as a worker that died would leave it.
func rwRunning(t *testing.T, pool *pgxpool.Pool, expiresIn string) int64 {
	t.Helper()
	var id int64
	require.NoError(t, pool.QueryRow(context.Background(),
		`INSERT INTO tasuki_job (queue, kind, payload, status, attempts, attempted_at, lease_token, lease_expires_at)
		 VALUES ('default', 'task', '{}', 'running', 1, now(), gen_random_uuid(), now() + $1::interval)
		 RETURNING id`, expiresIn).Scan(&id))
	return id
}

func rwStatus(t *testing.T, pool *pgxpool.Pool, id int64) string {
	t.Helper()
	var s string
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT status::text FROM tasuki_job WHERE id = $1`, id).Scan(&s))
	return s
}

// A rescue reads the leases that expired since the process's last rescue
// (less a margin), not every running job's: a lease that expired long
// before, which only a worker's write could not have left there, waits for
// the full pass; one that expires after the last rescue is rescued by the
// next; a rescue stopped by rescue_max goes on from the last it took.
func TestRescueReadsTheWindowSinceTheLastRescue(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	q := db.New(pool)
	id := pgtype.UUID{Bytes: [16]byte{1, 2, 3}, Valid: true}

	rwRescue(t, q, id, false, 1000) // the process's first: it reads every lease
	old := rwRunning(t, pool, "-1 hour")
	recent := rwRunning(t, pool, "-500 milliseconds")
	rwRescue(t, q, id, false, 1000)
	assert.Equal(t, "pending", rwStatus(t, pool, recent), "a lease expired since the last rescue")
	assert.Equal(t, "running", rwStatus(t, pool, old), "a lease expired long before the last rescue waits for the full pass")

	// Three expire within the window; a rescue of at most two takes the
	// two that expired first, and the next one the third.
	var ids []int64
	for _, in := range []string{"100 milliseconds", "200 milliseconds", "300 milliseconds"} {
		ids = append(ids, rwRunning(t, pool, in))
	}
	time.Sleep(400 * time.Millisecond) // until the three have expired; not a bound on the code
	rwRescue(t, q, id, false, 2)
	assert.Equal(t, []string{"pending", "pending", "running"},
		[]string{rwStatus(t, pool, ids[0]), rwStatus(t, pool, ids[1]), rwStatus(t, pool, ids[2])})
	rwRescue(t, q, id, false, 2)
	assert.Equal(t, "pending", rwStatus(t, pool, ids[2]), "the rescue after one stopped at rescue_max goes on from there")

	rwRescue(t, q, id, true, 1000)
	assert.Equal(t, "pending", rwStatus(t, pool, old), "the full pass")

	// A rescue that also leases, for one job only (only_ids), does not
	// move where the window starts.
	var through1, through2 time.Time
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT rescued_through FROM tasuki_process WHERE id = $1`, id).Scan(&through1))
	p := testdb.Lease(db.JobLeaseParams{LeaseUs: 1, Rescue: true, RescueMax: 1000, Beat: true, ProcessID: id, ProcessHost: "test",
		ProcessPid: 1, ProcessQueues: []string{"default"}, ProcessKinds: []string{"task"}, ProcessTtlUs: time.Minute.Microseconds(),
		SkipIds: []int64{}, OnlyIds: []int64{old}}, "default", "task", 0)
	_, err := q.JobLease(context.Background(), p)
	require.NoError(t, err)
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT rescued_through FROM tasuki_process WHERE id = $1`, id).Scan(&through2))
	assert.Equal(t, through1, through2)
}

// The windowed rescue reads the running jobs' index from the window's
// start: thousands of leases that expired long before it (the dead
// entries an old snapshot keeps look the same to an index scan) are not
// read.
func TestRescueWindowDoesNotReadOlderLeases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	q := db.New(conn)
	id := pgtype.UUID{Bytes: [16]byte{4, 5, 6}, Valid: true}
	rwRescue(t, q, id, false, 1000)
	_, err = conn.Exec(ctx, `INSERT INTO tasuki_job (queue, kind, payload, status, attempts, attempted_at, lease_token, lease_expires_at)
		SELECT 'default', 'task', '{}', 'running', 1, now(), gen_random_uuid(), now() - interval '1 hour' - g * interval '1 second'
		FROM generate_series(1, 5000) g`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "ANALYZE tasuki_job")
	require.NoError(t, err)

	read := func() int64 {
		_, err := conn.Exec(ctx, "SELECT pg_stat_force_next_flush()")
		require.NoError(t, err)
		var n int64
		require.NoError(t, conn.QueryRow(ctx, `SELECT idx_tup_read FROM pg_stat_user_indexes
			WHERE indexrelname = 'tasuki_job_running_expiry_idx' AND schemaname = current_schema()`).Scan(&n))
		return n
	}
	before := read()
	rwRescue(t, q, id, false, 1000)
	assert.Less(t, read()-before, int64(100), "index entries a windowed rescue read")
	var running int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM tasuki_job WHERE status = 'running'`).Scan(&running))
	assert.Equal(t, 5000, running)

	rwRescue(t, q, id, true, 1000)
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM tasuki_job WHERE status = 'running'`).Scan(&running))
	assert.Equal(t, 4000, running, "the full pass rescues up to rescue_max of them")
}
