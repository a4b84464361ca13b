package tasukiotel_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasukiq/tasuki/internal/testdb"
	tasukiotel "github.com/tasukiq/tasuki/otel"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// A job inserted by an instrumented client and run by an instrumented
// worker makes two spans of one trace: the insert's producer span and
// the attempt's consumer span, its child, linked to it.
func TestInsertAndWorkOneTrace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	pool := testdb.New(t)
	job, err := f.client(t, pool, "mail").Insert(ctx, email{To: "a@example.com"}, nil)
	require.NoError(t, err)

	var handlerSpan trace.SpanContext
	w := f.worker(t, pool, "mail", func(ctx context.Context, job *tasuki.Job[email]) error {
		handlerSpan = trace.SpanContextFromContext(ctx)
		return nil
	})
	res, err := w.WorkJob(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, tasuki.EventCompleted, res.Event)

	producers, consumers := f.ended(trace.SpanKindProducer), f.ended(trace.SpanKindConsumer)
	require.Len(t, producers, 1)
	require.Len(t, consumers, 1)
	p, c := producers[0], consumers[0]

	assert.Equal(t, "send mail", p.Name())
	assert.Equal(t, codes.Unset, p.Status().Code)
	pa := attrs(p)
	assert.Equal(t, "tasuki", pa["messaging.system"].AsString())
	assert.Equal(t, "send", pa["messaging.operation.type"].AsString())
	assert.Equal(t, "send", pa["messaging.operation.name"].AsString())
	assert.Equal(t, "mail", pa["messaging.destination.name"].AsString())
	assert.Equal(t, "email", pa["tasuki.job.kind"].AsString())
	assert.Equal(t, strconv.FormatInt(job.ID, 10), pa["messaging.message.id"].AsString())
	assert.NotContains(t, pa, attribute.Key("messaging.batch.message_count"))

	assert.Equal(t, "process mail", c.Name())
	assert.Equal(t, codes.Unset, c.Status().Code)
	assert.Equal(t, p.SpanContext().TraceID(), c.SpanContext().TraceID(), "one trace")
	assert.Equal(t, p.SpanContext().SpanID(), c.Parent().SpanID(), "the consumer span is the producer's child")
	assert.True(t, c.Parent().IsRemote())
	require.Len(t, c.Links(), 1)
	assert.Equal(t, p.SpanContext().SpanID(), c.Links()[0].SpanContext.SpanID(), "and links to it")
	ca := attrs(c)
	assert.Equal(t, "tasuki", ca["messaging.system"].AsString())
	assert.Equal(t, "process", ca["messaging.operation.type"].AsString())
	assert.Equal(t, "process", ca["messaging.operation.name"].AsString())
	assert.Equal(t, "mail", ca["messaging.destination.name"].AsString())
	assert.Equal(t, strconv.FormatInt(job.ID, 10), ca["messaging.message.id"].AsString())
	assert.Equal(t, "email", ca["tasuki.job.kind"].AsString())
	assert.Equal(t, int64(1), ca["tasuki.job.attempt"].AsInt64())
	assert.NotContains(t, ca, attribute.Key("tasuki.job.outcome"), "completed: no outcome, as no error.type")
	assert.NotContains(t, ca, attribute.Key("error.type"))

	assert.Equal(t, c.SpanContext(), handlerSpan, "the handler's context carries the consumer span")

	var md struct {
		Otel map[string]string `json:"otel"`
	}
	require.NoError(t, json.Unmarshal(res.Job.Metadata, &md))
	assert.Equal(t, "00-"+p.SpanContext().TraceID().String()+"-"+p.SpanContext().SpanID().String()+"-01", md.Otel["traceparent"])

	rm := f.collect(t)
	assert.Equal(t, int64(1), sum(t, rm, "tasuki.jobs.inserted", tasukiotel.AttrQueue.String("mail"), tasukiotel.AttrKind.String("email")))
	assert.Equal(t, int64(1), sum(t, rm, "tasuki.jobs.finished", outcome("mail", "email", "completed")...))
	assert.Equal(t, uint64(1), histogramCount(t, rm, "tasuki.job.duration", outcome("mail", "email", "completed")...))
}

// A bulk insert makes one span, and every job of it carries its context.
func TestInsertManyOneSpan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	pool := testdb.New(t)
	n, err := f.client(t, pool, "bulk").InsertMany(ctx, []email{{To: "a"}, {To: "b"}, {To: "c"}}, nil)
	require.NoError(t, err)
	require.Equal(t, int64(3), n)

	producers := f.ended(trace.SpanKindProducer)
	require.Len(t, producers, 1)
	p := producers[0]
	assert.Equal(t, "send bulk", p.Name())
	pa := attrs(p)
	assert.Equal(t, int64(3), pa["messaging.batch.message_count"].AsInt64())
	assert.Equal(t, "bulk", pa["messaging.destination.name"].AsString())
	assert.Equal(t, "email", pa["tasuki.job.kind"].AsString())
	assert.NotContains(t, pa, attribute.Key("messaging.message.id"), "COPY reports no ids")

	admin, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	page, err := admin.List(ctx, tasuki.ListParams{Queue: "bulk"})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 3)
	w := f.worker(t, pool, "bulk", func(context.Context, *tasuki.Job[email]) error { return nil })
	for _, job := range page.Jobs {
		assert.Contains(t, string(job.Metadata), p.SpanContext().SpanID().String())
		_, err := w.WorkJob(ctx, job.ID)
		require.NoError(t, err)
	}
	consumers := f.ended(trace.SpanKindConsumer)
	require.Len(t, consumers, 3)
	for _, c := range consumers {
		assert.Equal(t, p.SpanContext().SpanID(), c.Parent().SpanID())
		assert.Equal(t, p.SpanContext().TraceID(), c.SpanContext().TraceID())
	}
	rm := f.collect(t)
	assert.Equal(t, int64(3), sum(t, rm, "tasuki.jobs.inserted", tasukiotel.AttrQueue.String("bulk"), tasukiotel.AttrKind.String("email")))
	assert.Equal(t, int64(3), sum(t, rm, "tasuki.jobs.finished", outcome("bulk", "email", "completed")...))
}

type sms struct{}

func (sms) Kind() string { return "sms" }

// A batch of several queues and kinds names no queue and no kind, and
// counts each pair apart.
func TestInsertManyQueuesAndKinds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	pool := testdb.New(t)
	ins, err := tasuki.NewInserter(pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{f.in.InsertMiddleware()}})
	require.NoError(t, err)
	_, err = ins.InsertMany(ctx, []tasuki.InsertManyParams{
		{Payload: email{}, InsertOpts: &tasuki.InsertOpts{Queue: "q1"}},
		{Payload: email{}, InsertOpts: &tasuki.InsertOpts{Queue: "q2"}},
		{Payload: sms{}, InsertOpts: &tasuki.InsertOpts{Queue: "q1"}},
		{Payload: sms{}, InsertOpts: &tasuki.InsertOpts{Queue: "q1"}},
	})
	require.NoError(t, err)
	producers := f.ended(trace.SpanKindProducer)
	require.Len(t, producers, 1)
	assert.Equal(t, "send", producers[0].Name())
	pa := attrs(producers[0])
	assert.NotContains(t, pa, attribute.Key("messaging.destination.name"))
	assert.NotContains(t, pa, attribute.Key("tasuki.job.kind"))
	assert.Equal(t, int64(4), pa["messaging.batch.message_count"].AsInt64())

	rm := f.collect(t)
	for _, c := range []struct {
		queue, kind string
		n           int64
	}{{"q1", "email", 1}, {"q2", "email", 1}, {"q1", "sms", 2}, {"q2", "sms", 0}} {
		assert.Equal(t, c.n, sum(t, rm, "tasuki.jobs.inserted", tasukiotel.AttrQueue.String(c.queue), tasukiotel.AttrKind.String(c.kind)), "%s %s", c.queue, c.kind)
	}
}

// A unique insert that meets its job is traced but not counted.
func TestDuplicateNotCounted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	pool := testdb.New(t)
	c := f.client(t, pool, "unique")
	opts := &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{Key: "order-1"}}
	first, err := c.Insert(ctx, email{}, opts)
	require.NoError(t, err)
	second, err := c.Insert(ctx, email{}, opts)
	require.NoError(t, err)
	require.True(t, second.Duplicate)
	require.Equal(t, first.ID, second.ID)

	producers := f.ended(trace.SpanKindProducer)
	require.Len(t, producers, 2)
	for _, p := range producers {
		assert.Equal(t, strconv.FormatInt(first.ID, 10), attrs(p)["messaging.message.id"].AsString())
	}
	rm := f.collect(t)
	assert.Equal(t, int64(1), sum(t, rm, "tasuki.jobs.inserted", tasukiotel.AttrQueue.String("unique"), tasukiotel.AttrKind.String("email")))
}

// An insert that fails gives an Error span and counts nothing.
func TestInsertError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	pool := testdb.NewEmpty(t) // no tables
	_, err := f.client(t, pool, "mail").Insert(ctx, email{}, nil)
	require.Error(t, err)
	producers := f.ended(trace.SpanKindProducer)
	require.Len(t, producers, 1)
	assert.Equal(t, codes.Error, producers[0].Status().Code)
	assert.Equal(t, err.Error(), producers[0].Status().Description)
	require.Len(t, producers[0].Events(), 1)
	assert.Equal(t, "exception", producers[0].Events()[0].Name)
	assert.Equal(t, int64(0), sum(t, f.collect(t), "tasuki.jobs.inserted", tasukiotel.AttrQueue.String("mail"), tasukiotel.AttrKind.String("email")))
}

// A failing handler gives Error spans, outcome retried, then failed.
func TestFailedAttempts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	pool := testdb.New(t)
	job, err := f.client(t, pool, "flaky").Insert(ctx, email{}, &tasuki.InsertOpts{MaxAttempts: 2})
	require.NoError(t, err)
	w := f.worker(t, pool, "flaky", func(context.Context, *tasuki.Job[email]) error { return errors.New("smtp down") })
	res, err := w.WorkJob(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, tasuki.EventRetried, res.Event)
	res, err = w.WorkJob(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, tasuki.EventFailed, res.Event)

	consumers := f.ended(trace.SpanKindConsumer)
	require.Len(t, consumers, 2)
	for i, want := range []string{"retried", "failed"} {
		c := consumers[i]
		assert.Equal(t, codes.Error, c.Status().Code)
		assert.Equal(t, "smtp down", c.Status().Description)
		a := attrs(c)
		assert.Equal(t, want, a["tasuki.job.outcome"].AsString())
		assert.Equal(t, int64(i+1), a["tasuki.job.attempt"].AsInt64())
		assert.Equal(t, "_OTHER", a["error.type"].AsString())
		require.Len(t, c.Events(), 1)
		assert.Equal(t, "exception", c.Events()[0].Name)
	}
	rm := f.collect(t)
	for _, o := range []string{"retried", "failed"} {
		assert.Equal(t, int64(1), sum(t, rm, "tasuki.jobs.finished", outcome("flaky", "email", o)...), o)
		assert.Equal(t, uint64(1), histogramCount(t, rm, "tasuki.job.duration", outcome("flaky", "email", o)...), o)
	}
	assert.Equal(t, int64(0), sum(t, rm, "tasuki.jobs.finished", outcome("flaky", "email", "completed")...))
}

// A panic in the handler, or in a middleware inside this one, is a failed
// attempt of error.type "panic"; the worker still recovers it.
func TestPanics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	pool := testdb.New(t)
	c := f.client(t, pool, "panics")
	inHandler, err := c.Insert(ctx, email{To: "handler"}, nil)
	require.NoError(t, err)
	inMiddleware, err := c.Insert(ctx, email{To: "middleware"}, nil)
	require.NoError(t, err)
	panicky := func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
		if job.ID == inMiddleware.ID {
			panic("middleware boom")
		}
		return next(ctx)
	}
	w, err := worker.New(pool, worker.Config{Queue: "panics", Logger: quietLogger(),
		Middleware: []worker.Middleware{f.in.Middleware(), panicky}},
		worker.HandleFunc(func(context.Context, *tasuki.Job[email]) error { panic("handler boom") }))
	require.NoError(t, err)
	for _, id := range []int64{inHandler.ID, inMiddleware.ID} {
		res, err := w.WorkJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, tasuki.EventRetried, res.Event)
	}
	consumers := f.ended(trace.SpanKindConsumer)
	require.Len(t, consumers, 2)
	for i, want := range []string{"panic: handler boom", "panic: middleware boom"} {
		assert.Equal(t, codes.Error, consumers[i].Status().Code)
		assert.Equal(t, want, consumers[i].Status().Description)
		assert.Equal(t, "panic", attrs(consumers[i])["error.type"].AsString())
		assert.Equal(t, "retried", attrs(consumers[i])["tasuki.job.outcome"].AsString())
	}
	assert.Equal(t, int64(2), sum(t, f.collect(t), "tasuki.jobs.finished", outcome("panics", "email", "retried")...))
}

// Under Run, with many handlers at once, every attempt's span is a child
// of its insert's.
func TestRunManyJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	pool := testdb.New(t)
	c := f.client(t, pool, "run")
	const bulk, single = 20, 5
	_, err := c.InsertMany(ctx, make([]email, bulk), nil)
	require.NoError(t, err)
	for range single {
		_, err := c.Insert(ctx, email{}, nil)
		require.NoError(t, err)
	}
	var handled atomic.Int64
	done := make(chan struct{})
	w, err := worker.New(pool, worker.Config{Queue: "run", Concurrency: 8, Logger: quietLogger(),
		Middleware: []worker.Middleware{f.in.Middleware()}},
		worker.HandleFunc(func(context.Context, *tasuki.Job[email]) error {
			if handled.Add(1) == bulk+single {
				close(done)
			}
			return nil
		}))
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- w.Run(runCtx) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("handled %d of %d jobs", handled.Load(), bulk+single)
	}
	stop()
	require.NoError(t, <-ran) // every handler, and its span, has ended

	producers := map[trace.SpanID]bool{}
	for _, p := range f.ended(trace.SpanKindProducer) {
		producers[p.SpanContext().SpanID()] = true
	}
	require.Len(t, producers, 1+single)
	consumers := f.ended(trace.SpanKindConsumer)
	require.Len(t, consumers, bulk+single)
	for _, c := range consumers {
		assert.True(t, producers[c.Parent().SpanID()], "parent %s is an insert's span", c.Parent().SpanID())
	}
	assert.Equal(t, int64(bulk+single), sum(t, f.collect(t), "tasuki.jobs.finished", outcome("run", "email", "completed")...))
}
