package tasukiotel_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	tasukiotel "github.com/tasukiq/tasuki/otel"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

type email struct {
	To string `json:"to"`
}

func (email) Kind() string { return "email" }

// fixture is an Instrumentation on SDK providers whose output the test
// reads: ended spans from a recorder, metrics from a manual reader.
type fixture struct {
	in     *tasukiotel.Instrumentation
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	in, err := tasukiotel.New(tasukiotel.Config{TracerProvider: tp, MeterProvider: mp})
	require.NoError(t, err)
	return &fixture{in: in, spans: spans, reader: reader}
}

// client returns a client of emails into queue with f's insert middleware.
func (f *fixture) client(t *testing.T, pool *pgxpool.Pool, queue string) *tasuki.Client[email] {
	t.Helper()
	c, err := tasuki.NewClient[email](pool, tasuki.ClientConfig{Queue: queue, InsertMiddleware: []tasuki.InsertMiddleware{f.in.InsertMiddleware()}})
	require.NoError(t, err)
	return c
}

// worker returns a worker of queue with f's middleware, running emails
// with h; it is not started: tests run jobs with WorkJob.
func (f *fixture) worker(t *testing.T, pool *pgxpool.Pool, queue string, h worker.HandlerFunc[email]) *worker.Worker {
	t.Helper()
	w, err := worker.New(pool, worker.Config{Queue: queue, Logger: quietLogger(),
		Middleware: []worker.Middleware{f.in.Middleware()}}, worker.Handle[email](h))
	require.NoError(t, err)
	return w
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// ended returns the ended spans of kind k.
func (f *fixture) ended(k trace.SpanKind) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range f.spans.Ended() {
		if s.SpanKind() == k {
			out = append(out, s)
		}
	}
	return out
}

func (f *fixture) collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, f.reader.Collect(context.Background(), &rm))
	return rm
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func findMetric(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// sum is the value of counter name's data point with exactly kvs; 0 when
// there is none.
func sum(t *testing.T, rm metricdata.ResourceMetrics, name string, kvs ...attribute.KeyValue) int64 {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		return 0
	}
	data, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok, "%s is a %T", name, m.Data)
	require.True(t, data.IsMonotonic)
	set := attribute.NewSet(kvs...)
	for _, dp := range data.DataPoints {
		if dp.Attributes.Equals(&set) {
			return dp.Value
		}
	}
	return 0
}

// histogramCount is the count of histogram name's data point with
// exactly kvs.
func histogramCount(t *testing.T, rm metricdata.ResourceMetrics, name string, kvs ...attribute.KeyValue) uint64 {
	t.Helper()
	m, ok := findMetric(rm, name)
	require.True(t, ok, "no metric %s", name)
	data, ok := m.Data.(metricdata.Histogram[float64])
	require.True(t, ok, "%s is a %T", name, m.Data)
	set := attribute.NewSet(kvs...)
	for _, dp := range data.DataPoints {
		if dp.Attributes.Equals(&set) {
			return dp.Count
		}
	}
	return 0
}

// gauge is the value of gauge name's data point with exactly kvs, and
// whether there is one.
func gauge[N int64 | float64](t *testing.T, rm metricdata.ResourceMetrics, name string, kvs ...attribute.KeyValue) (N, bool) {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		return 0, false
	}
	data, ok := m.Data.(metricdata.Gauge[N])
	require.True(t, ok, "%s is a %T", name, m.Data)
	set := attribute.NewSet(kvs...)
	for _, dp := range data.DataPoints {
		if dp.Attributes.Equals(&set) {
			return dp.Value, true
		}
	}
	return 0, false
}

// outcome are the metric attributes of an attempt's outcome.
func outcome(queue, kind, o string) []attribute.KeyValue {
	return []attribute.KeyValue{tasukiotel.AttrQueue.String(queue), tasukiotel.AttrKind.String(kind), tasukiotel.AttrOutcome.String(o)}
}
