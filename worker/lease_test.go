package worker_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// shortLease is a worker configuration whose leases lapse, and are
// rescued, within about a second.
func shortLease() worker.Config {
	return worker.Config{
		LeaseDuration:     time.Second,
		HeartbeatInterval: 300 * time.Millisecond,
		PollInterval:      50 * time.Millisecond,
		RetryPolicy:       retryIn(0),
	}
}

const leaseExpired = "lease expired"

// A job leased by a worker that died (it never heartbeats, never reports)
// is rescued by another worker once its lease expires, and run again with
// the lost attempt counted.
func TestDeadWorkersJobIsRescued(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	id := insert(t, client, task{N: 1}, nil)
	dead := leaseDirect(t, pool, "default", 10, time.Second)
	require.Len(t, dead, 1)
	require.EqualValues(t, 1, dead[0].Attempts)

	seen := make(chan *tasuki.Job[task], 10)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		seen <- job
		return nil
	}, shortLease())
	stop := running(t, w)

	job := receive(t, seen, "the rescued job to run")
	assert.Equal(t, id, job.ID)
	assert.Equal(t, 2, job.Attempt, "the dead worker's attempt counts")
	require.Len(t, job.Errors, 1, errorsText(job))
	assert.Equal(t, 1, job.Errors[0].Attempt)
	assert.Contains(t, job.Errors[0].Error, leaseExpired)

	eventually(t, "job completed", func() bool { return jobStatus(t, client, id) == tasuki.StatusCompleted })
	stop()
	job = getJob(t, client, id)
	assert.Equal(t, 2, job.Attempt)
	require.Len(t, job.Errors, 1)
	assert.Contains(t, job.Errors[0].Error, leaseExpired)
	assert.Empty(t, seen, "the job ran once after its rescue")
}

// A job that kills its worker on its last attempt ends failed when its
// lease expires; it does not stay running, and is not run again.
func TestJobThatKillsItsWorkerOnLastAttemptFails(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	id := insert(t, client, task{N: 1}, &tasuki.InsertOpts{MaxAttempts: 1})
	require.Len(t, leaseDirect(t, pool, "default", 10, time.Second), 1)

	var calls atomic.Int32
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		calls.Add(1)
		return nil
	}, shortLease())
	stop := running(t, w)

	eventually(t, "job failed", func() bool { return jobStatus(t, client, id) == tasuki.StatusFailed })
	stop()
	job := getJob(t, client, id)
	assert.Equal(t, 1, job.Attempt)
	assert.NotNil(t, job.FinishedAt)
	require.Len(t, job.Errors, 1)
	assert.Equal(t, 1, job.Errors[0].Attempt)
	assert.Contains(t, job.Errors[0].Error, leaseExpired)
	assert.Zero(t, calls.Load(), "no attempt is left to run")
	raw := rawJob(t, pool, id)
	assert.False(t, raw.LeaseToken.Valid)
	assert.Nil(t, raw.LeaseExpiresAt)
}

// A worker whose lease expired and was taken over cannot record an outcome:
// its completion is fenced off by the lease token.
func TestStaleWorkersCompletionIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	q := db.New(pool)

	id := insert(t, client, task{N: 1}, nil)
	first := leaseDirect(t, pool, "default", 1, time.Second)
	require.Len(t, first, 1)
	tokenA := first[0].LeaseToken

	// A minute later by the lease query's clock, the lease has expired: the
	// job is rescued, then leased again under a new token.
	now, err := q.DatabaseNow(ctx, nil)
	require.NoError(t, err)
	later := now.Now.Add(time.Minute)
	rescued, err := q.JobLease(ctx, testdb.Lease(db.JobLeaseParams{LeaseUs: time.Minute.Microseconds(), Rescue: true, RescueMax: 1000, Now: &later}, "default", "task", 0))
	require.NoError(t, err)
	assert.Empty(t, rescued, "rescued jobs are leased by the next call")
	second, err := q.JobLease(ctx, testdb.Lease(db.JobLeaseParams{LeaseUs: time.Minute.Microseconds(), Now: &later}, "default", "task", 1))
	require.NoError(t, err)
	require.Len(t, second, 1)
	tokenB := second[0].LeaseToken
	require.NotEqual(t, tokenA, tokenB)
	assert.EqualValues(t, 2, second[0].Attempts)

	before := rawJob(t, pool, id)
	finish := func(token pgtype.UUID) []int64 {
		ids, err := q.JobFinishMany(ctx, db.JobFinishManyParams{
			Ids:      []int64{id},
			Tokens:   []pgtype.UUID{token},
			Statuses: []string{string(db.TasukiJobStatusCompleted)},
			DelaysUs: []int64{0},
			Errors:   []string{""},
			GiveBack: []bool{false},
		})
		require.NoError(t, err)
		return ids
	}
	assert.Empty(t, finish(tokenA), "the stale worker's outcome is refused")
	assert.Equal(t, before, rawJob(t, pool, id), "and changes nothing")

	assert.Equal(t, []int64{id}, finish(tokenB), "the current holder's outcome is recorded")
	assert.Equal(t, tasuki.StatusCompleted, jobStatus(t, client, id))
	assert.Empty(t, finish(tokenB), "a finished job takes no second outcome")
}

// When the worker no longer holds a job's lease (another owner took it),
// the next heartbeat cancels the handler, and its outcome is not recorded.
func TestLostLeaseCancelsHandler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	started := make(chan int64, 1)
	causes := make(chan error, 1)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		started <- job.ID
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return nil // claims success: it must not be recorded
	}, shortLease())
	stop := running(t, w)

	id := insert(t, client, task{N: 1}, nil)
	require.Equal(t, id, receive(t, started, "handler started"))

	// Another owner: a new token, and a lease that does not expire soon.
	var owner pgtype.UUID
	require.NoError(t, pool.QueryRow(ctx, `
		UPDATE tasuki_job SET lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 hour'
		WHERE id = $1 AND status = 'running' RETURNING lease_token`, id).Scan(&owner))

	cause := receive(t, causes, "handler's context canceled")
	assert.ErrorIs(t, cause, worker.ErrLeaseLost)

	stop()
	raw := rawJob(t, pool, id)
	assert.Equal(t, db.TasukiJobStatusRunning, raw.Status, "the other owner's job is left alone")
	assert.Equal(t, owner, raw.LeaseToken)
	assert.EqualValues(t, 1, raw.Attempts)
	assert.JSONEq(t, "[]", string(raw.Errors))
}

// Heartbeats keep the lease of a job that runs longer than the lease
// duration: it is neither rescued nor run twice.
func TestHeartbeatsKeepLongJobLeased(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	var calls atomic.Int32
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		calls.Add(1)
		select {
		case <-time.After(3 * time.Second): // three lease durations
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}, shortLease())
	stop := running(t, w)

	id := insert(t, client, task{N: 1}, nil)
	eventually(t, "job finished", func() bool { return jobStatus(t, client, id).Finished() })
	stop()
	job := getJob(t, client, id)
	assert.Equal(t, tasuki.StatusCompleted, job.Status, errorsText(job))
	assert.Equal(t, 1, job.Attempt)
	assert.Empty(t, job.Errors)
	assert.EqualValues(t, 1, calls.Load())
}

// Four workers on one pool share 10,000 jobs: each runs exactly once.
func TestManyJobsManyWorkers(t *testing.T) {
	t.Parallel()
	const jobs, workers = 10_000, 4
	ctx := context.Background()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	var mu sync.Mutex
	runs := make(map[int64]int, jobs)
	payloads := make(map[int64]int, jobs)
	stops := make([]func(), workers)
	for i := range workers {
		w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
			mu.Lock()
			runs[job.ID]++
			payloads[job.ID] = job.Payload.N
			mu.Unlock()
			return nil
		}, worker.Config{Concurrency: 50})
		stops[i] = running(t, w)
	}

	batch := make([]task, jobs)
	for i := range batch {
		batch[i] = task{N: i}
	}
	n, err := client.InsertMany(ctx, batch, nil)
	require.NoError(t, err)
	require.EqualValues(t, jobs, n)

	eventually(t, "all jobs completed", func() bool { return countStatus(t, pool, tasuki.StatusCompleted) == jobs })
	for _, stop := range stops {
		stop()
	}

	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, runs, jobs)
	twice := 0
	for id, c := range runs {
		if c != 1 {
			twice++
			if twice <= 10 {
				t.Errorf("job %d ran %d times", id, c)
			}
		}
	}
	assert.Zero(t, twice, "jobs run more than once")
	seen := make([]int, 0, jobs)
	for _, p := range payloads {
		seen = append(seen, p)
	}
	slices.Sort(seen)
	seen = slices.Compact(seen)
	assert.Len(t, seen, jobs, "every payload reached a handler")

	var odd int
	require.NoError(t, pool.QueryRow(ctx,
		`SELECT count(*) FROM tasuki_job WHERE attempts <> 1 OR errors <> '[]' OR finished_at IS NULL`).Scan(&odd))
	assert.Zero(t, odd, "jobs retried, with errors, or unfinished")
}

// A worker whose LISTEN connection is killed reconnects and LISTENs again:
// jobs are still picked up at once, not at the next poll.
func TestListenerReconnects(t *testing.T) {
	t.Parallel()
	pool, tap := newTappedPool(t)
	client := newClient[task](t, pool)

	handled := make(chan int64, 10)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		handled <- job.ID
		return nil
	}, worker.Config{PollInterval: time.Minute}) // polling cannot explain a pickup
	running(t, w)

	// notified waits for a job picked up through a notification: well within
	// the poll interval.
	notified := func(id int64, what string) {
		t.Helper()
		select {
		case got := <-handled:
			assert.Equal(t, id, got)
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: job not picked up through a notification", what)
		}
	}

	first := tap.listening(t, pool, 1)
	var app string
	require.NoError(t, pool.QueryRow(context.Background(),
		"SELECT application_name FROM pg_stat_activity WHERE pid = $1", int32(first)).Scan(&app))
	assert.Equal(t, "tasuki-listener", app)
	id := insert(t, client, task{N: 1}, nil)
	notified(id, "before the kill")

	terminate(t, pool, first)
	second := tap.listening(t, pool, 2)
	assert.NotEqual(t, first, second)
	id = insert(t, client, task{N: 2}, nil)
	notified(id, "after the kill")
	eventually(t, "job completed", func() bool { return jobStatus(t, client, id) == tasuki.StatusCompleted })
}

// When heartbeats fail (the database refuses them, or the worker's
// connection is away) while the rest of the system works on, the worker must
// stop the handler before its lease expires and another worker can take
// the job, as writer.go's heartbeat promises ("stop the handler before
// another worker starts the same job"); otherwise the job runs twice at once.
func TestUnrenewableLeaseStopsHandlerBeforeAnotherWorkerCanTakeIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	q := db.New(pool)

	started := make(chan int64, 1)
	causes := make(chan error, 1)
	var stopped atomic.Bool
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		started <- job.ID
		<-ctx.Done()
		stopped.Store(true)
		causes <- context.Cause(ctx)
		return ctx.Err()
	}, worker.Config{
		LeaseDuration:     time.Second,
		HeartbeatInterval: 400 * time.Millisecond,
		PollInterval:      time.Minute, // this worker does not rescue its own job
	})
	running(t, w)

	id := insert(t, client, task{N: 1}, nil)
	require.Equal(t, id, receive(t, started, "handler started"))

	// From now on every heartbeat fails; leasing, rescuing and finishing
	// still work.
	_, err := pool.Exec(ctx, `
		CREATE FUNCTION refuse_heartbeat() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.status = 'running' AND NEW.status = 'running' AND OLD.lease_token = NEW.lease_token THEN
				RAISE EXCEPTION 'heartbeat refused by the test';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_heartbeat BEFORE UPDATE ON tasuki_job
			FOR EACH ROW EXECUTE FUNCTION refuse_heartbeat();`)
	require.NoError(t, err)

	// Another worker takes the job as soon as the lease lets it.
	var taken *db.TasukiJob
	eventually(t, "another worker to take the job", func() bool {
		_, err := q.JobLease(ctx, testdb.Lease(db.JobLeaseParams{LeaseUs: time.Minute.Microseconds(), Rescue: true, RescueMax: 1000}, "default", "task", 0))
		require.NoError(t, err)
		rows, err := q.JobLease(ctx, testdb.Lease(db.JobLeaseParams{LeaseUs: time.Minute.Microseconds()}, "default", "task", 1))
		require.NoError(t, err)
		if len(rows) == 0 {
			return false
		}
		taken = rows[0]
		return true
	})
	assert.True(t, stopped.Load(),
		"another worker took job %d (attempt %d) while the first worker's handler was still running", id, taken.Attempts)
	assert.ErrorIs(t, receive(t, causes, "handler's context canceled"), worker.ErrLeaseLost)
}

// With DisableListen the worker opens no LISTEN connection: it finds jobs
// by polling, and a cancellation reaches the handler at the next heartbeat.
func TestPollOnlyWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, tap := newTappedPool(t)
	client := newClient[task](t, pool)

	started := make(chan int64, 2)
	causes := make(chan error, 1)
	cfg := shortLease()
	cfg.DisableListen = true
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		started <- job.ID
		if job.Payload.Mode != "block" {
			return nil
		}
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return ctx.Err()
	}, cfg)
	stop := running(t, w)

	quick := insert(t, client, task{N: 1}, nil)
	require.Equal(t, quick, receive(t, started, "first job"))
	blocking := insert(t, client, task{Mode: "block"}, nil)
	require.Equal(t, blocking, receive(t, started, "second job"))
	_, err := client.Cancel(ctx, blocking)
	require.NoError(t, err)
	cause := receive(t, causes, "handler's context canceled")
	assert.True(t, errors.Is(cause, worker.ErrLeaseLost) || errors.Is(cause, worker.ErrJobCanceled), "cause: %v", cause)
	stop()

	assert.Equal(t, tasuki.StatusCompleted, jobStatus(t, client, quick))
	assert.Equal(t, tasuki.StatusCanceled, jobStatus(t, client, blocking))
	assert.Zero(t, tap.connections(), "no listener connection was opened")
}

// Leases and heartbeats commit without waiting for the WAL flush; the
// setting is local to their own transaction and never leaks to the next
// statement on the connection.
func TestAsyncCommitStaysInLeaseTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client, err := tasuki.NewClient[task](pool, tasuki.ClientConfig{})
	require.NoError(t, err)
	_, err = client.Insert(ctx, task{N: 1}, nil)
	require.NoError(t, err)

	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	// The test cluster runs with synchronous_commit off; this session not.
	_, err = conn.Exec(ctx, "SET synchronous_commit = on")
	require.NoError(t, err)
	q := db.New(conn)
	rows, err := q.JobLease(ctx, testdb.Lease(db.JobLeaseParams{LeaseUs: time.Minute.Microseconds(), Rescue: true, RescueMax: 1000}, "default", "task", 10))
	require.NoError(t, err)
	require.Len(t, rows, 1)
	var setting string
	require.NoError(t, conn.QueryRow(ctx, "SHOW synchronous_commit").Scan(&setting))
	assert.Equal(t, "on", setting, "after a lease")

	_, err = q.JobHeartbeatMany(ctx, db.JobHeartbeatManyParams{Ids: []int64{rows[0].ID}, Tokens: []pgtype.UUID{rows[0].LeaseToken}, LeaseUs: time.Minute.Microseconds()})
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(ctx, "SHOW synchronous_commit").Scan(&setting))
	assert.Equal(t, "on", setting, "after a heartbeat")

	// Inside the lease's own transaction the setting is off.
	_, err = client.Insert(ctx, task{N: 2}, nil)
	require.NoError(t, err)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	rows, err = q.WithTx(tx).JobLease(ctx, testdb.Lease(db.JobLeaseParams{LeaseUs: time.Minute.Microseconds()}, "default", "task", 10))
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.NoError(t, tx.QueryRow(ctx, "SHOW synchronous_commit").Scan(&setting))
	assert.Equal(t, "off", setting, "in the lease's transaction")
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, conn.QueryRow(ctx, "SHOW synchronous_commit").Scan(&setting))
	assert.Equal(t, "on", setting, "after the lease's transaction")
	conn.Conn().Close(ctx) // the SET must not reach the pool's next user
}

// A job rescued from an expired lease is announced like an insert: an idle
// worker that would otherwise wait for its next poll runs it at once. Here
// the idle worker's poll interval is an hour, so only the notification sent
// by another worker's rescue can make it run the job.
func TestRescuedJobWakesIdleWorkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, tap := newTappedPool(t)
	client := newClient[task](t, pool)

	// Worker a is kept busy by one job, so it rescues on its timer (every
	// half lease) without leasing anything.
	release := make(chan struct{})
	aStarted := make(chan int64, 1)
	a := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		aStarted <- job.ID
		<-release
		return nil
	}, worker.Config{Concurrency: 1, LeaseDuration: 2 * time.Second, PollInterval: time.Hour})
	stopA := running(t, a)
	defer func() { close(release); stopA() }()
	tap.listening(t, pool, 1)
	blocker := insert(t, client, task{N: 1}, nil)
	require.Equal(t, blocker, receive(t, aStarted, "a runs its blocking job"))

	// Worker b is idle and polls once an hour.
	bRan := make(chan int64, 1)
	b := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		bRan <- job.ID
		return nil
	}, worker.Config{PollInterval: time.Hour})
	running(t, b)
	tap.listening(t, pool, 2)

	// A job whose worker died: written by plain SQL (no notification) as
	// running under a lease that has already lapsed. Not inserted pending
	// and then leased: b, which leases at once when it starts and when its
	// listener connects, could take it first.
	var lost int64
	require.NoError(t, pool.QueryRow(ctx,
		`INSERT INTO tasuki_job (queue, kind, payload, status, attempts, attempted_at, lease_token, lease_expires_at)
		 VALUES ('default', 'task', '{"n":2}', 'running', 1, now(), gen_random_uuid(), now() - interval '1 second')
		 RETURNING id`).Scan(&lost))

	assert.Equal(t, lost, receive(t, bRan, "b runs the rescued job"))
	eventually(t, "the rescued job to complete", func() bool { return jobStatus(t, client, lost) == tasuki.StatusCompleted })
	job := getJob(t, client, lost)
	assert.Equal(t, 2, job.Attempt, "the lost lease counts as an attempt")
	require.Len(t, job.Errors, 1)
	assert.Contains(t, job.Errors[0].Error, "lease expired")
}
