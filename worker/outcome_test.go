package worker_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// Each thing a handler can return leads to its own outcome.
func TestOutcomes(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	var calls atomic.Int32
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		calls.Add(1)
		switch job.Payload.Mode {
		case "ok":
			return nil
		case "error":
			return errors.New("boom")
		case "cancel":
			return tasuki.Cancel(errors.New("no longer wanted"))
		case "retry-after":
			return tasuki.RetryAfter(90*time.Minute, errors.New("rate limited"))
		}
		return errors.New("unexpected mode " + job.Payload.Mode)
	}, worker.Config{RetryPolicy: retryIn(time.Hour)})
	stop := running(t, w)

	ok := insert(t, client, task{Mode: "ok"}, nil)
	failing := insert(t, client, task{Mode: "error"}, nil)
	canceled := insert(t, client, task{Mode: "cancel"}, nil)
	retryAfter := insert(t, client, task{Mode: "retry-after"}, nil)

	eventually(t, "four handler calls", func() bool { return calls.Load() == 4 })
	stop() // Run returns once every outcome is recorded
	assert.EqualValues(t, 4, calls.Load(), "each job runs once: none is due again within the test")

	t.Run("nil completes", func(t *testing.T) {
		job := getJob(t, client, ok)
		assert.Equal(t, tasuki.StatusCompleted, job.Status)
		assert.Equal(t, 1, job.Attempt)
		assert.NotNil(t, job.FinishedAt)
		assert.Empty(t, job.Errors)
	})

	t.Run("error retries after the policy's delay", func(t *testing.T) {
		job := getJob(t, client, failing)
		assert.Equal(t, tasuki.StatusPending, job.Status)
		assert.Equal(t, 1, job.Attempt)
		assert.Nil(t, job.FinishedAt)
		require.Len(t, job.Errors, 1)
		assert.Equal(t, 1, job.Errors[0].Attempt)
		assert.Equal(t, "boom", job.Errors[0].Error)
		assert.Equal(t, "boom", job.LastError())
		assert.Equal(t, time.Hour, job.ScheduledAt.Sub(job.Errors[0].At))
	})

	t.Run("Cancel cancels at once", func(t *testing.T) {
		job := getJob(t, client, canceled)
		assert.Equal(t, tasuki.StatusCanceled, job.Status)
		assert.Equal(t, 1, job.Attempt)
		assert.NotNil(t, job.FinishedAt)
		require.Len(t, job.Errors, 1)
		assert.Equal(t, 1, job.Errors[0].Attempt)
		assert.Contains(t, job.Errors[0].Error, "no longer wanted")
	})

	t.Run("RetryAfter retries after its delay", func(t *testing.T) {
		job := getJob(t, client, retryAfter)
		assert.Equal(t, tasuki.StatusPending, job.Status)
		assert.Equal(t, 1, job.Attempt)
		assert.Nil(t, job.FinishedAt)
		require.Len(t, job.Errors, 1)
		assert.Equal(t, 1, job.Errors[0].Attempt)
		assert.Contains(t, job.Errors[0].Error, "rate limited")
		assert.Equal(t, 90*time.Minute, job.ScheduledAt.Sub(job.Errors[0].At))
	})

	raw := rawJob(t, pool, failing)
	assert.False(t, raw.LeaseToken.Valid, "a job waiting for its retry holds no lease")
	assert.Nil(t, raw.LeaseExpiresAt)
}

// The retry delay comes from Config.RetryPolicy, given the attempt that
// failed, and a job waiting for its retry is not leased before its time.
func TestRetryScheduleFollowsPolicy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	attempts := make(chan int, 10)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		attempts <- job.Attempt
		return errors.New("still broken")
	}, worker.Config{
		PollInterval: 20 * time.Millisecond,
		RetryPolicy:  func(attempt int) time.Duration { return time.Duration(attempt) * 10 * time.Minute },
	})
	running(t, w)

	id := insert(t, client, task{N: 1}, nil)
	assert.Equal(t, 1, receive(t, attempts, "first attempt"))
	var job *tasuki.Job[task]
	eventually(t, "first error recorded", func() bool {
		job = getJob(t, client, id)
		return len(job.Errors) == 1 && job.Status == tasuki.StatusPending
	})
	errAt := job.Errors[0].At
	assert.Equal(t, 10*time.Minute, job.ScheduledAt.Sub(errAt), "attempt 1 waits 1×10 min")

	// Move the clock: the lease query with its now override does not see the
	// job a second before its time, and takes it a second after. Both run in
	// a transaction that is rolled back, so the worker's view is unchanged.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	q := db.New(tx)
	before := job.ScheduledAt.Add(-time.Second)
	rows, err := q.JobLease(ctx, testdb.Lease(db.JobLeaseParams{LeaseUs: time.Minute.Microseconds(), Now: &before}, "default", "task", 10))
	require.NoError(t, err)
	assert.Empty(t, rows, "not leased before its scheduled time")
	after := job.ScheduledAt.Add(time.Second)
	rows, err = q.JobLease(ctx, testdb.Lease(db.JobLeaseParams{LeaseUs: time.Minute.Microseconds(), Now: &after}, "default", "task", 10))
	require.NoError(t, err)
	require.Len(t, rows, 1, "leased once its scheduled time passed")
	assert.Equal(t, id, rows[0].ID)
	assert.EqualValues(t, 2, rows[0].Attempts)
	require.NoError(t, tx.Rollback(ctx))

	select {
	case a := <-attempts:
		t.Fatalf("attempt %d ran before its scheduled time", a)
	default:
	}

	// Bring the retry forward: the worker runs attempt 2, and its delay is
	// the policy's for attempt 2.
	_, err = pool.Exec(ctx, "UPDATE tasuki_job SET scheduled_at = now() WHERE id = $1", id)
	require.NoError(t, err)
	assert.Equal(t, 2, receive(t, attempts, "second attempt"))
	eventually(t, "second error recorded", func() bool {
		job = getJob(t, client, id)
		return len(job.Errors) == 2 && job.Status == tasuki.StatusPending
	})
	assert.Equal(t, 2, job.Errors[1].Attempt)
	assert.Equal(t, 20*time.Minute, job.ScheduledAt.Sub(job.Errors[1].At), "attempt 2 waits 2×10 min")
}

// A job whose handler always fails ends failed after its last attempt.
func TestOutOfAttemptsFails(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	var calls atomic.Int32
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		calls.Add(1)
		return errors.New("always fails")
	}, worker.Config{PollInterval: 20 * time.Millisecond, RetryPolicy: retryIn(0)})
	stop := running(t, w)

	id := insert(t, client, task{N: 1}, &tasuki.InsertOpts{MaxAttempts: 3})
	eventually(t, "job failed", func() bool { return jobStatus(t, client, id) == tasuki.StatusFailed })
	stop()

	job := getJob(t, client, id)
	assert.Equal(t, tasuki.StatusFailed, job.Status)
	assert.Equal(t, 3, job.Attempt)
	assert.NotNil(t, job.FinishedAt)
	require.Len(t, job.Errors, 3)
	for i, e := range job.Errors {
		assert.Equal(t, i+1, e.Attempt)
		assert.Equal(t, "always fails", e.Error)
	}
	assert.EqualValues(t, 3, calls.Load(), "no attempt after the last one")
}

// A panic is recovered and recorded as the attempt's error, with its stack;
// the job is retried and the worker goes on with other jobs.
func TestPanicIsRecordedAndRetried(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	var mu sync.Mutex
	handled := map[int64]int{}
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		mu.Lock()
		handled[job.ID]++
		mu.Unlock()
		if job.Payload.Mode == "panic" && job.Attempt == 1 {
			panic("kaboom")
		}
		return nil
	}, worker.Config{Concurrency: 2, PollInterval: 20 * time.Millisecond, RetryPolicy: retryIn(0)})
	stop := running(t, w)

	panicky := insert(t, client, task{Mode: "panic"}, nil)
	var others []int64
	for i := range 20 {
		others = append(others, insert(t, client, task{N: i}, nil))
	}
	eventually(t, "all jobs completed", func() bool { return countStatus(t, pool, tasuki.StatusCompleted) == 21 })
	stop()

	job := getJob(t, client, panicky)
	assert.Equal(t, tasuki.StatusCompleted, job.Status)
	assert.Equal(t, 2, job.Attempt, "retried after the panic")
	require.Len(t, job.Errors, 1)
	e := job.Errors[0]
	assert.Equal(t, 1, e.Attempt)
	assert.Contains(t, e.Error, "panic")
	assert.Contains(t, e.Error, "kaboom")
	assert.Contains(t, e.Error, "goroutine", "the stack is recorded")
	assert.Contains(t, e.Error, "outcome_test.go", "the stack reaches the handler")

	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 2, handled[panicky])
	for _, id := range others {
		assert.Equal(t, 1, handled[id], "job %d", id)
	}
}

// A payload that does not decode into the worker's type fails the job at
// once: retrying cannot help.
func TestUndecodablePayloadFailsAtOnce(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	strings_ := newClient[string](t, pool)

	var calls atomic.Int32
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		calls.Add(1)
		return nil
	}, worker.Config{PollInterval: 20 * time.Millisecond, RetryPolicy: retryIn(0)})
	stop := running(t, w)

	id := insert(t, strings_, "not an object", nil)
	eventually(t, "job failed", func() bool { return jobStatus(t, strings_, id) == tasuki.StatusFailed })
	stop()

	job := getJob(t, strings_, id)
	assert.Equal(t, tasuki.StatusFailed, job.Status)
	assert.Equal(t, 1, job.Attempt, "never retried")
	assert.Equal(t, tasuki.DefaultMaxAttempts, job.MaxAttempts, "failed although attempts were left")
	assert.NotNil(t, job.FinishedAt)
	require.Len(t, job.Errors, 1)
	assert.Equal(t, 1, job.Errors[0].Attempt)
	assert.Contains(t, job.Errors[0].Error, "worker_test.task", "the error names the Go type")
	assert.Zero(t, calls.Load(), "the handler never sees the job")
}

// Canceling a running job cancels its handler's context; the job stays
// canceled whatever the handler returns.
func TestCancelRunningJob(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		result func(ctx context.Context) error
	}{
		{"handler returns ctx.Err()", func(ctx context.Context) error { return ctx.Err() }},
		{"handler returns nil", func(context.Context) error { return nil }},
		{"handler returns an error", func(context.Context) error { return errors.New("interrupted") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool, tap := newTappedPool(t)
			client := newClient[task](t, pool)

			started := make(chan int64, 1)
			causes := make(chan error, 1)
			w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
				started <- job.ID
				<-ctx.Done()
				causes <- context.Cause(ctx)
				return tc.result(ctx)
			}, worker.Config{}) // default lease: only the NOTIFY can stop the handler soon
			stop := running(t, w)
			// A cancellation is announced by a notification: let the
			// listener connect first (see TestCancelWhileListenerIsAway).
			tap.listening(t, pool, 1)

			id := insert(t, client, task{N: 1}, nil)
			assert.Equal(t, id, receive(t, started, "handler started"))

			job, err := client.Cancel(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, tasuki.StatusCanceled, job.Status)
			assert.NotNil(t, job.FinishedAt)

			cause := receive(t, causes, "handler's context canceled")
			assert.ErrorIs(t, cause, worker.ErrJobCanceled)

			stop() // every outcome the worker had is recorded by now
			job = getJob(t, client, id)
			assert.Equal(t, tasuki.StatusCanceled, job.Status)
			assert.Equal(t, 1, job.Attempt)
			require.Len(t, job.Errors, 1, "only the cancellation is recorded")
			assert.Contains(t, job.Errors[0].Error, "canceled")
			assert.Equal(t, 1, job.Errors[0].Attempt)
			raw := rawJob(t, pool, id)
			assert.False(t, raw.LeaseToken.Valid)
		})
	}
}

// A cancellation notification names the lease it ended. One that arrives
// for an older lease of a job this worker now holds again (the job was
// canceled, retried and leased anew) must leave the new lease's handler
// alone; one naming the current lease stops it.
func TestCancelNotificationForAnotherLeaseIsIgnored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, tap := newTappedPool(t)
	client := newClient[task](t, pool)

	started := make(chan int64, 2)
	var mu sync.Mutex
	causes := map[int64]error{}
	stopped := make(chan int64, 2)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		started <- job.ID
		<-ctx.Done()
		mu.Lock()
		causes[job.ID] = context.Cause(ctx)
		mu.Unlock()
		stopped <- job.ID
		return ctx.Err()
	}, worker.Config{}) // default lease and heartbeat: only notifications act here
	stop := running(t, w)
	tap.listening(t, pool, 1)

	x := insert(t, client, task{N: 1}, nil)
	y := insert(t, client, task{N: 2}, nil)
	assert.ElementsMatch(t, []int64{x, y}, []int64{receive(t, started, "first handler"), receive(t, started, "second handler")})

	notifyCancel := func(id int64, token string) {
		t.Helper()
		_, err := pool.Exec(ctx, `SELECT pg_notify('tasuki_jobs', json_build_object(
			'k', 'cancel', 's', current_schema(), 'q', 'default', 'id', $1::bigint, 't', $2::uuid)::text)`, id, token)
		require.NoError(t, err)
	}
	// A notification for x under a lease x does not have...
	notifyCancel(x, "00000000-0000-4000-8000-000000000001")
	// ...then a real cancellation of y. Notifications arrive in commit
	// order, so once y's handler stops the listener has read x's too.
	_, err := client.Cancel(ctx, y)
	require.NoError(t, err)
	assert.Equal(t, y, receive(t, stopped, "y's handler stopped"))
	mu.Lock()
	assert.ErrorIs(t, causes[y], worker.ErrJobCanceled)
	_, xStopped := causes[x]
	mu.Unlock()
	assert.False(t, xStopped, "a notification for another lease stopped x's handler")
	assert.Equal(t, tasuki.StatusRunning, jobStatus(t, client, x))

	// The same notification naming x's lease does stop it.
	notifyCancel(x, rawJob(t, pool, x).LeaseToken.String())
	assert.Equal(t, x, receive(t, stopped, "x's handler stopped"))
	mu.Lock()
	assert.ErrorIs(t, causes[x], worker.ErrJobCanceled)
	mu.Unlock()
	stop()
}

// A job canceled while the worker's listener is disconnected (the worker is
// starting, or its connection dropped) misses the notification. Once the
// listener is back, the handler must still learn that its job was canceled,
// as for inserts, which the listener makes up for by looking for jobs after
// every (re)connection.
func TestCancelWhileListenerIsAway(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, tap := newTappedPool(t)
	client := newClient[task](t, pool)

	started := make(chan int64, 1)
	causes := make(chan error, 1)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		started <- job.ID
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return ctx.Err()
	}, worker.Config{PollInterval: 20 * time.Millisecond, LeaseDuration: time.Minute, HeartbeatInterval: 30 * time.Second})
	stop := running(t, w)
	first := tap.listening(t, pool, 1)

	id := insert(t, client, task{N: 1}, nil)
	require.Equal(t, id, receive(t, started, "handler started"))

	tap.hold()
	terminate(t, pool, first)
	_, err := client.Cancel(ctx, id) // its notification reaches no one
	require.NoError(t, err)
	tap.release()
	tap.listening(t, pool, 2)

	cause := receive(t, causes, "handler's context canceled")
	assert.ErrorIs(t, cause, worker.ErrJobCanceled,
		"a cancellation missed while the listener was away reaches the handler only at the next heartbeat, as ErrLeaseLost")
	stop()
	assert.Equal(t, tasuki.StatusCanceled, jobStatus(t, client, id))
}

// Canceling a finished job changes nothing; an unknown id is not found.
func TestCancelFinishedOrUnknownJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error { return nil }, worker.Config{})
	stop := running(t, w)
	id := insert(t, client, task{N: 1}, nil)
	eventually(t, "job completed", func() bool { return jobStatus(t, client, id) == tasuki.StatusCompleted })
	stop()

	before := rawJob(t, pool, id)
	_, err := client.Cancel(ctx, id)
	var finished *tasuki.JobFinishedError
	require.ErrorAs(t, err, &finished)
	assert.Equal(t, id, finished.JobID)
	assert.Equal(t, tasuki.StatusCompleted, finished.Status)
	assert.Equal(t, before, rawJob(t, pool, id), "a finished job is left as it was")

	_, err = client.Cancel(ctx, id+1000)
	assert.ErrorIs(t, err, tasuki.ErrJobNotFound)
}

// A pending job canceled before any worker took it is never run.
func TestCancelPendingJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	id := insert(t, client, task{N: 1}, nil)
	job, err := client.Cancel(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, tasuki.StatusCanceled, job.Status)

	var calls atomic.Int32
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		calls.Add(1)
		return nil
	}, worker.Config{})
	stop := running(t, w)
	done := insert(t, client, task{N: 2}, nil)
	eventually(t, "later job completed", func() bool { return jobStatus(t, client, done) == tasuki.StatusCompleted })
	stop()
	assert.EqualValues(t, 1, calls.Load(), "the canceled job did not run")
	assert.Equal(t, tasuki.StatusCanceled, jobStatus(t, client, id))
}

// An error text PostgreSQL cannot store as it is (a NUL, invalid UTF-8) or
// a huge one is recorded cleaned up and shortened, and does not stop the
// outcomes written with it.
func TestUnstorableErrorTextIsCleanedUp(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	var calls atomic.Int32
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		calls.Add(1)
		switch job.Payload.Mode {
		case "nul":
			return errors.New("before\x00after \xff\xfe end")
		case "huge":
			return errors.New(strings.Repeat("é", 100_000))
		}
		return nil
	}, worker.Config{RetryPolicy: retryIn(time.Hour)})
	stop := running(t, w)

	nul := insert(t, client, task{Mode: "nul"}, nil)
	huge := insert(t, client, task{Mode: "huge"}, nil)
	ok := insert(t, client, task{N: 1}, nil)
	eventually(t, "three handler calls", func() bool { return calls.Load() == 3 })
	stop()

	job := getJob(t, client, nul)
	assert.Equal(t, tasuki.StatusPending, job.Status)
	require.Len(t, job.Errors, 1)
	assert.True(t, strings.HasPrefix(job.Errors[0].Error, "beforeafter "), job.Errors[0].Error)
	assert.True(t, utf8.ValidString(job.Errors[0].Error))

	job = getJob(t, client, huge)
	assert.Equal(t, tasuki.StatusPending, job.Status)
	require.Len(t, job.Errors, 1)
	assert.Less(t, len(job.Errors[0].Error), 40<<10, "a huge error is shortened")
	assert.True(t, utf8.ValidString(job.Errors[0].Error))

	assert.Equal(t, tasuki.StatusCompleted, jobStatus(t, client, ok))
}

// A handler that ends its goroutine with runtime.Goexit (as t.FailNow,
// require.* or log-and-Goexit helpers do) neither returns nor panics. Its
// attempt must still end, like a panic's: once Run has returned, no job may
// be left running under a lease that nobody will ever record an outcome for.
func TestHandlerGoexitEndsTheAttempt(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	exited := make(chan struct{})
	var calls atomic.Int32
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		if calls.Add(1) == 1 {
			defer close(exited) // deferred calls run on Goexit
			runtime.Goexit()
		}
		return nil
	}, worker.Config{Concurrency: 1, RetryPolicy: retryIn(time.Hour)})
	stop := running(t, w)

	id := insert(t, client, task{N: 1}, nil)
	waitFor(t, exited, "the handler's Goexit")
	stop() // every outcome is recorded once Run returns

	job := getJob(t, client, id)
	assert.NotEqual(t, tasuki.StatusRunning, job.Status,
		"the attempt that called Goexit never ended: the job stays running (its lease renewed while the worker lives), and the worker lost the slot")
	if assert.Len(t, job.Errors, 1, "the ended attempt is recorded as an error") {
		assert.Equal(t, 1, job.Errors[0].Attempt)
	}
	assert.EqualValues(t, 1, calls.Load())
}
