package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// BenchmarkWorkerDrain times a whole worker draining b.N pre-inserted
// no-op jobs, until the database records all of them done. Its allocations
// per job (allocs/op, B/op: one op is one job) count every goroutine of the
// process and, unlike the time, do not depend on how busy the machine is,
// so they show changes in the worker's own cost reliably.
//
//	go test ./worker -run '^$' -bench WorkerDrain -benchtime 50000x
func BenchmarkWorkerDrain(b *testing.B) {
	for _, concurrency := range []int{100, 2000} {
		b.Run(fmt.Sprintf("concurrency=%d", concurrency), func(b *testing.B) {
			pool := testdb.New(b)
			fill(b, pool, b.N)
			q := db.New(pool)
			var handled atomic.Int64
			w, err := worker.New(pool, worker.Config{Concurrency: concurrency, Logger: slog.New(slog.NewTextHandler(discard{}, nil))}, worker.Handle[struct{}](worker.HandlerFunc[struct{}](func(context.Context, *tasuki.Job[struct{}]) error {
				handled.Add(1)
				return nil
			})).With(worker.KindConfig{Kind: "task"})) // the kind fill inserts
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			b.ReportAllocs()
			b.ResetTimer()
			go func() { done <- w.Run(ctx) }()
			for {
				if handled.Load() >= int64(b.N) {
					unfinished, err := q.JobAnyUnfinished(context.Background(), "default")
					if err != nil {
						b.Fatal(err)
					}
					if !unfinished {
						break
					}
				}
				time.Sleep(2 * time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
