package worker_test

// Attacks on work middleware, the error handler, events and WorkJob: each
// test states what the API promises and checks it.

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// pending drains what sub holds now.
func pending(sub *tasuki.Subscription) []tasuki.Event {
	var out []tasuki.Event
	for len(sub.C) > 0 {
		out = append(out, <-sub.C)
	}
	return out
}

// completeInTx is a handler that completes its job with CompleteTx.
func completeInTx(pool *pgxpool.Pool) worker.HandlerFunc[task] {
	return func(ctx context.Context, job *tasuki.Job[task]) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if err := worker.CompleteTx(ctx, tx, job); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
}

// A job completed with CompleteTx is completed and recorded, but no
// EventCompleted is published: the writer's statement is (rightly) refused
// by the token, and publish skips every id JobFinishMany did not return.
// WorkJob even reports EventCompleted in its result while publishing
// nothing.
func TestAttackCompleteTxPublishesCompleted(t *testing.T) {
	pool := testdb.New(t)
	events := tasuki.NewEvents()
	sub := events.Subscribe(100, tasuki.EventCompleted)
	defer sub.Close()
	c := newClient[task](t, pool)

	w := newWorker(t, pool, completeInTx(pool), worker.Config{Events: events})
	id := insert(t, c, task{}, nil)
	res, err := w.WorkJob(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, tasuki.StatusCompleted, res.Job.Status)
	require.Equal(t, tasuki.EventCompleted, res.Event)
	got := pending(sub)
	assert.Len(t, got, 1, "WorkJob: the completion recorded by CompleteTx publishes EventCompleted")

	// The same with a running worker.
	w = newWorker(t, pool, completeInTx(pool), worker.Config{Events: events})
	stop := running(t, w)
	id = insert(t, c, task{}, nil)
	eventually(t, "the job to complete", func() bool { return jobStatus(t, c, id) == tasuki.StatusCompleted })
	stop() // the writer has written, and published, everything
	got = pending(sub)
	assert.Len(t, got, 1, "Run: the completion recorded by CompleteTx publishes EventCompleted")
}

// WorkResult.Event is "empty when the outcome was refused". WorkJob infers
// it from the stored status, so when the lease was lost (the handler ran
// past LeaseDuration, the job was rescued and another worker completed
// it) WorkJob reports EventCompleted for an outcome the database refused,
// and no event was published for it.
func TestAttackWorkJobEventEmptyWhenOutcomeRefused(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	events := tasuki.NewEvents()
	sub := events.Subscribe(100)
	defer sub.Close()
	other := newWorker(t, pool, func(context.Context, *tasuki.Job[task]) error { return nil }, worker.Config{})
	var otherRes *worker.WorkResult
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		// The handler outlives its lease: the rescue (as queries/lease.sql
		// does it) puts the job back, and another process runs it.
		_, err := pool.Exec(ctx, `UPDATE tasuki_job SET status = 'pending', lease_token = NULL, lease_expires_at = NULL,
			errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempts, 'at', now(),
				'error', 'lease expired: the worker stopped renewing its lease (it crashed, hung or lost its database connection)'))
			WHERE id = $1`, job.ID)
		if err != nil {
			return err
		}
		otherRes, err = other.WorkJob(ctx, job.ID)
		return err
	}, worker.Config{Events: events})
	id := insert(t, newClient[task](t, pool), task{}, nil)
	res, err := w.WorkJob(ctx, id)
	require.NoError(t, err)
	require.NotNil(t, otherRes)
	require.Equal(t, tasuki.EventCompleted, otherRes.Event, "the other worker completed it")
	assert.Empty(t, pending(sub), "nothing was recorded for this attempt, nothing published")
	assert.Empty(t, res.Event, "this attempt's outcome was refused: WorkResult.Event must be empty")
}

// The docs: an undecodable payload "fails the job at once unless the
// middleware returns something else". A middleware that cancels it with
// tasuki.Cancel(err), or retries it later with tasuki.RetryAfter(d, err),
// wraps the decode error, and execute tests for the decode error before
// classify: the job fails all the same.
func TestAttackMiddlewareCanCancelOrRetryAnUndecodablePayload(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	decide := func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
		err := next(ctx)
		var de *tasuki.PayloadDecodeError
		if !errors.As(err, &de) {
			return err
		}
		if string(job.Metadata) == `{"then": "retry"}` {
			return tasuki.RetryAfter(time.Hour, err) // maybe a deploy will fix the type
		}
		return tasuki.Cancel(err) // not worth keeping as failed
	}
	w, err := worker.New(pool, worker.Config{Logger: testLogger(t), Middleware: []worker.Middleware{decide}},
		worker.HandleFunc(func(context.Context, *tasuki.Job[task]) error { return nil }))
	require.NoError(t, err)
	ins, err := tasuki.NewInserter(pool, tasuki.ClientConfig{})
	require.NoError(t, err)
	_, err = ins.InsertMany(ctx, []tasuki.InsertManyParams{
		{Kind: "task", Payload: map[string]any{"n": "not a number"}},
		{Kind: "task", Payload: map[string]any{"n": "not a number"}, InsertOpts: &tasuki.InsertOpts{Metadata: map[string]any{"then": "retry"}}},
	})
	require.NoError(t, err)
	var first int64
	require.NoError(t, pool.QueryRow(ctx, "SELECT min(id) FROM tasuki_job").Scan(&first))

	res, err := w.WorkJob(ctx, first)
	require.NoError(t, err)
	assert.Equal(t, tasuki.StatusCanceled, res.Job.Status, "the middleware returned tasuki.Cancel")
	assert.Equal(t, tasuki.EventCanceled, res.Event)
	res, err = w.WorkJob(ctx, first+1)
	require.NoError(t, err)
	assert.Equal(t, tasuki.StatusPending, res.Job.Status, "the middleware returned tasuki.RetryAfter")
	assert.Equal(t, tasuki.EventRetried, res.Event)
}

// The ErrorHandler gets "a context that carries the handler context's
// values", but it is given the context from before the middleware: what
// the middleware added for the handler (a span, a request id) is missing,
// so a Sentry-style reporter cannot link the error to the job's trace.
func TestAttackErrorHandlerSeesWhatMiddlewareGaveTheHandler(t *testing.T) {
	pool := testdb.New(t)
	var inHandler, inErrorHandler any
	span := func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
		return next(context.WithValue(ctx, ctxKey("span"), "span-1"))
	}
	w, err := worker.New(pool, worker.Config{Logger: testLogger(t), Middleware: []worker.Middleware{span},
		ErrorHandler: func(ctx context.Context, job *tasuki.Job[json.RawMessage], err error) {
			inErrorHandler = ctx.Value(ctxKey("span"))
		}},
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[task]) error {
			inHandler = ctx.Value(ctxKey("span"))
			return errors.New("boom")
		}))
	require.NoError(t, err)
	_, err = w.WorkJob(context.Background(), insert(t, newClient[task](t, pool), task{}, nil))
	require.NoError(t, err)
	require.Equal(t, "span-1", inHandler)
	assert.Equal(t, "span-1", inErrorHandler, "the ErrorHandler's context misses the handler context's values")
}

// A timeout is recorded as "tasuki: job timed out after 1ms: context
// deadline exceeded", but the ErrorHandler (documented to be told of "a
// timeout") and the event get the bare context.DeadlineExceeded: neither
// can tell a timeout from a handler's own deadline.
func TestAttackTimeoutIsATimeoutErrorForTheErrorHandlerAndEvents(t *testing.T) {
	pool := testdb.New(t)
	events := tasuki.NewEvents()
	sub := events.Subscribe(10, tasuki.EventRetried)
	defer sub.Close()
	var reported error
	w, err := worker.New(pool, worker.Config{Logger: testLogger(t), Events: events,
		ErrorHandler: func(ctx context.Context, job *tasuki.Job[json.RawMessage], err error) { reported = err }},
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[task]) error {
			<-ctx.Done()
			return ctx.Err()
		}).With(worker.KindConfig{Timeout: time.Millisecond}))
	require.NoError(t, err)
	res, err := w.WorkJob(context.Background(), insert(t, newClient[task](t, pool), task{}, nil))
	require.NoError(t, err)
	require.Equal(t, tasuki.EventRetried, res.Event)
	require.Len(t, res.Job.Errors, 1)
	assert.Contains(t, res.Job.Errors[0].Error, "timed out", "what is recorded says timeout")
	var te *worker.TimeoutError
	assert.ErrorAs(t, reported, &te, "the ErrorHandler is told of a timeout")
	evs := pending(sub)
	require.Len(t, evs, 1)
	assert.ErrorAs(t, evs[0].Err, &te, "the event says timeout")
}

// EventRescued is recognised by the text of the last error: a handler
// whose own error starts with "lease expired: " makes its next attempt
// publish a rescue that never happened.
func TestAttackEventRescuedOnlyForARescue(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	events := tasuki.NewEvents()
	sub := events.Subscribe(10, tasuki.EventRescued)
	defer sub.Close()
	w, err := worker.New(pool, worker.Config{Logger: testLogger(t), Events: events},
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[task]) error {
			if job.Attempt == 1 {
				return errors.New("lease expired: the upstream lock service dropped our lock")
			}
			return nil
		}))
	require.NoError(t, err)
	id := insert(t, newClient[task](t, pool), task{}, nil)
	res, err := w.WorkJob(ctx, id)
	require.NoError(t, err)
	require.Equal(t, tasuki.EventRetried, res.Event)
	_, err = w.WorkJob(ctx, id)
	require.NoError(t, err)
	assert.Empty(t, pending(sub), "the handler failed the attempt itself: nothing was rescued")
}

// A middleware that calls next after it returned (from a goroutine of its
// own) runs the handler after the attempt's outcome was recorded, outside
// the worker's concurrency limits and its shutdown wait. next should
// refuse with an error instead.
func TestAttackNextAfterMiddlewareReturnedDoesNotRunTheHandler(t *testing.T) {
	pool := testdb.New(t)
	release := make(chan struct{})
	late := make(chan error, 1)
	var handlerRuns atomic.Int32
	detach := func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
		go func() {
			<-release
			late <- next(context.WithoutCancel(ctx))
		}()
		return nil
	}
	w, err := worker.New(pool, worker.Config{Logger: testLogger(t), Middleware: []worker.Middleware{detach}},
		worker.HandleFunc(func(context.Context, *tasuki.Job[task]) error { handlerRuns.Add(1); return nil }))
	require.NoError(t, err)
	res, err := w.WorkJob(context.Background(), insert(t, newClient[task](t, pool), task{}, nil))
	require.NoError(t, err)
	require.Equal(t, tasuki.EventCompleted, res.Event)
	close(release)
	lateErr := receive(t, late, "the late next to return")
	assert.Zero(t, handlerRuns.Load(), "the handler ran after its outcome was recorded")
	assert.Error(t, lateErr, "a late next should say it came too late")
}

// Guard (passes): WorkJob on a job another worker holds changes nothing.
func TestAttackWorkJobOnAHeldJob(t *testing.T) {
	pool := testdb.New(t)
	id := insert(t, newClient[task](t, pool), task{}, nil)
	held := leaseDirect(t, pool, "default", 1, time.Hour)
	require.Len(t, held, 1)
	w := newWorker(t, pool, func(context.Context, *tasuki.Job[task]) error { return nil }, worker.Config{})
	_, err := w.WorkJob(context.Background(), id)
	assert.ErrorContains(t, err, "it is running")
	row := rawJob(t, pool, id)
	assert.Equal(t, "running", string(row.Status))
	assert.Equal(t, held[0].LeaseToken, row.LeaseToken, "the other worker still holds it")
	assert.Equal(t, held[0].Attempts, row.Attempts)
}

// Guard (passes): a job canceled while WorkJob runs it stays canceled;
// WorkJob reports no event and none is published.
func TestAttackWorkJobOnAJobCanceledMidRun(t *testing.T) {
	pool := testdb.New(t)
	events := tasuki.NewEvents()
	sub := events.Subscribe(10)
	defer sub.Close()
	c := newClient[task](t, pool)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		_, err := c.Cancel(ctx, job.ID)
		return err
	}, worker.Config{Events: events})
	res, err := w.WorkJob(context.Background(), insert(t, c, task{}, nil))
	require.NoError(t, err)
	assert.Equal(t, tasuki.StatusCanceled, res.Job.Status)
	assert.Empty(t, res.Event)
	assert.Empty(t, pending(sub))
}

// Guard (passes): what WorkJob reports, what is published and what is
// stored agree for every outcome, a middleware that swallows a Cancel or a
// Snooze included (the middleware's outcome wins), and a middleware that
// calls next twice (the handler runs twice, one outcome is recorded).
func TestAttackEventMatchesRecordedOutcome(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	events := tasuki.NewEvents()
	sub := events.Subscribe(100)
	defer sub.Close()
	var runs sync.Map
	swallow := func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
		err := next(ctx)
		var md map[string]string
		_ = json.Unmarshal(job.Metadata, &md)
		switch md["mw"] {
		case "swallow":
			var ce *tasuki.CancelError
			var se *tasuki.SnoozeError
			if errors.As(err, &ce) || errors.As(err, &se) {
				return errors.New("swallowed")
			}
		case "twice":
			return next(ctx)
		}
		return err
	}
	w, err := worker.New(pool, worker.Config{Logger: testLogger(t), Events: events, Middleware: []worker.Middleware{swallow}},
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[task]) error {
			n, _ := runs.LoadOrStore(job.ID, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
			switch job.Payload.Mode {
			case "fail":
				return errors.New("failed")
			case "cancel":
				return tasuki.Cancel(errors.New("no"))
			case "snooze":
				return tasuki.Snooze(time.Hour)
			}
			return nil
		}))
	require.NoError(t, err)
	c := newClient[task](t, pool)
	cases := []struct {
		mode, mw    string
		maxAttempts int
		want        tasuki.EventType
		status      tasuki.Status
	}{
		{"ok", "", 0, tasuki.EventCompleted, tasuki.StatusCompleted},
		{"fail", "", 0, tasuki.EventRetried, tasuki.StatusPending},
		{"fail", "", 1, tasuki.EventFailed, tasuki.StatusFailed},
		{"cancel", "", 0, tasuki.EventCanceled, tasuki.StatusCanceled},
		{"snooze", "", 0, tasuki.EventSnoozed, tasuki.StatusPending},
		{"cancel", "swallow", 0, tasuki.EventRetried, tasuki.StatusPending},
		{"snooze", "swallow", 1, tasuki.EventFailed, tasuki.StatusFailed},
		{"ok", "twice", 0, tasuki.EventCompleted, tasuki.StatusCompleted},
	}
	for _, tc := range cases {
		id := insert(t, c, task{Mode: tc.mode}, &tasuki.InsertOpts{MaxAttempts: tc.maxAttempts, Metadata: map[string]any{"mw": tc.mw}})
		res, err := w.WorkJob(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, tc.want, res.Event, "%s/%s", tc.mode, tc.mw)
		assert.Equal(t, tc.status, res.Job.Status, "%s/%s", tc.mode, tc.mw)
		evs := pending(sub)
		if assert.Len(t, evs, 1, "%s/%s", tc.mode, tc.mw) {
			assert.Equal(t, tc.want, evs[0].Type, "%s/%s", tc.mode, tc.mw)
			assert.Equal(t, id, evs[0].JobID)
			assert.Equal(t, 1, evs[0].Attempt)
		}
	}
}

// Guard (passes, -race): a running worker with middleware and events
// publishes exactly one outcome event per job, each for a recorded
// outcome.
func TestAttackRunningWorkerOneEventPerRecordedOutcome(t *testing.T) {
	pool := testdb.New(t)
	events := tasuki.NewEvents()
	sub := events.Subscribe(10000, tasuki.EventCompleted, tasuki.EventRetried, tasuki.EventFailed)
	defer sub.Close()
	mw := func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
		return next(ctx)
	}
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		if job.Payload.N%3 == 0 {
			return errors.New("fails")
		}
		return nil
	}, worker.Config{Events: events, Middleware: []worker.Middleware{mw}, ErrorHandler: func(context.Context, *tasuki.Job[json.RawMessage], error) {}})
	c := newClient[task](t, pool)
	const n = 300
	payloads := make([]task, n)
	for i := range payloads {
		payloads[i] = task{N: i}
	}
	_, err := c.InsertMany(context.Background(), payloads, &tasuki.InsertOpts{MaxAttempts: 1})
	require.NoError(t, err)
	stop := running(t, w)
	eventually(t, "every job to end", func() bool {
		return countStatus(t, pool, tasuki.StatusCompleted)+countStatus(t, pool, tasuki.StatusFailed) == n
	})
	stop()
	evs := pending(sub)
	require.Len(t, evs, n)
	seen := map[int64]tasuki.EventType{}
	for _, ev := range evs {
		_, dup := seen[ev.JobID]
		assert.False(t, dup, "job %d published twice", ev.JobID)
		seen[ev.JobID] = ev.Type
	}
	assert.Equal(t, uint64(0), sub.Dropped())
	assert.Equal(t, n/3, countStatus(t, pool, tasuki.StatusFailed))
}
