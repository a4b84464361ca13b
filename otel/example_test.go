package tasukiotel_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	tasukiotel "github.com/tasukiq/tasuki/otel"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

type Invoice struct {
	Number int `json:"number"`
}

func (Invoice) Kind() string { return "invoice" }

// Trace a job from its insert to its handler: give the instrumentation's
// insert middleware to the client and its middleware to the worker. The
// handler's span is a child of the insert's, in the same trace.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}

	// In an application: an OTLP exporter, and sdktrace.WithBatcher.
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	defer tp.Shutdown(ctx)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(ctx)
	inst, err := tasukiotel.New(tasukiotel.Config{TracerProvider: tp, MeterProvider: mp})
	if err != nil {
		log.Fatal(err)
	}

	client, err := tasuki.NewClient[Invoice](pool, tasuki.ClientConfig{Queue: "invoices",
		InsertMiddleware: []tasuki.InsertMiddleware{inst.InsertMiddleware()}})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := client.Insert(ctx, Invoice{Number: 1001}, nil); err != nil {
		log.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	w, err := worker.New(pool, worker.Config{Queue: "invoices", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Middleware: []worker.Middleware{inst.Middleware()}}, // first: it sees every other middleware's outcome
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[Invoice]) error {
			defer stop() // only to end the example
			return nil
		}))
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Run(runCtx); err != nil {
		log.Fatal(err)
	}

	spans := exporter.GetSpans()
	for _, s := range spans {
		fmt.Println(s.SpanKind, s.Name)
	}
	fmt.Println("one trace:", spans[0].SpanContext.TraceID() == spans[1].SpanContext.TraceID())
	fmt.Println("child of the insert:", spans[1].Parent.SpanID() == spans[0].SpanContext.SpanID())
	// Output:
	// producer send invoices
	// consumer process invoices
	// one trace: true
	// child of the insert: true
}

// Report each queue's depth and the age of its oldest runnable job,
// read when the meter provider's reader collects.
func ExampleInstrumentation_RegisterQueueMetrics() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}

	// In an application: a periodic reader with an OTLP exporter, or the
	// Prometheus exporter.
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)
	inst, err := tasukiotel.New(tasukiotel.Config{MeterProvider: mp})
	if err != nil {
		log.Fatal(err)
	}
	admin, err := tasuki.NewAdmin(pool)
	if err != nil {
		log.Fatal(err)
	}
	unregister, err := inst.RegisterQueueMetrics(admin)
	if err != nil {
		log.Fatal(err)
	}
	defer unregister()

	client, err := tasuki.NewClient[Invoice](pool, tasuki.ClientConfig{Queue: "reminders"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := client.InsertMany(ctx, []Invoice{{Number: 1}, {Number: 2}, {Number: 3}}, nil); err != nil {
		log.Fatal(err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		log.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == tasukiotel.MetricQueueDepth {
				for _, dp := range g.DataPoints {
					queue, _ := dp.Attributes.Value(tasukiotel.AttrQueue)
					state, _ := dp.Attributes.Value(tasukiotel.AttrState)
					if queue == attribute.StringValue("reminders") && state.AsString() == "runnable" {
						fmt.Println(m.Name, queue.AsString(), state.AsString(), dp.Value)
					}
				}
			}
		}
	}
	// Output: tasuki.queue.depth reminders runnable 3
}
