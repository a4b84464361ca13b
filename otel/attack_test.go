package tasukiotel_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasukiq/tasuki/internal/testdb"
	tasukiotel "github.com/tasukiq/tasuki/otel"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// badEmail has the kind of email but a payload email cannot decode.
type badEmail struct {
	To int `json:"to"`
}

func (badEmail) Kind() string { return "email" }

// A middleware after tasukiotel's turns an undecodable payload into a
// retry (or a cancel): the worker records what the middleware chose
// (worker.undecodable), tasukiotel says "failed".
func TestAttackDecodeErrorRewrappedByInnerMiddleware(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	for _, c := range []struct {
		name, event, outcome string
		wrap                 func(error) error
	}{
		{"retry", string(tasuki.EventRetried), "retried", func(err error) error { return tasuki.RetryAfter(time.Minute, err) }},
		{"cancel", string(tasuki.EventCanceled), "canceled", func(err error) error { return tasuki.Cancel(err) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			queue := "attack_decode_" + c.name
			ins, err := tasuki.NewClient[badEmail](pool, tasuki.ClientConfig{Queue: queue})
			require.NoError(t, err)
			job, err := ins.Insert(ctx, badEmail{To: 5}, &tasuki.InsertOpts{MaxAttempts: 5})
			require.NoError(t, err)
			rewrap := func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
				err := next(ctx)
				var de *tasuki.PayloadDecodeError
				if errors.As(err, &de) {
					return c.wrap(err)
				}
				return err
			}
			w, err := worker.New(pool, worker.Config{Queue: queue, Logger: quietLogger(),
				Middleware: []worker.Middleware{f.in.Middleware(), rewrap}},
				worker.Handle[email](worker.HandlerFunc[email](func(context.Context, *tasuki.Job[email]) error { return nil })))
			require.NoError(t, err)
			res, err := w.WorkJob(ctx, job.ID)
			require.NoError(t, err)
			require.Equal(t, c.event, string(res.Event), "the worker's own outcome")
			rm := f.collect(t)
			assert.Equal(t, int64(1), sum(t, rm, "tasuki.jobs.finished", outcome(queue, "email", c.outcome)...),
				"tasukiotel counts the outcome the worker recorded")
			assert.Equal(t, int64(0), sum(t, rm, "tasuki.jobs.finished", outcome(queue, "email", "failed")...))
			spans := f.ended(trace.SpanKindConsumer)
			require.Len(t, spans, 1)
			assert.Equal(t, c.outcome, attrs(spans[0])["tasuki.job.outcome"].AsString())
		})
	}
}

// A producer span started under an existing span is its child; the
// consumer is a child of the producer and the ids round-trip. (Held.)
func TestAttackProducerChildOfCallerSpan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	f := newFixture(t)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(f.spans))
	ctx, parent := tp.Tracer("t").Start(ctx, "parent")
	c := f.client(t, pool, "attack_parent")
	job, err := c.Insert(ctx, email{To: "a"}, &tasuki.InsertOpts{Metadata: map[string]any{"user": "x"}})
	require.NoError(t, err)
	parent.End()
	prod := f.ended(trace.SpanKindProducer)
	require.Len(t, prod, 1)
	assert.Equal(t, parent.SpanContext().SpanID(), prod[0].Parent().SpanID())
	assert.Equal(t, parent.SpanContext().TraceID(), prod[0].SpanContext().TraceID())
	w := f.worker(t, pool, "attack_parent", func(context.Context, *tasuki.Job[email]) error { return nil })
	_, err = w.WorkJob(context.Background(), job.ID)
	require.NoError(t, err)
	cons := f.ended(trace.SpanKindConsumer)
	require.Len(t, cons, 1)
	assert.Equal(t, prod[0].SpanContext().SpanID(), cons[0].Parent().SpanID())
}

// User metadata holding a key equal to MetadataKey but for case ("OTEL")
// breaks the link: encoding/json matches struct tags case-insensitively,
// so extract decodes the user's value, fails, and drops the carrier.
func TestAttackMetadataKeyCaseCollision(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	f := newFixture(t)
	c := f.client(t, pool, "attack_case")
	job, err := c.Insert(ctx, email{To: "a"}, &tasuki.InsertOpts{Metadata: map[string]any{"OTEL": "user value"}})
	require.NoError(t, err)
	require.Contains(t, string(job.Metadata), `"otel"`)
	prod := f.ended(trace.SpanKindProducer)
	require.Len(t, prod, 1)
	w := f.worker(t, pool, "attack_case", func(context.Context, *tasuki.Job[email]) error { return nil })
	_, err = w.WorkJob(ctx, job.ID)
	require.NoError(t, err)
	cons := f.ended(trace.SpanKindConsumer)
	require.Len(t, cons, 1)
	assert.Equal(t, prod[0].SpanContext().TraceID(), cons[0].SpanContext().TraceID(), "consumer continues the producer's trace")
}

// An inner middleware panics: tasukiotel re-raises, the worker recovers
// and retries; both agree. Concurrent inserts share the caches. (Held.)
func TestAttackInnerPanicAndConcurrentInserts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	f := newFixture(t)
	c := f.client(t, pool, "attack_panic")
	job, err := c.Insert(ctx, email{To: "a"}, &tasuki.InsertOpts{MaxAttempts: 3})
	require.NoError(t, err)
	boom := func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
		panic("boom")
	}
	w, err := worker.New(pool, worker.Config{Queue: "attack_panic", Logger: quietLogger(),
		Middleware: []worker.Middleware{f.in.Middleware(), boom}},
		worker.Handle[email](worker.HandlerFunc[email](func(context.Context, *tasuki.Job[email]) error { return nil })))
	require.NoError(t, err)
	res, err := w.WorkJob(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, tasuki.EventRetried, res.Event)
	rm := f.collect(t)
	assert.Equal(t, int64(1), sum(t, rm, "tasuki.jobs.finished", outcome("attack_panic", "email", "retried")...))

	done := make(chan error, 16)
	for i := 0; i < 16; i++ {
		go func() {
			_, err := c.InsertMany(ctx, []email{{To: "x"}, {To: "y"}}, nil)
			done <- err
		}()
	}
	for i := 0; i < 16; i++ {
		require.NoError(t, <-done)
	}
	rm = f.collect(t)
	assert.Equal(t, int64(33), sum(t, rm, "tasuki.jobs.inserted", tasukiotel.AttrQueue.String("attack_panic"), tasukiotel.AttrKind.String("email")))
}
