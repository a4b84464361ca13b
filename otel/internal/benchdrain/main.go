// Command benchdrain measures what the OpenTelemetry middleware costs a
// worker: it drains a backlog of no-op jobs (internal/bench's drain) with
// and without tasukiotel's Middleware, in turns, and prints the jobs per
// second of each run and the ratio of the means. With the middleware on,
// every span is sampled and exported (to an exporter that counts and
// discards them, through the SDK's batch span processor) and every
// measurement recorded (in a MeterProvider with a manual reader).
//
//	cd otel && go run ./internal/benchdrain --jobs 100000
//
// Without DATABASE_URL (or --database-url) it starts a throwaway
// PostgreSQL cluster with durable settings, as `tasuki bench` does, and
// vacuums tasuki's table between runs.
//
// With the middleware on, the drain's inserts go through the insert
// middleware too, so every job carries the trace context of its insert's
// span and every attempt reads it back: the whole path a traced job
// takes. (The inserts are not timed.)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/bench"
	"github.com/tasukiq/tasuki/internal/pgtemp"
	tasukiotel "github.com/tasukiq/tasuki/otel"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchdrain:", err)
		os.Exit(1)
	}
}

func run() error {
	jobs := flag.Int("jobs", 100_000, "no-op jobs each run drains")
	concurrency := flag.Int("concurrency", bench.DefaultConcurrency, "the worker's concurrency")
	turns := flag.Int("turns", 2, "pairs of runs, without then with the middleware")
	onlyOtel := flag.Bool("otel", false, "run with the middleware only (to profile it)")
	url := flag.String("database-url", os.Getenv("DATABASE_URL"), "the database; defaults to $DATABASE_URL, or a throwaway cluster when unset")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the runs to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	throwaway := *url == ""
	if throwaway {
		fmt.Fprintln(os.Stderr, "benchdrain: no DATABASE_URL: starting a throwaway PostgreSQL cluster, deleted on exit")
		cluster, err := pgtemp.Start(ctx, pgtemp.Options{Durable: true})
		if err != nil {
			return fmt.Errorf("start a throwaway PostgreSQL cluster (or set DATABASE_URL): %w", err)
		}
		defer cluster.Stop()
		*url = cluster.URL
	}
	pool, err := pgxpool.New(ctx, *url)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		return err
	}

	fmt.Printf("benchdrain: Go %s, %s/%s, %d CPUs; %d jobs, concurrency %d\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), *jobs, *concurrency)
	modes := []bool{false, true}
	if *onlyOtel {
		modes = []bool{true}
	}
	rates := map[bool][]float64{}
	for range *turns {
		for _, on := range modes {
			if throwaway {
				// The run before left dead rows, which autovacuum would
				// remove in the middle of this one.
				if err := db.New(pool).JobTableVacuum(ctx); err != nil {
					return fmt.Errorf("vacuum between runs: %w", err)
				}
			}
			rate, err := drain(ctx, *url, *jobs, *concurrency, on)
			if err != nil {
				return err
			}
			rates[on] = append(rates[on], rate)
		}
	}
	if !*onlyOtel {
		off, on := mean(rates[false]), mean(rates[true])
		fmt.Printf("mean: without %.0f jobs/s, with %.0f jobs/s: %.1f %%\n", off, on, 100*on/off)
	}
	return nil
}

// drain runs one drain, with the middleware when on, prints its line and
// returns its rate.
func drain(ctx context.Context, url string, jobs, concurrency int, on bool) (float64, error) {
	cfg := bench.Config{URL: url, Jobs: jobs, Concurrency: concurrency}
	var exported atomic.Int64
	var tp *sdktrace.TracerProvider
	var reader *sdkmetric.ManualReader
	if on {
		tp = sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
			sdktrace.WithBatcher(&countingExporter{n: &exported}))
		reader = sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		defer func() { _ = mp.Shutdown(context.Background()) }()
		inst, err := tasukiotel.New(tasukiotel.Config{TracerProvider: tp, MeterProvider: mp})
		if err != nil {
			return 0, err
		}
		cfg.Middleware = []worker.Middleware{inst.Middleware()}
		cfg.InsertMiddleware = []tasuki.InsertMiddleware{inst.InsertMiddleware()}
	}
	res, err := bench.Drain(ctx, cfg)
	if err != nil {
		return 0, err
	}
	line := fmt.Sprintf("otel %-3s %s", onOff(on), res)
	if on {
		if err := tp.Shutdown(ctx); err != nil { // flushes the spans still queued
			return 0, err
		}
		finished, err := finishedCount(ctx, reader)
		if err != nil {
			return 0, err
		}
		line += fmt.Sprintf("; %d spans exported (the batch processor drops what its queue cannot hold), %d attempts counted", exported.Load(), finished)
	}
	fmt.Println(line)
	return res.PerSecond(), nil
}

// countingExporter counts the spans it is given and discards them.
type countingExporter struct{ n *atomic.Int64 }

func (e *countingExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.n.Add(int64(len(spans)))
	return nil
}

func (e *countingExporter) Shutdown(context.Context) error { return nil }

// finishedCount is the sum of tasuki.jobs.finished over its attributes.
func finishedCount(ctx context.Context, reader *sdkmetric.ManualReader) (int64, error) {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		return 0, err
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == tasukiotel.MetricJobsFinished {
				for _, dp := range s.DataPoints {
					n += dp.Value
				}
			}
		}
	}
	return n, nil
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(max(len(xs), 1))
}
