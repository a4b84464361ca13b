package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

type ctxKey string

// trail records, in order, what middleware and handlers saw.
type trail struct {
	mu    sync.Mutex
	steps []string
}

func (tr *trail) add(s string) {
	tr.mu.Lock()
	tr.steps = append(tr.steps, s)
	tr.mu.Unlock()
}

func (tr *trail) get() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.steps...)
}

func named(tr *trail, name string) worker.Middleware {
	return func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
		tr.add(name + " in")
		err := next(context.WithValue(ctx, ctxKey(name), true))
		tr.add(name + " out")
		return err
	}
}

type other struct{}

func (other) Kind() string { return "other" }

func TestMiddlewareOrderProcessThenKindFirstOutermost(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	tr := &trail{}
	handler := func(ctx context.Context, job *tasuki.Job[task]) error {
		for _, n := range []string{"p1", "p2", "k1", "k2"} {
			if ctx.Value(ctxKey(n)) == nil {
				tr.add("handler misses " + n)
			}
		}
		tr.add("handler")
		return nil
	}
	w, err := worker.New(pool, worker.Config{Logger: testLogger(t), Middleware: []worker.Middleware{named(tr, "p1"), named(tr, "p2")}},
		worker.HandleFunc(handler).With(worker.KindConfig{Middleware: []worker.Middleware{named(tr, "k1"), named(tr, "k2")}}),
		worker.HandleFunc(func(context.Context, *tasuki.Job[other]) error { tr.add("other"); return nil }))
	require.NoError(t, err)
	id := insert(t, newClient[task](t, pool), task{N: 1}, nil)
	res, err := w.WorkJob(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, tasuki.EventCompleted, res.Event)
	assert.Equal(t, tasuki.StatusCompleted, res.Job.Status)
	assert.Equal(t, []string{"p1 in", "p2 in", "k1 in", "k2 in", "handler", "k2 out", "k1 out", "p2 out", "p1 out"}, tr.get())

	// The kind's middleware is its own: another kind sees only the
	// process's.
	tr.steps = nil
	oid := insert(t, newClient[other](t, pool), other{}, nil)
	_, err = w.WorkJob(ctx, oid)
	require.NoError(t, err)
	assert.Equal(t, []string{"p1 in", "p2 in", "other", "p2 out", "p1 out"}, tr.get())
}

func TestMiddlewareSeesOutcomeAndCanReplaceIt(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	boom := errors.New("boom")
	var seen []error
	var mu sync.Mutex
	observe := func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
		err := next(ctx)
		mu.Lock()
		seen = append(seen, err)
		mu.Unlock()
		if job.Attempt == 1 && errors.Is(err, boom) && string(job.Metadata) != "{}" {
			return nil // the middleware decides: completed
		}
		return err
	}
	w, err := worker.New(pool, worker.Config{Logger: testLogger(t), Middleware: []worker.Middleware{observe}},
		worker.HandleFunc(func(context.Context, *tasuki.Job[task]) error { return boom }))
	require.NoError(t, err)
	c := newClient[task](t, pool)

	res, err := w.WorkJob(ctx, insert(t, c, task{}, nil))
	require.NoError(t, err)
	assert.ErrorIs(t, res.Err, boom)
	assert.Equal(t, tasuki.EventRetried, res.Event)
	assert.Equal(t, tasuki.StatusPending, res.Job.Status)
	require.Len(t, res.Job.Errors, 1)
	assert.Contains(t, res.Job.Errors[0].Error, "boom")

	res, err = w.WorkJob(ctx, insert(t, c, task{}, &tasuki.InsertOpts{Metadata: map[string]any{"swallow": true}}))
	require.NoError(t, err)
	assert.NoError(t, res.Err)
	assert.Equal(t, tasuki.EventCompleted, res.Event)
	assert.Equal(t, tasuki.StatusCompleted, res.Job.Status)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, 2)
	assert.ErrorIs(t, seen[1], boom, "the middleware saw the handler's error before replacing it")
}

func TestMiddlewarePanicIsAFailedAttemptAndHandlerPanicReachesMiddleware(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	var fromHandler error
	catch := func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
		err := next(ctx)
		fromHandler = err
		if job.Attempt == 2 {
			panic("middleware blew up")
		}
		return err
	}
	w, err := worker.New(pool, worker.Config{Logger: testLogger(t), Middleware: []worker.Middleware{catch}},
		worker.HandleFunc(func(context.Context, *tasuki.Job[task]) error { panic("handler blew up") }).
			With(worker.KindConfig{RetryPolicy: func(int) time.Duration { return 0 }}))
	require.NoError(t, err)
	id := insert(t, newClient[task](t, pool), task{}, &tasuki.InsertOpts{MaxAttempts: 2})

	res, err := w.WorkJob(ctx, id)
	require.NoError(t, err)
	var pe *worker.PanicError
	require.ErrorAs(t, fromHandler, &pe, "the handler's panic reaches the middleware as a *PanicError")
	assert.Equal(t, "handler blew up", pe.Value)
	assert.Equal(t, tasuki.EventRetried, res.Event)

	res, err = w.WorkJob(ctx, id)
	require.NoError(t, err)
	require.ErrorAs(t, res.Err, &pe)
	assert.Equal(t, "middleware blew up", pe.Value)
	assert.Equal(t, tasuki.EventFailed, res.Event)
	assert.Equal(t, tasuki.StatusFailed, res.Job.Status)
	require.Len(t, res.Job.Errors, 2)
	assert.Contains(t, res.Job.Errors[1].Error, "middleware blew up")
}

func TestMiddlewareSeesUndecodablePayloadAndJobFailsAtOnce(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	var got error
	mw := func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
		got = next(ctx)
		return got
	}
	called := false
	w, err := worker.New(pool, worker.Config{Logger: testLogger(t), Middleware: []worker.Middleware{mw}},
		worker.HandleFunc(func(context.Context, *tasuki.Job[task]) error { called = true; return nil }))
	require.NoError(t, err)
	ins, err := tasuki.NewInserter(pool, tasuki.ClientConfig{})
	require.NoError(t, err)
	_, err = ins.InsertMany(ctx, []tasuki.InsertManyParams{{Kind: "task", Payload: map[string]any{"n": "not a number"}}})
	require.NoError(t, err)
	var id int64
	require.NoError(t, pool.QueryRow(ctx, "SELECT max(id) FROM tasuki_job").Scan(&id))

	res, err := w.WorkJob(ctx, id)
	require.NoError(t, err)
	assert.False(t, called)
	var de *tasuki.PayloadDecodeError
	assert.ErrorAs(t, got, &de)
	assert.Equal(t, tasuki.EventFailed, res.Event)
	assert.Equal(t, tasuki.StatusFailed, res.Job.Status, "not retried: a payload does not start decoding by waiting")
}

func TestErrorHandlerCalledForFailuresAndPanicsOnly(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	type call struct {
		id  int64
		err error
	}
	var calls []call
	var mu sync.Mutex
	handler := func(ctx context.Context, job *tasuki.Job[task]) error {
		switch job.Payload.Mode {
		case "fail":
			return errors.New("failed")
		case "panic":
			panic("boom")
		case "cancel":
			return tasuki.Cancel(errors.New("no longer wanted"))
		case "snooze":
			return tasuki.Snooze(time.Hour)
		}
		return nil
	}
	w, err := worker.New(pool, worker.Config{Logger: testLogger(t), ErrorHandler: func(ctx context.Context, job *tasuki.Job[json.RawMessage], err error) {
		require.NoError(t, ctx.Err(), "the handler's context is never canceled")
		mu.Lock()
		calls = append(calls, call{job.ID, err})
		mu.Unlock()
		if job.Attempt > 1 {
			panic("the error handler panics too")
		}
	}}, worker.HandleFunc(handler))
	require.NoError(t, err)
	c := newClient[task](t, pool)
	ids := map[string]int64{}
	for _, mode := range []string{"ok", "fail", "panic", "cancel", "snooze"} {
		ids[mode] = insert(t, c, task{Mode: mode}, nil)
		_, err := w.WorkJob(ctx, ids[mode])
		require.NoError(t, err)
	}
	// A second attempt, whose error handler panics: recovered, the
	// outcome is still recorded.
	res, err := w.WorkJob(ctx, ids["fail"])
	require.NoError(t, err)
	assert.Equal(t, tasuki.EventRetried, res.Event)
	assert.Equal(t, 2, res.Job.Attempt)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, calls, 3)
	assert.Equal(t, ids["fail"], calls[0].id)
	assert.EqualError(t, calls[0].err, "failed")
	assert.Equal(t, ids["panic"], calls[1].id)
	var pe *worker.PanicError
	assert.ErrorAs(t, calls[1].err, &pe)
	assert.Equal(t, ids["fail"], calls[2].id)
}

func TestEventsOfTheWorkerAndTheClient(t *testing.T) {
	pool := testdb.New(t)
	events := tasuki.NewEvents()
	sub := events.Subscribe(100)
	defer sub.Close()
	handler := func(ctx context.Context, job *tasuki.Job[task]) error {
		switch job.Payload.Mode {
		case "fail":
			return errors.New("failed")
		case "last":
			return errors.New("out of attempts")
		case "cancel":
			return tasuki.Cancel(errors.New("no longer wanted"))
		case "snooze":
			return tasuki.Snooze(time.Hour)
		}
		return nil
	}
	c, err := tasuki.NewClient[task](pool, tasuki.ClientConfig{Events: events})
	require.NoError(t, err)
	w := newWorker(t, pool, handler, worker.Config{Events: events})
	stop := running(t, w)
	want := map[int64]tasuki.EventType{}
	for mode, typ := range map[string]tasuki.EventType{"ok": tasuki.EventCompleted, "fail": tasuki.EventRetried,
		"last": tasuki.EventFailed, "cancel": tasuki.EventCanceled, "snooze": tasuki.EventSnoozed} {
		opts := &tasuki.InsertOpts{}
		if mode == "last" {
			opts.MaxAttempts = 1
		}
		if mode == "fail" {
			opts.MaxAttempts = 2
		}
		id := insert(t, c, task{Mode: mode}, opts)
		want[id] = typ
	}
	got := map[int64]tasuki.Event{}
	inserted := 0
	for len(got) < len(want) || inserted < len(want) {
		ev := receive(t, sub.C, "an event")
		if ev.Type == tasuki.EventInserted {
			inserted++
			assert.Equal(t, "task", ev.Kind)
			assert.Equal(t, tasuki.DefaultQueue, ev.Queue)
			assert.Contains(t, want, ev.JobID)
			continue
		}
		if ev.Type == tasuki.EventRetried && got[ev.JobID].Type == tasuki.EventRetried {
			continue
		}
		got[ev.JobID] = ev
	}
	stop()
	for id, typ := range want {
		ev := got[id]
		assert.Equal(t, typ, ev.Type, "job %d", id)
		assert.Equal(t, "task", ev.Kind)
		assert.Equal(t, 1, ev.Attempt)
		assert.Positive(t, ev.Duration)
		assert.False(t, ev.At.IsZero())
		if typ == tasuki.EventCompleted {
			assert.NoError(t, ev.Err)
		} else {
			assert.Error(t, ev.Err, "%s carries the handler's error", typ)
		}
	}
}

func TestEventsGivenBackAtShutdown(t *testing.T) {
	pool := testdb.New(t)
	events := tasuki.NewEvents()
	sub := events.Subscribe(10, tasuki.EventGivenBack)
	defer sub.Close()
	started := make(chan struct{}, 1)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}, worker.Config{Events: events, ShutdownTimeout: -1})
	stop := running(t, w)
	id := insert(t, newClient[task](t, pool), task{}, nil)
	waitFor(t, started, "the handler to start")
	stop()
	ev := receive(t, sub.C, "the given-back event")
	assert.Equal(t, tasuki.EventGivenBack, ev.Type)
	assert.Equal(t, id, ev.JobID)
	assert.NoError(t, ev.Err)
}

func TestWorkJobRefusesWhatItCannotRun(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	w := newWorker(t, pool, func(context.Context, *tasuki.Job[task]) error { return nil }, worker.Config{})
	_, err := w.WorkJob(ctx, 424242)
	assert.ErrorIs(t, err, tasuki.ErrJobNotFound)

	oid := insert(t, newClient[other](t, pool), other{}, nil)
	_, err = w.WorkJob(ctx, oid)
	assert.ErrorContains(t, err, `kind "other" has no handler`)
	assert.Equal(t, "pending", string(rawJob(t, pool, oid).Status), "left as it was")

	id := insert(t, newClient[task](t, pool), task{}, &tasuki.InsertOpts{Delay: time.Hour, Queue: "elsewhere"})
	res, err := w.WorkJob(ctx, id)
	require.NoError(t, err, "a job scheduled later, in a queue the worker does not work, runs: a test asks for it")
	assert.Equal(t, tasuki.EventCompleted, res.Event)
	_, err = w.WorkJob(ctx, id)
	assert.ErrorContains(t, err, "it is completed")

	stop := running(t, w)
	defer stop()
	_, err = w.WorkJob(ctx, insert(t, newClient[task](t, pool), task{}, nil))
	assert.ErrorIs(t, err, worker.ErrWorkerRunning)
}

func TestWorkJobCompleteTx(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if err := worker.CompleteTx(ctx, tx, job); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}, worker.Config{})
	res, err := w.WorkJob(ctx, insert(t, newClient[task](t, pool), task{}, nil))
	require.NoError(t, err)
	assert.Equal(t, tasuki.StatusCompleted, res.Job.Status)
}

func TestSlowSubscriberLosesEventsAndSaysHowMany(t *testing.T) {
	events := tasuki.NewEvents()
	slow := events.Subscribe(2)
	defer slow.Close()
	for i := range 10 {
		events.Publish(tasuki.Event{Type: tasuki.EventCompleted, JobID: int64(i)})
	}
	assert.Equal(t, uint64(8), slow.Dropped())
	first, second := <-slow.C, <-slow.C
	assert.Equal(t, []int64{0, 1}, []int64{first.JobID, second.JobID})
	events.Publish(tasuki.Event{Type: tasuki.EventCompleted, JobID: 10})
	next := <-slow.C
	assert.Equal(t, int64(10), next.JobID)
	assert.Equal(t, uint64(8), next.Missed, "the next event says how many were lost before it")
	slow.Close()
	slow.Close()
	events.Publish(tasuki.Event{Type: tasuki.EventCompleted}) // no panic after close
	_, open := <-slow.C
	assert.False(t, open)
}

func TestPeriodicInsertsGoThroughInsertMiddlewareAndEvents(t *testing.T) {
	pool := testdb.New(t)
	events := tasuki.NewEvents()
	sub := events.Subscribe(10, tasuki.EventInserted)
	defer sub.Close()
	mark := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		for _, j := range jobs {
			j.Opts.Metadata["marked"] = j.Kind
		}
		return next(ctx)
	}
	w, err := worker.New(pool, worker.Config{Logger: testLogger(t), Events: events, InsertMiddleware: []tasuki.InsertMiddleware{mark}},
		worker.HandleFunc(func(context.Context, *tasuki.Job[tick]) error { return nil }))
	require.NoError(t, err)
	require.NoError(t, w.AddPeriodic(worker.Periodic("marked", worker.Every(time.Hour),
		func() (tick, *tasuki.InsertOpts) { return tick{N: 1}, nil }, worker.PeriodicOpts{RunOnStart: true})))
	stop := running(t, w)
	ev := receive(t, sub.C, "the periodic job's inserted event")
	assert.Equal(t, "tick", ev.Kind)
	// The event of an insert in a transaction comes before its commit.
	var marked string
	eventually(t, "the periodic job's row", func() bool {
		err := pool.QueryRow(context.Background(), "SELECT metadata->>'marked' FROM tasuki_job WHERE kind = 'tick'").Scan(&marked)
		if errors.Is(err, pgx.ErrNoRows) {
			return false
		}
		require.NoError(t, err)
		return true
	})
	stop()
	assert.Equal(t, "tick", marked)
}

func TestEventRescuedWhenALostJobIsLeasedAgain(t *testing.T) {
	pool := testdb.New(t)
	events := tasuki.NewEvents()
	sub := events.Subscribe(10, tasuki.EventRescued, tasuki.EventCompleted)
	defer sub.Close()
	id := insert(t, newClient[task](t, pool), task{}, nil)
	require.Len(t, leaseDirect(t, pool, "default", 1, time.Microsecond), 1) // its worker died
	w := newWorker(t, pool, func(context.Context, *tasuki.Job[task]) error { return nil }, worker.Config{Events: events})
	running(t, w)
	ev := receive(t, sub.C, "the rescued event")
	assert.Equal(t, tasuki.EventRescued, ev.Type)
	assert.Equal(t, id, ev.JobID)
	assert.Equal(t, 1, ev.Attempt, "the attempt that was lost")
	assert.ErrorContains(t, ev.Err, "lease expired")
	ev = receive(t, sub.C, "the completed event")
	assert.Equal(t, tasuki.EventCompleted, ev.Type)
	assert.Equal(t, 2, ev.Attempt)
}

func TestOutcomeIsWhatTheWorkerRecords(t *testing.T) {
	job := &tasuki.Job[json.RawMessage]{Attempt: 1, MaxAttempts: 2}
	last := &tasuki.Job[json.RawMessage]{Attempt: 2, MaxAttempts: 2}
	undecodable := &tasuki.PayloadDecodeError{JobID: 1, Type: "T", Err: errors.New("bad")}
	shutdown, cancel := context.WithCancelCause(context.Background())
	cancel(worker.ErrShutdown)
	ctx := context.Background()
	for _, c := range []struct {
		ctx  context.Context
		job  *tasuki.Job[json.RawMessage]
		err  error
		want tasuki.EventType
	}{
		{ctx, job, nil, tasuki.EventCompleted},
		{ctx, job, errors.New("x"), tasuki.EventRetried},
		{ctx, last, errors.New("x"), tasuki.EventFailed},
		{ctx, job, tasuki.Cancel(errors.New("x")), tasuki.EventCanceled},
		{ctx, job, tasuki.Snooze(time.Second), tasuki.EventSnoozed},
		{ctx, job, undecodable, tasuki.EventFailed},
		{ctx, job, tasuki.RetryAfter(time.Second, undecodable), tasuki.EventRetried},
		{ctx, job, tasuki.Cancel(undecodable), tasuki.EventCanceled},
		{shutdown, job, errors.New("x"), tasuki.EventGivenBack},
		{shutdown, job, tasuki.Cancel(errors.New("x")), tasuki.EventCanceled},
		{shutdown, job, nil, tasuki.EventCompleted},
	} {
		assert.Equal(t, c.want, worker.Outcome(c.ctx, c.job, c.err), "%v on attempt %d", c.err, c.job.Attempt)
	}
}
