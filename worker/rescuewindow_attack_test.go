package worker

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// Attacks on the windowed rescue (commit 58e6886): a rescue reads only the
// leases that expired since the process's last rescue, with a full pass
// every rescueFullEvery, and while jobs the database refused to rescue are
// set aside.

type rwaTask struct{}

func (rwaTask) Kind() string { return "task" }

// rwaWorker is a worker of queue "default", kind "task", driven by hand
// (no Run): the tests call its sweeper's rescue directly.
func rwaWorker(t *testing.T, pool *pgxpool.Pool, q db.DBTX) *Worker {
	t.Helper()
	w, err := New(pool, Config{
		Queues:        map[string]QueueConfig{"default": {Concurrency: 1}},
		PollInterval:  time.Hour,
		LeaseDuration: 20 * time.Second,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, HandleFunc(func(context.Context, *tasuki.Job[rwaTask]) error { return nil }))
	require.NoError(t, err)
	w.queries = db.New(q)
	return w
}

// rwaRunning inserts a running job of "default" whose lease expires at
// now() + expiresIn, with the given payload mode.
func rwaRunning(t *testing.T, q db.DBTX, expiresIn, mode string) int64 {
	t.Helper()
	var id int64
	require.NoError(t, q.QueryRow(context.Background(),
		`INSERT INTO tasuki_job (queue, kind, payload, status, attempts, attempted_at, lease_token, lease_expires_at)
		 VALUES ('default', 'task', jsonb_build_object('mode', $2::text), 'running', 1, now(), gen_random_uuid(), now() + $1::interval)
		 RETURNING id`, expiresIn, mode).Scan(&id))
	return id
}

func rwaStatus(t *testing.T, q db.DBTX, id int64) string {
	t.Helper()
	var s string
	require.NoError(t, q.QueryRow(context.Background(), `SELECT status::text FROM tasuki_job WHERE id = $1`, id).Scan(&s))
	return s
}

// A full pass that fails must not stop the windowed rescue. While the
// rescue runs in the sweeper (rescueInline false: an inline rescue was
// slow, as under the old snapshot this change is for), every sweeper
// rescue is a full pass as long as one is due, and a due full pass stays
// due until one succeeds. A full pass reads the whole running index, which
// under an old snapshot is exactly the read that outgrows the statement's
// timeout (LeaseDuration/2); here the database cancels it (query_canceled,
// 57014, as a statement timeout does) on a job that expired long ago, which
// only the full pass reaches. A job whose lease expired just now, inside
// the window, is then never rescued: the windowed pass, which would take
// it, is never sent.
func TestRescueWindowAttackFailingFullPassStarvesTheWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	w := rwaWorker(t, pool, pool)
	// An inline rescue and a full pass were slow: the sweeper runs both.
	// Set again before each rescue, as a quick one moves them back to the
	// leases, which this test does not run.
	sweeperRescues := func() { w.rescueInline.Store(false); w.fullRescueInline.Store(false) }
	sweeperRescues()

	require.NoError(t, w.rescue(ctx), "the first (full) pass")
	require.NotZero(t, w.lastFullRescue.Load())

	// A job behind the window (its lease expired an hour ago: one skipped
	// while another transaction held it, say) whose rescue the database
	// cancels, as it cancels a full pass that outgrows its timeout.
	old := rwaRunning(t, pool, "-1 hour", "slow")
	_, err := pool.Exec(ctx, `CREATE FUNCTION rwa_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.status = 'running' AND NEW.status <> 'running' AND OLD.payload->>'mode' = 'slow' THEN
				RAISE EXCEPTION 'canceling statement due to statement timeout' USING ERRCODE = 'query_canceled';
			END IF;
			RETURN NEW;
		END $$`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `CREATE TRIGGER rwa_cancel BEFORE UPDATE ON tasuki_job FOR EACH ROW EXECUTE FUNCTION rwa_cancel()`)
	require.NoError(t, err)

	// Ten minutes later the full pass is due, and a job's lease has just
	// expired, inside the window.
	w.lastFullRescue.Store(time.Now().Add(-rescueFullEvery - time.Minute).UnixNano())
	fresh := rwaRunning(t, pool, "-100 milliseconds", "fresh")

	for range 5 { // five rescue periods
		sweeperRescues()
		assert.NoError(t, w.rescue(ctx), "a failed full pass is logged and tried again a full period later")
	}
	assert.Greater(t, w.lastFullRescue.Load(), time.Now().Add(-time.Minute).UnixNano(), "the failed full pass was put off")
	assert.Equal(t, "running", rwaStatus(t, pool, old))
	assert.Equal(t, "pending", rwaStatus(t, pool, fresh),
		"a lease that expired inside the window was not rescued in five rescue periods: every sweeper rescue was the failing full pass")
}

// One job the database refuses to rescue (an application's trigger) keeps
// every later rescue a full pass for as long as it stays refused: the
// worker sets it aside (w.unrescued), and fullRescueDue is true while the
// set holds anything, so the rescue reads the whole running index again at
// every rescue period, which the change exists to stop ("while an old
// snapshot holds back vacuum, a rescue no longer reads an entry for every
// job run since it began"). The sweeper's full passes also never set
// rescueInline back, so the rescue never returns to the lease statements.
// Measured as in TestRescueWindowDoesNotReadOlderLeases: the index entries
// one rescue reads, with 3000 dead entries an old snapshot keeps.
func TestRescueWindowAttackRefusedJobMakesEveryRescueFull(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	w := rwaWorker(t, pool, conn)
	// The sweeper rescues, on conn. Set again before each rescue, as a
	// quick one moves the rescue back to the leases, which this test does
	// not run.
	sweeperRescues := func() { w.rescueInline.Store(false); w.fullRescueInline.Store(false) }

	// An old snapshot, then 3000 jobs run (their entries in the running
	// index stay, dead, while the snapshot is held).
	snap, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	defer func() { _ = snap.Rollback(ctx) }()
	var n0 int
	require.NoError(t, snap.QueryRow(ctx, "SELECT count(*) FROM tasuki_job").Scan(&n0))
	_, err = conn.Exec(ctx, `INSERT INTO tasuki_job (queue, kind, payload, status, attempts, attempted_at, lease_token, lease_expires_at)
		SELECT 'default', 'task', '{}', 'running', 1, now(), gen_random_uuid(), now() - interval '1 hour' + g * interval '1 millisecond'
		FROM generate_series(1, 3000) g`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `UPDATE tasuki_job SET status = 'completed', finished_at = now(), lease_token = NULL, lease_expires_at = NULL
		WHERE status = 'running'`)
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

	sweeperRescues()
	require.NoError(t, w.rescue(ctx), "the first (full) pass")
	before := read()
	sweeperRescues()
	require.NoError(t, w.rescue(ctx))
	require.Less(t, read()-before, int64(100), "control: a windowed rescue reads none of the dead entries")

	// A job the application refuses to rescue expires, inside the window.
	_, err = conn.Exec(ctx, `CREATE FUNCTION rwa_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.status = 'running' AND NEW.status <> 'running' AND OLD.payload->>'mode' = 'stuck' THEN
				RAISE EXCEPTION 'the application refuses this change';
			END IF;
			RETURN NEW;
		END $$`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `CREATE TRIGGER rwa_refuse BEFORE UPDATE ON tasuki_job FOR EACH ROW EXECUTE FUNCTION rwa_refuse()`)
	require.NoError(t, err)
	stuck := rwaRunning(t, conn, "-100 milliseconds", "stuck")
	sweeperRescues()
	require.NoError(t, w.rescue(ctx), "refused: rescued one by one, and set aside")
	require.Equal(t, 1, w.unrescued.Len())
	require.Equal(t, "running", rwaStatus(t, conn, stuck))

	// The rescues of the next rescue periods, the refused job still set
	// aside (its wait is 5 s).
	var reads []int64
	for range 3 {
		before := read()
		sweeperRescues()
		require.NoError(t, w.rescue(ctx))
		reads = append(reads, read()-before)
	}
	for i, n := range reads {
		assert.Less(t, n, int64(100), "index entries rescue %d after the refusal read (all: %v)", i+1, reads)
	}
	assert.False(t, w.fullRescueDue(time.Now()), "with a job set aside every rescue stays a full pass")
}

// Covers what worker/rescuewindow_test.go does not (passes): leases of one
// lease statement expire at the same instant, in two queues of one
// process; rescues stopped at rescue_max on that instant go on with the
// rest; a process row deleted by someone else makes the next windowed
// rescue read from the start; another process's rescues do not move this
// one's window. The database clock is moved per statement (Now).
func TestRescueWindowAttackEqualExpiryAcrossQueuesAndDeletedRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	q := db.New(pool)
	p1 := pgtype.UUID{Bytes: [16]byte{9, 1}, Valid: true}
	p2 := pgtype.UUID{Bytes: [16]byte{9, 2}, Valid: true}
	var t0 time.Time
	require.NoError(t, pool.QueryRow(ctx, "SELECT now()").Scan(&t0))
	rescue := func(id pgtype.UUID, at time.Time, max int32) {
		t.Helper()
		p := testdb.Lease(db.JobLeaseParams{LeaseUs: 1, Rescue: true, RescueMax: max, RescueMarginUs: time.Second.Microseconds(),
			RescueQueues: []string{"a", "b"}, Beat: true, ProcessID: id, ProcessHost: "test", ProcessPid: 1,
			ProcessQueues: []string{"a", "b"}, ProcessKinds: []string{"task"}, ProcessTtlUs: time.Hour.Microseconds(),
			SkipIds: []int64{}, OnlyIds: []int64{}, Now: &at}, "a", "task", 0)
		_, err := q.JobLease(ctx, p)
		require.NoError(t, err)
	}
	running := func(queue string, expires time.Time) int64 {
		t.Helper()
		var id int64
		require.NoError(t, pool.QueryRow(ctx, `INSERT INTO tasuki_job (queue, kind, payload, status, attempts, attempted_at, lease_token, lease_expires_at)
			VALUES ($1, 'task', '{}', 'running', 1, now(), gen_random_uuid(), $2) RETURNING id`, queue, expires).Scan(&id))
		return id
	}
	count := func() int {
		t.Helper()
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tasuki_job WHERE status = 'running'`).Scan(&n))
		return n
	}

	rescue(p1, t0, 1000)
	rescue(p2, t0, 1000)
	same := t0.Add(10 * time.Second)
	for i := range 7 {
		running([]string{"a", "b"}[i%2], same)
	}
	// Process 2 rescues nothing of it (its clock is before), and moves
	// only its own window.
	rescue(p2, t0.Add(5*time.Second), 1000)
	for i, at := 0, t0.Add(20*time.Second); i < 3; i, at = i+1, at.Add(time.Second) {
		rescue(p1, at, 2)
		assert.Equal(t, 7-2*(i+1), count())
	}
	rescue(p1, t0.Add(23*time.Second), 2)
	assert.Zero(t, count(), "the last of the leases that expired at the same instant")

	// A lease behind the window, then the process row deleted: the next
	// windowed rescue reads from the start.
	behind := running("b", t0.Add(-time.Hour))
	rescue(p1, t0.Add(30*time.Second), 1000)
	assert.Equal(t, 1, count(), "behind the window: left to the full pass")
	_, err := pool.Exec(ctx, `DELETE FROM tasuki_process WHERE id = $1`, p1)
	require.NoError(t, err)
	rescue(p1, t0.Add(31*time.Second), 1000)
	assert.Zero(t, count(), "job %d: a process with no row reads every lease", behind)
}
