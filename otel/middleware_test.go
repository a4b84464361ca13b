package tasukiotel_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	tasukiotel "github.com/tasukiq/tasuki/otel"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// These tests call the middleware directly, without a database, with
// what the worker would give it.

func rawJob(attempt, maxAttempts int, metadata string) *tasuki.Job[json.RawMessage] {
	return &tasuki.Job[json.RawMessage]{ID: 7, Queue: "q", Kind: "k", Attempt: attempt, MaxAttempts: maxAttempts,
		Metadata: json.RawMessage(metadata), Payload: json.RawMessage(`{}`)}
}

func canceledWith(cause error) context.Context {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	return ctx
}

// The outcome is the one the worker records for what the chain returned.
func TestOutcomes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name        string
		ctx         context.Context
		err         error
		attempt     int
		outcome     string
		status      codes.Code
		errorType   string
		exceptionEv bool
	}{
		{name: "completed", outcome: "completed"},
		{name: "retried", err: errors.New("down"), attempt: 1, outcome: "retried", status: codes.Error, errorType: "_OTHER", exceptionEv: true},
		{name: "last attempt", err: errors.New("down"), attempt: 3, outcome: "failed", status: codes.Error, errorType: "_OTHER", exceptionEv: true},
		{name: "retry after", err: tasuki.RetryAfter(time.Minute, errors.New("rate limited")), attempt: 1, outcome: "retried", status: codes.Error, errorType: "_OTHER", exceptionEv: true},
		{name: "canceled", err: tasuki.Cancel(errors.New("bad input")), attempt: 1, outcome: "canceled", exceptionEv: true},
		{name: "canceled on the last attempt", err: tasuki.Cancel(nil), attempt: 3, outcome: "canceled", exceptionEv: true},
		{name: "snoozed", err: tasuki.Snooze(time.Minute), attempt: 1, outcome: "snoozed"},
		{name: "given back", ctx: canceledWith(worker.ErrShutdown), err: context.Canceled, attempt: 1, outcome: "given_back"},
		{name: "canceled at shutdown", ctx: canceledWith(worker.ErrShutdown), err: tasuki.Cancel(nil), attempt: 1, outcome: "canceled", exceptionEv: true},
		{name: "completed at shutdown", ctx: canceledWith(worker.ErrShutdown), attempt: 1, outcome: "completed"},
		{name: "timeout", ctx: canceledWith(&worker.TimeoutError{Timeout: time.Second}), err: context.DeadlineExceeded, attempt: 1,
			outcome: "retried", status: codes.Error, errorType: "timeout", exceptionEv: true},
		{name: "payload does not decode", err: &tasuki.PayloadDecodeError{JobID: 7, Type: "main.T", Err: errors.New("bad")}, attempt: 1,
			outcome: "failed", status: codes.Error, errorType: "payload_decode", exceptionEv: true},
		{name: "panic", err: &worker.PanicError{Value: "boom", Stack: "stack"}, attempt: 1, outcome: "retried", status: codes.Error, errorType: "panic", exceptionEv: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			ctx := c.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			got := f.in.Middleware()(ctx, rawJob(max(c.attempt, 1), 3, `{}`), func(context.Context) error { return c.err })
			require.Equal(t, c.err, got, "the middleware returns what next returned")
			spans := f.ended(trace.SpanKindConsumer)
			require.Len(t, spans, 1)
			s := spans[0]
			a := attrs(s)
			if c.outcome == "completed" {
				assert.NotContains(t, a, attribute.Key("tasuki.job.outcome"))
			} else {
				assert.Equal(t, c.outcome, a["tasuki.job.outcome"].AsString())
			}
			assert.Equal(t, c.status, s.Status().Code)
			assert.Equal(t, c.errorType, a["error.type"].AsString())
			assert.Equal(t, c.exceptionEv, len(s.Events()) == 1)
			rm := f.collect(t)
			assert.Equal(t, int64(1), sum(t, rm, "tasuki.jobs.finished", outcome("q", "k", c.outcome)...))
			assert.Equal(t, uint64(1), histogramCount(t, rm, "tasuki.job.duration", outcome("q", "k", c.outcome)...))
		})
	}
}

// Metadata without a trace context, or with something else under the
// key, leaves the span's parent to the handler's context.
func TestMetadataWithoutCarrier(t *testing.T) {
	t.Parallel()
	for _, md := range []string{`{}`, `{"otel": "mine"}`, `{"otel": {"traceparent": "garbage"}}`, `{"a": "otel"}`, `{"otel": {"traceparent": 1}}`} {
		t.Run(md, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			// The handler's context has a span of the application's.
			outer := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
			ctx := trace.ContextWithSpanContext(context.Background(), outer)
			require.NoError(t, f.in.Middleware()(ctx, rawJob(1, 3, md), func(context.Context) error { return nil }))
			spans := f.ended(trace.SpanKindConsumer)
			require.Len(t, spans, 1)
			assert.Equal(t, outer.SpanID(), spans[0].Parent().SpanID())
			assert.Empty(t, spans[0].Links())
		})
	}
}

// What InsertMiddleware writes, Middleware reads, under any key, whatever
// span the handler's context carries.
func TestCarrierRoundTrip(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	in, err := tasukiotel.New(tasukiotel.Config{TracerProvider: tp, MetadataKey: "trace-ctx",
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})})
	require.NoError(t, err)

	params := []*tasuki.InsertParams{{Kind: "k", Opts: tasuki.InsertOpts{Queue: "q", Metadata: map[string]any{"user": "ann"}}}}
	require.NoError(t, in.InsertMiddleware()(context.Background(), params, func(context.Context) error { params[0].ID = 9; return nil }))
	md, err := json.Marshal(params[0].Opts.Metadata)
	require.NoError(t, err)
	assert.Contains(t, string(md), `"user":"ann"`, "the application's metadata stays")
	assert.NotContains(t, string(md), `"otel"`)

	other := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}})
	ctx := trace.ContextWithSpanContext(context.Background(), other)
	require.NoError(t, in.Middleware()(ctx, rawJob(1, 3, string(md)), func(context.Context) error { return nil }))
	ended := spans.Ended()
	require.Len(t, ended, 2)
	producer, consumer := ended[0], ended[1]
	assert.Equal(t, trace.SpanKindProducer, producer.SpanKind())
	assert.Equal(t, producer.SpanContext().SpanID(), consumer.Parent().SpanID())
	assert.Equal(t, producer.SpanContext().TraceID(), consumer.SpanContext().TraceID())
	assert.Equal(t, "9", attrs(producer)["messaging.message.id"].AsString())
}

// Without a propagator set anywhere, the trace context travels all the
// same; without a tracer provider, nothing is written.
func TestDefaultPropagator(t *testing.T) {
	t.Parallel()
	f := newFixture(t) // the global propagator is the no-op default
	params := []*tasuki.InsertParams{{Kind: "k", Opts: tasuki.InsertOpts{Queue: "q", Metadata: map[string]any{}}}}
	require.NoError(t, f.in.InsertMiddleware()(context.Background(), params, func(context.Context) error { return nil }))
	carrier, ok := params[0].Opts.Metadata["otel"].(map[string]string)
	require.True(t, ok, "metadata: %v", params[0].Opts.Metadata)
	assert.Regexp(t, `^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`, carrier["traceparent"])

	noop, err := tasukiotel.New(tasukiotel.Config{TracerProvider: noop.NewTracerProvider()})
	require.NoError(t, err)
	params[0].Opts.Metadata = map[string]any{}
	require.NoError(t, noop.InsertMiddleware()(context.Background(), params, func(context.Context) error { return nil }))
	assert.Empty(t, params[0].Opts.Metadata, "nothing to propagate: nothing written")
}

func TestNewRejectsMetadataKey(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"otel", "trace-ctx", "a.b", "x_y", "ü", "with space", "a,b", "-", "a`b", "a'b", "a<b"} {
		_, err := tasukiotel.New(tasukiotel.Config{MetadataKey: key})
		require.NoError(t, err, key)
	}
	for _, key := range []string{`a"b`, `a\b`, "a\nb", "a\tb", "\xff"} {
		_, err := tasukiotel.New(tasukiotel.Config{MetadataKey: key})
		require.Error(t, err, key)
		assert.Contains(t, err.Error(), "Config.MetadataKey")
	}
}

// An insert of no jobs passes through.
func TestInsertNoJobs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	called := false
	require.NoError(t, f.in.InsertMiddleware()(context.Background(), nil, func(context.Context) error { called = true; return nil }))
	assert.True(t, called)
	assert.Empty(t, f.spans.Ended())
}
