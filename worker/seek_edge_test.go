package worker_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// The application inserts jobs with SQL of its own (as the changelog
// allows: "inserted by SQL of the application's own"), one of them with
// scheduled_at '-infinity' ("as soon as possible", a valid timestamptz that
// the pending index orders first), at a priority the worker has not leased
// from. The worker's look for jobs behind its positions reads the first
// runnable job of every priority in one statement, and cannot scan
// -infinity into a time.Time: that statement now fails on every sweep, so a
// job behind the positions in any other priority is never found.
//
// Before the change, a lease from the head took both jobs; its rows failed
// to scan, but the lease had committed, and the rescue of the expired lease
// rescheduled them at now(): both ran a lease later.
func TestMinusInfinityRowDoesNotBlindTheSweeper(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	done := make(chan int64, 10)
	w := newWorker(t, pool, func(_ context.Context, job *tasuki.Job[task]) error {
		done <- job.ID
		return nil
	}, worker.Config{Queue: "default", PollInterval: 50 * time.Millisecond, LeaseDuration: 2 * time.Second, DisableListen: true})
	running(t, w)

	first := insert(t, client, task{N: 1}, nil)
	require.Equal(t, first, receive(t, done, "the first job"))

	_, err := pool.Exec(ctx, `INSERT INTO tasuki_job (kind, payload, priority, scheduled_at) VALUES ('task', '{"n":9}', 9, '-infinity')`)
	require.NoError(t, err)
	var behind int64
	require.NoError(t, pool.QueryRow(ctx,
		`INSERT INTO tasuki_job (kind, payload, priority, scheduled_at) VALUES ('task', '{"n":2}', 0, now() - interval '1 day') RETURNING id`).Scan(&behind))

	deadline := time.After(bound) // bounds a broken test; measures nothing
	for {
		select {
		case id := <-done:
			if id == behind {
				return
			}
		case <-deadline:
			t.Fatalf("job %d, behind the last lease, was never found: the sweeper's statement fails on the -infinity row", behind)
		}
	}
}

// headsTracer records the worker's JobRunnableHeads statements (the
// sweeper's look behind its positions): when each started and ended, on
// which backend, and whether it failed. The worker's own pool copies the
// application pool's settings, tracer included.
type headsTracer struct {
	// near: record the near looks (JobRunnableHeadsSince) too.
	near     bool
	mu       sync.Mutex
	attempts []*headsAttempt
}

type headsAttempt struct {
	pid        uint32
	start, end time.Time
	err        error
}

type headsKey struct{}

func (tr *headsTracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !strings.Contains(data.SQL, "-- name: JobRunnableHeads :many") &&
		!(tr.near && strings.Contains(data.SQL, "-- name: JobRunnableHeadsSince :many")) {
		return ctx
	}
	a := &headsAttempt{pid: conn.PgConn().PID(), start: time.Now()}
	tr.mu.Lock()
	tr.attempts = append(tr.attempts, a)
	tr.mu.Unlock()
	return context.WithValue(ctx, headsKey{}, a)
}

func (tr *headsTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	if a, ok := ctx.Value(headsKey{}).(*headsAttempt); ok {
		tr.mu.Lock()
		a.end, a.err = time.Now(), data.Err
		tr.mu.Unlock()
	}
}

// snapshot returns copies of the attempts so far.
func (tr *headsTracer) snapshot() []headsAttempt {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := make([]headsAttempt, len(tr.attempts))
	for i, a := range tr.attempts {
		out[i] = *a
	}
	return out
}

// tracedPool is a migrated pool on a fresh schema whose connections, and
// the worker's, report JobRunnableHeads to tr; setup runs on each new
// connection.
func tracedPool(t *testing.T, tr *headsTracer, setup string) *pgxpool.Pool {
	t.Helper()
	_, url := testdb.Schema(t)
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = max(cfg.MaxConns, 8)
	cfg.ConnConfig.Tracer = batchAsQuery{tr}
	if setup != "" {
		cfg.ConnConfig.AfterConnect = func(ctx context.Context, c *pgconn.PgConn) error {
			_, err := c.Exec(ctx, setup).ReadAll()
			return err
		}
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	testdb.MigrateUp(t, pool)
	return pool
}

// lockJobs takes an ACCESS EXCLUSIVE lock on tasuki_job (an ALTER TABLE, a
// REINDEX, a VACUUM FULL of the application's) until cleanup or release.
func lockJobs(t *testing.T, pool *pgxpool.Pool) (release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "LOCK TABLE tasuki_job IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)
	var once sync.Once
	release = func() { once.Do(func() { tx.Rollback(context.Background()) }) }
	t.Cleanup(release)
	return release
}

// The changelog: the look behind the positions runs "less often while
// [it is] slow (each waits at least 20 times as long as it took)", so that
// it "takes at most 1/sweepFactor of a connection however slow an old
// snapshot makes it". A look that fails after taking long (here it waits
// for a table lock until lock_timeout; with an old snapshot, it reads dead
// index entries until its one-minute timeout) is tried again after the
// plain backoff (100 ms, doubling to 5 s), whatever it took: with an
// old snapshot the sweeper then runs a one-minute read back to back, and the
// rescue of expired leases, which waits behind it on the same goroutine,
// runs about once a minute instead of every 5 s.
func TestFailedSlowLookBehindBacksOffByItsDuration(t *testing.T) {
	t.Parallel()
	tr := &headsTracer{}
	pool := tracedPool(t, tr, "SET lock_timeout = '500ms'")
	w := newWorker(t, pool, func(context.Context, *tasuki.Job[task]) error { return nil },
		worker.Config{Queue: "default", PollInterval: 100 * time.Millisecond, LeaseDuration: 10 * time.Second, DisableListen: true})
	running(t, w)
	// The sweeper looks behind the positions only while the worker leases
	// (or its leases fail, as they do behind the lock below).
	insert(t, newClient[task](t, pool), task{N: 1}, nil)
	eventually(t, "a first look behind the positions", func() bool {
		as := tr.snapshot()
		return len(as) > 0 && !as[0].end.IsZero()
	})
	lockJobs(t, pool)
	locked := time.Now()

	// The first two looks that started after the lock and failed.
	var failed []headsAttempt
	// The full look waits 100 times as long as it took (headsFactor): the
	// second failed one comes about 50 s after the first.
	eventuallyWithin(t, 3*time.Minute, "two looks behind the positions after the lock", func() bool {
		failed = failed[:0]
		for _, a := range tr.snapshot() {
			if a.start.After(locked) && !a.end.IsZero() && a.err != nil {
				failed = append(failed, a)
			}
		}
		return len(failed) >= 2
	})
	took := failed[0].end.Sub(failed[0].start)
	gap := failed[1].start.Sub(failed[0].end)
	t.Logf("first failed look took %s (%v); the next started %s later", took, failed[0].err, gap)
	require.GreaterOrEqual(t, took, 400*time.Millisecond, "the first look waited for the lock")
	require.GreaterOrEqual(t, gap, 20*took,
		"a look that failed after %s ran again %s later: not at least 20 times as long as it took", took, gap)
}

// Shutdown does not wait for the sweeper's look behind the positions. That
// statement gets max(LeaseDuration/2, 1 minute), while every statement the
// worker ran before this change got LeaseDuration/2 (here 1 s) at most;
// Run waits for the sweeper before it stops its database work, so a
// database that does not answer (here a table lock; equally a host that
// stopped answering) now holds up shutdown for up to a minute, past the
// 30 s a Kubernetes pod gets between SIGTERM and SIGKILL. The bound below
// is 30 times what the same shutdown takes without the sweeper.
func TestShutdownDoesNotWaitForTheLookBehind(t *testing.T) {
	t.Parallel()
	tr := &headsTracer{near: true} // whichever look waits for the lock
	pool := tracedPool(t, tr, "")
	w := newWorker(t, pool, func(context.Context, *tasuki.Job[task]) error { return nil },
		worker.Config{Queue: "default", PollInterval: 10 * time.Millisecond, LeaseDuration: 2 * time.Second, DisableListen: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	// The sweeper looks behind the positions only while the worker leases.
	insert(t, newClient[task](t, pool), task{N: 1}, nil)
	eventually(t, "a first look behind the positions", func() bool {
		as := tr.snapshot()
		return len(as) > 0 && !as[0].end.IsZero()
	})
	release := lockJobs(t, pool)
	eventually(t, "a look behind the positions waiting for the lock", func() bool {
		as := tr.snapshot()
		a := as[len(as)-1]
		if !a.end.IsZero() {
			return false
		}
		var waiting bool
		require.NoError(t, pool.QueryRow(context.Background(),
			"SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock')", int32(a.pid)).Scan(&waiting))
		return waiting
	})
	cancel()
	stopped := time.Now()
	select {
	case err := <-done:
		require.NoError(t, err)
		t.Logf("Run returned %s after its context ended", time.Since(stopped))
	case <-time.After(30 * time.Second):
		release()
		<-done
		t.Fatalf("Run returned %s after its context ended, held up by the sweeper's statement", time.Since(stopped).Round(time.Second))
	}
}

// A wake-up whose "r" does not decode as [[priority, microseconds], ...]
// (here fractional microseconds, as SQL computing them from
// extract(epoch ...) would send; or a sender of another version) is dropped
// whole: the listener's json.Unmarshal fails, and the worker is not even
// woken, where before this change the same payload woke it and its lease
// read the queue from the head. A wake-up that does not say where its jobs
// are should read from the head, as one without "r" does.
func TestWakeUpWithUndecodableHeadsStillWakes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, tap := newTappedPool(t)
	client := newClient[task](t, pool)
	done := make(chan int64, 10)
	w := newWorker(t, pool, func(_ context.Context, job *tasuki.Job[task]) error {
		done <- job.ID
		return nil
	}, worker.Config{Queue: "default", PollInterval: time.Hour})
	running(t, w)
	tap.listening(t, pool, 1)

	first := insert(t, client, task{N: 1}, nil)
	require.Equal(t, first, receive(t, done, "the first job"))

	var behind int64
	require.NoError(t, pool.QueryRow(ctx,
		`INSERT INTO tasuki_job (kind, payload, scheduled_at) VALUES ('task', '{"n":2}', now() - interval '1 minute') RETURNING id`).Scan(&behind))
	_, err := pool.Exec(ctx, `SELECT pg_notify('tasuki_jobs', json_build_object('k', 'insert', 's', current_schema(), 'q', 'default',
		'r', json_build_array(json_build_array(0, extract(epoch FROM now() - interval '1 minute') * 1000000)))::text)`)
	require.NoError(t, err)
	require.Equal(t, behind, receive(t, done, "the job the wake-up announced"))
}
