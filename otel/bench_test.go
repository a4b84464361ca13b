package tasukiotel_test

import (
	"context"
	"encoding/json"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	tasukiotel "github.com/tasukiq/tasuki/otel"
	"github.com/tasukiq/tasuki/tasuki"
)

// BenchmarkMiddleware is the worker middleware's cost per attempt with
// every span sampled and exported (to nowhere), without the database:
// go test -run '^$' -bench Middleware -benchmem
func BenchmarkMiddleware(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	in, err := tasukiotel.New(tasukiotel.Config{TracerProvider: tp, MeterProvider: mp})
	if err != nil {
		b.Fatal(err)
	}
	params := []*tasuki.InsertParams{{Kind: "k", Opts: tasuki.InsertOpts{Queue: "q", Metadata: map[string]any{}}}}
	if err := in.InsertMiddleware()(context.Background(), params, func(context.Context) error { return nil }); err != nil {
		b.Fatal(err)
	}
	carrier, err := json.Marshal(params[0].Opts.Metadata)
	if err != nil {
		b.Fatal(err)
	}
	mw := in.Middleware()
	next := func(context.Context) error { return nil }
	for _, c := range []struct{ name, metadata string }{{"no trace context", `{}`}, {"trace context", string(carrier)}} {
		b.Run(c.name, func(b *testing.B) {
			job := rawJob(1, 25, c.metadata)
			b.ReportAllocs()
			for b.Loop() {
				if err := mw(context.Background(), job, next); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
