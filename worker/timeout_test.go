package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// A handler that respects its context: the context carries the kind's
// timeout, ends with a *worker.TimeoutError as its cause, and the attempt
// fails with an error that says it timed out and after how long; the job
// is retried by the retry policy.
func TestTimeoutOfAKind(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	type seen struct {
		deadline bool
		cause    error
	}
	got := make(chan seen, 1)
	w, err := worker.New(pool, worker.Config{Queue: "default", RetryPolicy: retryIn(time.Hour), Logger: testLogger(t)},
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[task]) error {
			_, ok := ctx.Deadline()
			<-ctx.Done()
			got <- seen{ok, context.Cause(ctx)}
			return ctx.Err()
		}).With(worker.KindConfig{Timeout: 100 * time.Millisecond}))
	require.NoError(t, err)
	stop := running(t, w)
	id := insert(t, client, task{}, nil)
	s := receive(t, got, "the handler's context ends")
	assert.True(t, s.deadline, "the context has a deadline")
	var te *worker.TimeoutError
	require.ErrorAs(t, s.cause, &te)
	assert.Equal(t, 100*time.Millisecond, te.Timeout)
	eventually(t, "the attempt is recorded", func() bool { return len(getJob(t, client, id).Errors) == 1 })
	stop()
	job := getJob(t, client, id)
	assert.Equal(t, tasuki.StatusPending, job.Status, "retried by the retry policy")
	assert.True(t, strings.HasPrefix(job.LastError(), "tasuki: job timed out after 100ms: context deadline exceeded"), job.LastError())
}

// A job's own timeout replaces its kind's (none here); a handler that
// finishes in time completes.
func TestTimeoutOfAJob(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	deadlines := make(chan time.Duration, 2)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		d, ok := ctx.Deadline()
		if !ok {
			deadlines <- 0
			return nil
		}
		deadlines <- time.Until(d)
		return nil
	}, worker.Config{})
	stop := running(t, w)
	timed := insert(t, client, task{}, &tasuki.InsertOpts{Timeout: time.Hour})
	left := receive(t, deadlines, "the timed job runs")
	assert.Greater(t, left, 59*time.Minute, "the job's hour")
	plain := insert(t, client, task{}, nil)
	assert.Zero(t, receive(t, deadlines, "the plain job runs"), "no timeout for the kind")
	eventually(t, "both complete", func() bool {
		return jobStatus(t, client, timed) == tasuki.StatusCompleted && jobStatus(t, client, plain) == tasuki.StatusCompleted
	})
	stop()
}

// A handler that ignores its context past its timeout and the grace does
// not hold its job: the worker stops renewing the lease, the lease lapses,
// and the job is rescued with the lost attempt recorded.
func TestTimeoutIgnoredReleasesTheJob(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	release := make(chan struct{})
	defer close(release)
	started := make(chan int, 4)
	w, err := worker.New(pool, worker.Config{Queue: "default", LeaseDuration: 2 * time.Second, RetryPolicy: retryIn(time.Hour), Logger: testLogger(t)},
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[task]) error {
			started <- job.Attempt
			if job.Attempt == 1 {
				<-release // hangs, whatever its context says
			}
			return errors.New("late")
		}).With(worker.KindConfig{Timeout: 50 * time.Millisecond}))
	require.NoError(t, err)
	stop := running(t, w)
	id := insert(t, client, task{}, nil)
	assert.Equal(t, 1, receive(t, started, "the first attempt"))
	eventually(t, "the lapsed lease is rescued", func() bool {
		return strings.Contains(errorsText(getJob(t, client, id)), "lease expired")
	})
	release <- struct{}{}
	stop()
}

// Timeouts are checked.
func TestTimeoutOptionsValidated(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	_, err := worker.New(pool, worker.Config{}, worker.HandleFunc(func(context.Context, *tasuki.Job[task]) error { return nil }).
		With(worker.KindConfig{Timeout: -time.Second}))
	var opt *tasuki.InvalidOptionError
	require.ErrorAs(t, err, &opt)
	assert.Contains(t, opt.Option, "KindConfig.Timeout")
	client := newClient[task](t, pool)
	for _, d := range []time.Duration{-time.Millisecond, 1500 * time.Microsecond, time.Microsecond} {
		_, err := client.Insert(context.Background(), task{}, &tasuki.InsertOpts{Timeout: d})
		require.ErrorAs(t, err, &opt, "%s", d)
		assert.Equal(t, "InsertOpts.Timeout", opt.Option)
	}
}
