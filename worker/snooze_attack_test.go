package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// Guards against API trap: tasuki.Cancel(err) documents that "a handler
// returning it cancels its job for good", but the worker checks for a
// SnoozeError before a CancelError (worker.go classify), and errors.As
// looks through the CancelError into what it wraps. So a handler (or a
// middleware) that cancels with a cause that happens to wrap a snooze —
// tasuki.Cancel(fmt.Errorf("giving up: %w", errFromInnerCall)) — has its
// job snoozed instead: it runs again, and nothing of the cancellation is
// recorded. The outermost, explicit Cancel must win (check CancelError
// first, as the worker already does against RetryAfterError).
func TestAttackCancelWrappingASnoozeCancels(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	ran := make(chan struct{}, 10)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		ran <- struct{}{}
		inner := fmt.Errorf("upstream busy: %w", tasuki.Snooze(time.Hour))
		return tasuki.Cancel(fmt.Errorf("giving up: %w", inner))
	}, worker.Config{PollInterval: 20 * time.Millisecond})
	stop := running(t, w)
	id := insert(t, client, task{N: 1}, nil)
	waitFor(t, ran, "the handler runs")
	eventually(t, "the outcome is recorded", func() bool { return jobStatus(t, client, id) != tasuki.StatusRunning })
	stop()

	job := getJob(t, client, id)
	assert.Equal(t, tasuki.StatusCanceled, job.Status,
		"a handler that returned tasuki.Cancel(...) left its job %s (snoozes %d): the wrapped snooze won over the explicit cancel", job.Status, job.Snoozes)
	assert.Contains(t, errorsText(job), "giving up", "the cancellation's cause is recorded")
}

// Guards against lost snooze at shutdown: a handler that returns Snooze(d)
// while the worker shuts down is given back instead (classify checks
// ErrShutdown first): the job is pending again at once, not after d, and
// Snoozes does not count it. The handler's explicit "not before d" (a
// rate limit, an upstream that is down) is dropped, and another worker
// runs the job right away. A returned SnoozeError is the handler's own
// answer and should be written as a snooze even during shutdown (as a nil
// error is written as completed).
func TestAttackSnoozeReturnedDuringShutdownIsKept(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	started := make(chan struct{}, 1)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		started <- struct{}{}
		<-ctx.Done() // the shutdown: the handler answers anyway
		return tasuki.Snooze(time.Hour)
	}, worker.Config{PollInterval: 20 * time.Millisecond, ShutdownTimeout: -1})
	stop := running(t, w)
	before := time.Now()
	id := insert(t, client, task{N: 1}, nil)
	waitFor(t, started, "the handler runs")
	stop()

	job := getJob(t, client, id)
	assert.Equal(t, tasuki.StatusPending, job.Status)
	assert.Equal(t, 1, job.Snoozes, "the snooze is counted")
	assert.True(t, job.ScheduledAt.After(before.Add(30*time.Minute)),
		"the job snoozed for an hour is scheduled at %s, %s after the test began: the snooze was dropped at shutdown",
		job.ScheduledAt, job.ScheduledAt.Sub(before))
}

// HOLDS: a unique job goes through everything a worker does to it — a
// rescue after its lease expired, a failed attempt and its retry, a
// snooze, a give-back at shutdown, completion — without a unique
// violation in any of the worker's statements, and a duplicate inserted
// at every step returns it (it stays in its unique statuses all along).
// Snooze counts are visible through Client.Get; Duplicate is never set on
// a job read by Get.
func TestAttackUniqueJobThroughTheWorkersStatements(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	ctx := context.Background()
	opts := &tasuki.InsertOpts{MaxAttempts: 5, Unique: &tasuki.UniqueOpts{Key: "only-one"}}
	dup := func(what string, want int64) {
		t.Helper()
		job, err := client.Insert(ctx, task{N: 99}, opts)
		if !assert.NoError(t, err, what) {
			return
		}
		assert.True(t, job.Duplicate, "%s: the insert was not a duplicate", what)
		assert.Equal(t, want, job.ID, what)
	}
	id := insert(t, client, task{N: 1}, opts)
	// A worker that died holding it.
	require.Len(t, leaseDirect(t, pool, "default", 1, time.Microsecond), 1)
	dup("running, lease expired", id)

	var mu sync.Mutex
	var runs []string
	gaveBack := make(chan struct{}, 1)
	started := make(chan struct{}, 10)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		mu.Lock()
		n := len(runs)
		runs = append(runs, fmt.Sprintf("attempt %d snoozes %d", job.Attempt, job.Snoozes))
		mu.Unlock()
		dup(fmt.Sprintf("run %d", n), id)
		switch n {
		case 0:
			return errors.New("first run fails")
		case 1:
			return tasuki.Snooze(0)
		}
		started <- struct{}{}
		<-ctx.Done()
		gaveBack <- struct{}{}
		return ctx.Err()
	}, worker.Config{PollInterval: 20 * time.Millisecond, LeaseDuration: time.Second, RetryPolicy: retryIn(0), ShutdownTimeout: -1})
	stop := running(t, w)
	waitFor(t, started, "the third run")
	stop()
	waitFor(t, gaveBack, "the give-back")
	job := getJob(t, client, id)
	assert.Equal(t, tasuki.StatusPending, job.Status, "errors: %s", errorsText(job))
	assert.Equal(t, 1, job.Snoozes)
	assert.False(t, job.Duplicate, "Get never sets Duplicate")
	dup("given back", id)

	w2 := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error { return nil },
		worker.Config{PollInterval: 20 * time.Millisecond})
	stop2 := running(t, w2)
	eventually(t, "the job completes", func() bool { return jobStatus(t, client, id) == tasuki.StatusCompleted })
	stop2()
	dup("completed", id)
	assert.Equal(t, 1, countStatus(t, pool, tasuki.StatusCompleted))
	assert.Equal(t, 0, countStatus(t, pool, tasuki.StatusPending))
	t.Logf("runs: %v", runs)
}

// HOLDS: a snooze at the job's last attempt keeps it alive (the attempt is
// given back), and a huge snooze is capped rather than overflowing
// scheduled_at.
func TestAttackSnoozeAtLastAttemptAndHugeDelay(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	done := make(chan struct{}, 2)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		defer func() { done <- struct{}{} }()
		return tasuki.Snooze(time.Duration(1<<63 - 1))
	}, worker.Config{PollInterval: 20 * time.Millisecond})
	stop := running(t, w)
	id := insert(t, client, task{N: 1}, &tasuki.InsertOpts{MaxAttempts: 1})
	waitFor(t, done, "the handler runs")
	eventually(t, "the snooze is written", func() bool { return getJob(t, client, id).Snoozes == 1 })
	stop()
	job := getJob(t, client, id)
	assert.Equal(t, tasuki.StatusPending, job.Status)
	assert.Equal(t, 0, job.Attempt)
	assert.Empty(t, job.Errors)
	assert.True(t, job.ScheduledAt.After(time.Now().AddDate(90, 0, 0)), "scheduled at %s", job.ScheduledAt)
}
