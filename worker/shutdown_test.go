package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// assertGivenBack checks that a job interrupted by a shutdown is pending
// again, its attempt given back and nothing recorded against it.
func assertGivenBack(t *testing.T, pool *pgxpool.Pool, id int64) {
	t.Helper()
	raw := rawJob(t, pool, id)
	assert.Equal(t, db.TasukiJobStatusPending, raw.Status, "job %d", id)
	assert.EqualValues(t, 0, raw.Attempts, "job %d: the interrupted attempt is given back", id)
	assert.JSONEq(t, "[]", string(raw.Errors), "job %d: an interruption is not an error", id)
	assert.False(t, raw.LeaseToken.Valid, "job %d", id)
	assert.Nil(t, raw.LeaseExpiresAt, "job %d", id)
	assert.Nil(t, raw.FinishedAt, "job %d", id)
}

// runAgain runs the given jobs with a fresh worker and checks each completes
// at attempt 1: a given-back attempt does not count.
func runAgain(t *testing.T, pool *pgxpool.Pool, client *tasuki.Client[task], ids []int64) {
	t.Helper()
	attempts := make(chan int, len(ids))
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		attempts <- job.Attempt
		return nil
	}, worker.Config{})
	stop := running(t, w)
	for range ids {
		assert.Equal(t, 1, receive(t, attempts, "job run again"))
	}
	eventually(t, "jobs completed", func() bool { return countStatus(t, pool, tasuki.StatusCompleted) == len(ids) })
	stop()
}

// Handlers still running when the shutdown timeout passes are canceled,
// and their jobs go back to pending with the attempt given back.
func TestShutdownGivesBackInterruptedJobs(t *testing.T) {
	t.Parallel()
	const n = 5
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	started := make(chan int64, n)
	causes := make(chan error, n)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		started <- job.ID
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return ctx.Err()
	}, worker.Config{Concurrency: n, ShutdownTimeout: 500 * time.Millisecond})
	stop := running(t, w)

	var ids []int64
	for i := range n {
		ids = append(ids, insert(t, client, task{N: i}, nil))
	}
	for range n {
		receive(t, started, "handlers started")
	}
	stop() // returns once Run has returned

	for range n {
		assert.ErrorIs(t, receive(t, causes, "handler canceled"), worker.ErrShutdown)
	}
	for _, id := range ids {
		assertGivenBack(t, pool, id)
	}
	runAgain(t, pool, client, ids)
}

// Handlers that finish within the shutdown timeout complete their jobs and
// are not interrupted.
func TestShutdownLetsHandlersFinish(t *testing.T) {
	t.Parallel()
	const n = 5
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	logs := newLogWatch()
	stopping := logs.on("worker stopping")

	started := make(chan int64, n)
	release := make(chan struct{})
	var interrupted atomic.Int32
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		started <- job.ID
		<-release
		if ctx.Err() != nil {
			interrupted.Add(1)
		}
		return nil
	}, worker.Config{Concurrency: n, ShutdownTimeout: time.Minute, Logger: logs.logger()})
	stop := running(t, w)

	var ids []int64
	for i := range n {
		ids = append(ids, insert(t, client, task{N: i}, nil))
	}
	for range n {
		receive(t, started, "handlers started")
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		stop()
	}()
	waitFor(t, stopping, "the worker to start shutting down")
	select {
	case <-stopped:
		t.Fatal("Run returned while handlers were still running")
	default:
	}
	close(release)
	waitFor(t, stopped, "Run to return")

	assert.Zero(t, interrupted.Load(), "no handler saw its context canceled")
	for _, id := range ids {
		job := getJob(t, client, id)
		assert.Equal(t, tasuki.StatusCompleted, job.Status, "job %d", id)
		assert.Equal(t, 1, job.Attempt)
		assert.Empty(t, job.Errors)
	}
}

// A handler that ignores its canceled context does not hold up the
// shutdown for ever: its job is given back, and what it returns later is
// dropped.
func TestShutdownAbandonsHandlersThatIgnoreTheirContext(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	started := make(chan int64, 1)
	release := make(chan struct{})
	returned := make(chan struct{})
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		defer close(returned)
		started <- job.ID
		<-release // ignores ctx
		return nil
	}, worker.Config{ShutdownTimeout: -1}) // cancel handlers at once
	stop := running(t, w)

	id := insert(t, client, task{N: 1}, nil)
	receive(t, started, "handler started")
	stop() // waits a few seconds for the handler, then gives up on it
	assertGivenBack(t, pool, id)

	close(release)
	waitFor(t, returned, "the handler to return")
	time.Sleep(100 * time.Millisecond) // let a late outcome, if any, be written
	assertGivenBack(t, pool, id)
	runAgain(t, pool, client, []int64{id})
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), testdb.URL()) // New does not connect
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	handler := worker.HandlerFunc[task](func(context.Context, *tasuki.Job[task]) error { return nil })

	for _, tc := range []struct {
		field string
		cfg   worker.Config
	}{
		{"Config.Queue", worker.Config{Queue: strings.Repeat("q", tasuki.MaxQueueLength+1)}},
		{"Config.Concurrency", worker.Config{Concurrency: -1}},
		{"Config.Concurrency", worker.Config{Concurrency: 100_001}},
		{"Config.LeaseDuration", worker.Config{LeaseDuration: 999 * time.Millisecond}},
		{"Config.LeaseDuration", worker.Config{LeaseDuration: -time.Second}},
		{"Config.HeartbeatInterval", worker.Config{HeartbeatInterval: -time.Second}},
		{"Config.HeartbeatInterval", worker.Config{LeaseDuration: 2 * time.Second, HeartbeatInterval: 2 * time.Second}},
		{"Config.HeartbeatInterval", worker.Config{HeartbeatInterval: worker.DefaultLeaseDuration + time.Second}},
		{"Config.PollInterval", worker.Config{PollInterval: 9 * time.Millisecond}},
		{"Config.PollInterval", worker.Config{PollInterval: -time.Second}},
		{"Config.ShutdownTimeout", worker.Config{ShutdownTimeout: -2}},
		{"Config.ShutdownTimeout", worker.Config{ShutdownTimeout: -time.Second}},
		{"Config.ListenURL", worker.Config{ListenURL: "postgres://u:secretpw@localhost:notaport/db"}},
		{"Config.ListenURL", worker.Config{ListenURL: "host=x password=secretpw port=abc"}},
		{"Config.ListenURL", worker.Config{ListenURL: "postgres://u:secretpw@localhost/db", DisableListen: true}},
	} {
		w, err := worker.New(pool, tc.cfg, worker.Handle[task](handler))
		var invalid *tasuki.InvalidOptionError
		if assert.ErrorAs(t, err, &invalid, "%s: %+v", tc.field, tc.cfg) {
			assert.Equal(t, tc.field, invalid.Option)
			assert.Contains(t, err.Error(), tc.field)
			assert.NotContains(t, err.Error(), "secretpw", "a connection string's password is never shown")
			assert.NotContains(t, fmt.Sprint(invalid.Value), "secretpw")
		}
		assert.Nil(t, w)
	}

	_, err = worker.New(nil, worker.Config{}, worker.Handle[task](handler))
	var invalid *tasuki.InvalidOptionError
	require.ErrorAs(t, err, &invalid)
	assert.Equal(t, "pool", invalid.Option)

	_, err = worker.New(pool, worker.Config{}, worker.Handle[task](nil))
	require.ErrorAs(t, err, &invalid)
	assert.Equal(t, "handlers[0]", invalid.Option)

	// The zero Config is valid and filled with the defaults.
	w, err := worker.New(pool, worker.Config{}, worker.Handle[task](handler))
	require.NoError(t, err)
	cfg := w.Config()
	assert.Equal(t, tasuki.DefaultQueue, cfg.Queue)
	assert.Equal(t, worker.DefaultConcurrency, cfg.Concurrency)
	assert.Equal(t, worker.DefaultLeaseDuration, cfg.LeaseDuration)
	assert.Equal(t, worker.DefaultLeaseDuration/3, cfg.HeartbeatInterval)
	assert.Equal(t, worker.DefaultPollInterval, cfg.PollInterval)
	assert.Equal(t, worker.DefaultShutdownTimeout, cfg.ShutdownTimeout)
	assert.NotNil(t, cfg.RetryPolicy)
	assert.NotNil(t, cfg.Logger)

	// Boundary values are accepted.
	_, err = worker.New(pool, worker.Config{
		Queue:             strings.Repeat("q", tasuki.MaxQueueLength),
		Concurrency:       100_000,
		LeaseDuration:     time.Second,
		HeartbeatInterval: time.Second / 2,
		PollInterval:      10 * time.Millisecond,
		ShutdownTimeout:   -1,
	}, worker.Handle[task](handler))
	assert.NoError(t, err)
}

// Run may be called once per Worker.
func TestRunTwice(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	handled := make(chan int64, 1)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		handled <- job.ID
		return nil
	}, worker.Config{})
	stop := running(t, w)
	id := insert(t, client, task{N: 1}, nil)
	require.Equal(t, id, receive(t, handled, "job handled"), "the first Run is working")

	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	assert.Error(t, w.Run(ctx), "Run while running")
	stop()
	assert.Error(t, w.Run(ctx), "Run after Run returned")
}

// A worker on a database without tasuki's schema says so instead of
// retrying for ever.
func TestRunWithoutSchema(t *testing.T) {
	t.Parallel()
	pool := testdb.NewEmpty(t)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error { return nil }, worker.Config{})

	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	err := w.Run(ctx)
	require.Error(t, err, "Run returned only when its context ended")
	assert.ErrorIs(t, err, tasuki.ErrSchemaMissing)
	assert.NoError(t, ctx.Err(), "Run returned at once")
}

// A worker whose context has already ended returns without working.
func TestRunWithEndedContext(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	id := insert(t, client, task{N: 1}, nil)

	var calls atomic.Int32
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		calls.Add(1)
		return nil
	}, worker.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := w.Run(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	assert.Zero(t, calls.Load())
	assert.Equal(t, tasuki.StatusPending, jobStatus(t, client, id))
}
