package worker_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// logBuffer collects a logger's output, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

func bufferLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, nil)), b
}

func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	_, err := pool.Exec(context.Background(), sql, args...)
	require.NoError(t, err)
}

// A job the database refuses to rescue (an application's trigger here)
// does not stall its queue: the other expired jobs are rescued, new jobs
// are leased, the refusal is logged once per try, not in a loop, and the
// job is rescued once the database accepts it.
func TestRefusedRescueDoesNotStallTheQueue(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	stuck := insert(t, client, task{N: 1, Mode: "stuck"}, nil)
	require.Len(t, leaseDirect(t, pool, "default", 1, time.Microsecond), 1)
	other := insert(t, client, task{N: 2}, nil)
	require.Len(t, leaseDirect(t, pool, "default", 1, time.Microsecond), 1)
	exec(t, pool, `CREATE FUNCTION refuse_rescue() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.status = 'running' AND NEW.status <> 'running' AND NEW.payload->>'mode' = 'stuck'
			   AND NEW.errors::text LIKE '%lease expired%' THEN
				RAISE EXCEPTION 'the application refuses this change';
			END IF;
			RETURN NEW;
		END $$`)
	exec(t, pool, `CREATE TRIGGER refuse_rescue BEFORE UPDATE ON tasuki_job FOR EACH ROW EXECUTE FUNCTION refuse_rescue()`)
	fresh := insert(t, client, task{N: 3}, nil)

	logger, logs := bufferLogger()
	ran := make(chan int64, 10)
	w := newWorker(t, pool, func(_ context.Context, job *tasuki.Job[task]) error {
		ran <- job.ID
		return nil
	}, worker.Config{LeaseDuration: time.Second, PollInterval: 20 * time.Millisecond, Logger: logger})
	running(t, w)

	eventually(t, "the fresh job and the other expired one to complete", func() bool {
		return jobStatus(t, client, fresh) == tasuki.StatusCompleted && jobStatus(t, client, other) == tasuki.StatusCompleted
	})
	assert.Equal(t, tasuki.StatusRunning, jobStatus(t, client, stuck), "the refused job stays as it was")
	eventually(t, "the refusal to be logged", func() bool { return logs.count("refused to rescue") > 0 })
	// The refusal is tried again on a backoff: over a second, with a
	// rescue every half second, a handful of tries at most; a loop would
	// log thousands.
	time.Sleep(time.Second)
	assert.LessOrEqual(t, logs.count("refused to rescue"), 4, "logged once per try")
	assert.Contains(t, logs.String(), "the application refuses this change")

	exec(t, pool, `DROP TRIGGER refuse_rescue ON tasuki_job`)
	eventually(t, "the stuck job to be rescued and run", func() bool { return jobStatus(t, client, stuck) == tasuki.StatusCompleted })
	job := getJob(t, client, stuck)
	assert.Equal(t, 2, job.Attempt)
}

// Notifications and the cleaner's lock name the schema that holds
// tasuki_job, not the first schema of the caller's search_path: a
// producer whose search_path starts with a schema of its own ("$user",
// public, the PostgreSQL default, with a schema per role) wakes the
// workers, its cancellations reach running handlers at once, and it shares
// the cleaner's lock with the workers.
func TestNotificationsNameTasukiSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	name, url := testdb.Schema(t)
	pool, tap := newTappedPoolAt(t, url)
	own, _ := testdb.Schema(t) // the producer's own schema, without tasuki's tables
	producerURL := strings.Replace(url, "search_path="+name, "search_path="+own+","+name, 1)
	require.NotEqual(t, url, producerURL)
	producer := testdb.Pool(t, producerURL)
	var first string
	require.NoError(t, producer.QueryRow(ctx, "SELECT current_schema()").Scan(&first))
	require.Equal(t, own, first, "the producer's first schema is its own")

	started := make(chan int64, 1)
	causes := make(chan error, 1)
	// Polls hourly and renews leases every 20 minutes: only notifications
	// can start the job and stop it within the test.
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		started <- job.ID
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return ctx.Err()
	}, worker.Config{PollInterval: time.Hour, LeaseDuration: time.Hour})
	running(t, w)
	tap.listening(t, pool, 1)

	client := newClient[task](t, producer)
	id := insert(t, client, task{N: 1}, nil)
	assert.Equal(t, id, receive(t, started, "the producer's insert wakes the worker"))
	_, err := client.Cancel(ctx, id)
	require.NoError(t, err)
	assert.ErrorIs(t, receive(t, causes, "the producer's cancel reaches the handler"), worker.ErrJobCanceled)

	// One cleaner lock for both search paths.
	tx, err := producer.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	locked, err := db.New(tx).CleanerTryLock(ctx)
	require.NoError(t, err)
	require.True(t, locked)
	locked, err = db.New(pool).CleanerTryLock(ctx)
	require.NoError(t, err)
	assert.False(t, locked, "the workers' search_path finds the producer's lock")
}

// The default backoff is capped, and no retry delay, from the default
// policy or a custom one, is negative or overflows, for any attempt up to
// the largest MaxAttempts.
func TestDefaultRetryPolicyIsCapped(t *testing.T) {
	t.Parallel()
	day := float64(worker.MaxDefaultRetryDelay)
	for _, attempt := range []int{0, 1, 2, 17, 18, 25, 302, 303, 304, 1000, 100_000, math.MaxInt32} {
		d := worker.DefaultRetryPolicy(attempt)
		assert.GreaterOrEqual(t, d, time.Duration(0), "attempt %d", attempt)
		assert.LessOrEqual(t, float64(d), day*1.1, "attempt %d", attempt)
	}
	d := worker.DefaultRetryPolicy(1)
	assert.InDelta(t, float64(time.Second), float64(d), float64(time.Second)/10+1)
	d = worker.DefaultRetryPolicy(303)
	assert.InDelta(t, day, float64(d), day/10+1, "attempt 303 is capped, not overflowed")
}

func TestRetryDelaysAreClamped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	// A job deep into a long MaxAttempts: its next delay with the default
	// policy is the cap, not an overflow into the past.
	deep := insert(t, client, task{N: 1, Mode: "deep"}, &tasuki.InsertOpts{MaxAttempts: math.MaxInt32})
	exec(t, pool, "UPDATE tasuki_job SET attempts = 400 WHERE id = $1", deep)
	deepW := newWorker(t, pool, func(context.Context, *tasuki.Job[task]) error { return errors.New("fails") },
		worker.Config{PollInterval: 20 * time.Millisecond})
	stop := running(t, deepW)
	eventually(t, "the deep job's attempt to fail", func() bool { return len(getJob(t, client, deep).Errors) >= 1 })
	stop()

	// A custom policy that returns a negative delay retries at once, not in
	// the past.
	negative := insert(t, client, task{N: 2, Mode: "negative"}, &tasuki.InsertOpts{Queue: "neg"})
	negW := newWorker(t, pool, func(context.Context, *tasuki.Job[task]) error { return errors.New("fails") },
		worker.Config{Queue: "neg", PollInterval: time.Hour, RetryPolicy: func(int) time.Duration { return -1000 * time.Hour }})
	stop = running(t, negW)
	eventually(t, "the negative job's first attempt to fail", func() bool { return len(getJob(t, client, negative).Errors) >= 1 })
	stop()

	var deepDelay, negDelay time.Duration
	require.NoError(t, pool.QueryRow(ctx, `SELECT extract(epoch FROM scheduled_at - (errors->-1->>'at')::timestamptz) * 1e9
		FROM tasuki_job WHERE id = $1`, deep).Scan(&deepDelay))
	require.NoError(t, pool.QueryRow(ctx, `SELECT extract(epoch FROM scheduled_at - (errors->0->>'at')::timestamptz) * 1e9
		FROM tasuki_job WHERE id = $1`, negative).Scan(&negDelay))
	assert.InDelta(t, float64(worker.MaxDefaultRetryDelay), float64(deepDelay), float64(worker.MaxDefaultRetryDelay)/10+1e9,
		"the deep job is retried about a day later")
	assert.GreaterOrEqual(t, negDelay, time.Duration(0), "a negative delay counts as 0")
}

// Handlers that hold every connection of the application's pool (in a
// transaction, as the README recommends for idempotency) do not starve the
// worker's own statements: leases are renewed and every job completes on
// its first attempt.
func TestHandlersHoldingThePoolDoNotStarveTheWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testdb.Schema(t)
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	testdb.MigrateUp(t, pool)
	client := newClient[task](t, pool)
	ids := make([]int64, 4)
	for i := range ids {
		ids[i] = insert(t, client, task{N: i}, nil)
	}

	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		// Holds a connection for longer than the lease, so the job
		// completes only if its lease is renewed meanwhile.
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "SELECT pg_sleep(1.5)")
			return err
		})
	}, worker.Config{Concurrency: 4, LeaseDuration: time.Second, PollInterval: 20 * time.Millisecond,
		RetryPolicy: func(int) time.Duration { return 0 }})
	running(t, w)
	for _, id := range ids {
		eventually(t, "every job to complete", func() bool { return jobStatus(t, client, id) == tasuki.StatusCompleted })
		job := getJob(t, client, id)
		assert.Equal(t, 1, job.Attempt, "job %d completed on its first attempt", id)
		assert.Empty(t, job.Errors, "job %d lost no lease", id)
	}
}

// A heartbeat gets time to answer however short the interval: with the
// shortest interval and a database that takes longer than that to renew
// leases, leases are still renewed.
func TestHeartbeatTimeoutDoesNotDependOnTheInterval(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	// Renewals (running stays running) take 150 ms, more than the
	// heartbeat interval.
	exec(t, pool, `CREATE FUNCTION slow_renewal() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_sleep(0.15); RETURN NEW; END $$`)
	exec(t, pool, `CREATE TRIGGER slow_renewal BEFORE UPDATE ON tasuki_job FOR EACH ROW
		WHEN (OLD.status = 'running' AND NEW.status = 'running') EXECUTE FUNCTION slow_renewal()`)
	id := insert(t, client, task{N: 1}, nil)
	w := newWorker(t, pool, func(ctx context.Context, _ *tasuki.Job[task]) error {
		select {
		case <-time.After(3 * time.Second): // three leases
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}, worker.Config{LeaseDuration: time.Second, HeartbeatInterval: worker.MinHeartbeatInterval,
		PollInterval: 20 * time.Millisecond, RetryPolicy: func(int) time.Duration { return time.Hour }})
	running(t, w)
	eventually(t, "the job to finish its attempt", func() bool {
		j := getJob(t, client, id) // one read: the status must not change between checks
		return j.Status != tasuki.StatusRunning && j.Status != tasuki.StatusPending || len(j.Errors) > 0
	})
	job := getJob(t, client, id)
	assert.Equal(t, tasuki.StatusCompleted, job.Status, "errors: %v", job.Errors)
}

// When leases cannot be renewed, the handler is canceled with
// ErrLeaseLost while its lease still holds, with a margin, so the job never
// runs in two places; whatever the heartbeat interval.
func TestHandlerStopsBeforeItsLeaseLapses(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	exec(t, pool, `CREATE FUNCTION refuse_renewal() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'renewals refused'; END $$`)
	exec(t, pool, `CREATE TRIGGER refuse_renewal BEFORE UPDATE ON tasuki_job FOR EACH ROW
		WHEN (OLD.status = 'running' AND NEW.status = 'running') EXECUTE FUNCTION refuse_renewal()`)

	const lease = 4 * time.Second
	for _, heartbeat := range []time.Duration{lease / 2, lease / 3, worker.MinHeartbeatInterval} {
		queue := "hb" + heartbeat.String()
		id := insert(t, client, task{N: 1}, &tasuki.InsertOpts{Queue: queue})
		type stopped struct {
			cause     error
			remaining time.Duration // of the lease, by the database clock
		}
		stops := make(chan stopped, 1)
		w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
			<-ctx.Done()
			var remaining time.Duration
			err := pool.QueryRow(context.Background(), `SELECT extract(epoch FROM lease_expires_at - clock_timestamp()) * 1e9
				FROM tasuki_job WHERE id = $1`, job.ID).Scan(&remaining)
			if err != nil {
				remaining = -1
			}
			stops <- stopped{context.Cause(ctx), remaining}
			return ctx.Err()
		}, worker.Config{Queue: queue, LeaseDuration: lease, HeartbeatInterval: heartbeat, PollInterval: 20 * time.Millisecond})
		stop := running(t, w)
		s := receive(t, stops, "the handler to be stopped")
		assert.ErrorIs(t, s.cause, worker.ErrLeaseLost, "heartbeat %s", heartbeat)
		assert.Greater(t, s.remaining, lease/10, "heartbeat %s: stopped with a margin before the lease lapses", heartbeat)
		stop()
		// The attempt is recorded as the handler returned it; the token
		// still matched, as the lease had not lapsed.
		eventually(t, "the attempt to be recorded", func() bool { return jobStatus(t, client, id) != tasuki.StatusRunning })
	}
}

// The same holds for leasing: a job the database refuses to lease does not
// stop the queue's other jobs from being leased, and is leased once the
// database accepts it.
func TestRefusedLeaseDoesNotStallTheQueue(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	exec(t, pool, `CREATE FUNCTION refuse_lease() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.status = 'pending' AND NEW.status = 'running' AND NEW.payload->>'mode' = 'stuck' THEN
				RAISE EXCEPTION 'the application refuses this lease';
			END IF;
			RETURN NEW;
		END $$`)
	exec(t, pool, `CREATE TRIGGER refuse_lease BEFORE UPDATE ON tasuki_job FOR EACH ROW EXECUTE FUNCTION refuse_lease()`)
	// The refused job comes first in lease order.
	stuck := insert(t, client, task{N: 1, Mode: "stuck"}, &tasuki.InsertOpts{Priority: 0})
	var others []int64
	for i := range 3 {
		others = append(others, insert(t, client, task{N: 2 + i}, &tasuki.InsertOpts{Priority: 1}))
	}

	logger, logs := bufferLogger()
	w := newWorker(t, pool, func(context.Context, *tasuki.Job[task]) error { return nil },
		worker.Config{LeaseDuration: time.Second, PollInterval: 20 * time.Millisecond, Logger: logger})
	running(t, w)
	for _, id := range others {
		eventually(t, "the other jobs to complete", func() bool { return jobStatus(t, client, id) == tasuki.StatusCompleted })
	}
	assert.Equal(t, tasuki.StatusPending, jobStatus(t, client, stuck))
	time.Sleep(time.Second)
	n := logs.count("refused to lease")
	assert.Positive(t, n)
	assert.LessOrEqual(t, n, 4, "logged once per try")

	exec(t, pool, `DROP TRIGGER refuse_lease ON tasuki_job`)
	eventually(t, "the refused job to run", func() bool { return jobStatus(t, client, stuck) == tasuki.StatusCompleted })
}

// A lease the database refuses to renew costs only that job its lease:
// the worker's other jobs keep theirs and complete on their first attempt.
func TestRefusedRenewalCostsOnlyThatJob(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	exec(t, pool, `CREATE FUNCTION refuse_renewal() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.status = 'running' AND NEW.status = 'running' AND NEW.payload->>'mode' = 'stuck' THEN
				RAISE EXCEPTION 'the application refuses this renewal';
			END IF;
			RETURN NEW;
		END $$`)
	exec(t, pool, `CREATE TRIGGER refuse_renewal BEFORE UPDATE ON tasuki_job FOR EACH ROW EXECUTE FUNCTION refuse_renewal()`)
	stuck := insert(t, client, task{N: 1, Mode: "stuck"}, nil)
	fine := insert(t, client, task{N: 2}, nil)

	causes := make(chan error, 2)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		select {
		case <-time.After(2500 * time.Millisecond): // beyond two leases
			return nil
		case <-ctx.Done():
			causes <- context.Cause(ctx)
			return ctx.Err()
		}
	}, worker.Config{LeaseDuration: time.Second, PollInterval: 20 * time.Millisecond, RetryPolicy: func(int) time.Duration { return time.Hour }})
	running(t, w)
	assert.ErrorIs(t, receive(t, causes, "the refused job's handler to stop"), worker.ErrLeaseLost)
	eventually(t, "the other job to complete", func() bool { return jobStatus(t, client, fine) == tasuki.StatusCompleted })
	job := getJob(t, client, fine)
	assert.Equal(t, 1, job.Attempt)
	assert.Empty(t, job.Errors)
	assert.NotEqual(t, tasuki.StatusCompleted, jobStatus(t, client, stuck))
}
