package main

import (
	"fmt"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/bench"
	"github.com/tasukiq/tasuki/internal/pgtemp"
)

func newBenchCmd(a *app) *cobra.Command {
	var cfg bench.Config
	var noProgress bool
	cmd := &cobra.Command{
		Use:   "bench [insert|drain|latency|idle ...]",
		Short: "Measure insert speed, drain rate, latency and idle cost",
		Long: `Measures tasuki on a real database and prints one summary line per run:

  insert   single inserts from one goroutine (each its own transaction,
           NOTIFY included), timed in turns with as many empty durable
           commits (the disk's ceiling for them); then one COPY of --bulk
           jobs
  drain    --jobs pre-inserted no-op jobs: the time until the database
           records all of them done, by one worker with --concurrency
  latency  single inserts at a steady --rate for --duration into a running
           worker: insert→handler-start percentiles
  idle     statements sent by an idle worker with default settings

With no arguments it runs all four. Every worker setting but concurrency
keeps its default. Without --database-url or DATABASE_URL it runs on a
throwaway PostgreSQL cluster with durable settings (fsync and synchronous
commit on), vacuuming tasuki's table between runs; against a real database
it works in queues of its own and deletes their jobs afterwards. The insert
run's empty commits each write a transactional WAL message with the prefix
"tasuki.bench", which logical decoding (change data capture) passes on.`,
		Example: `  tasuki bench
  tasuki bench drain --jobs 1000000 --memory`,
		ValidArgs: []string{"insert", "drain", "latency", "idle"},
		Args:      cobra.OnlyValidArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if len(args) == 0 {
				args = []string{"insert", "drain", "latency", "idle"}
			}
			pool, cleanup, err := a.openDB(ctx, dbOptions{Throwaway: &pgtemp.Options{Durable: true}})
			if err != nil {
				return err
			}
			defer cleanup()
			cfg.URL = pool.Config().ConnString()
			if !noProgress {
				cfg.Progress = a.stderr
			}
			fmt.Fprintf(a.stdout, "tasuki bench: Go %s, %s/%s, %d CPUs\n", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
			throwaway := a.url() == ""
			for i, run := range args {
				if i > 0 && throwaway {
					// The runs before left dead rows; autovacuum would
					// remove them at a moment of its choosing, perhaps in
					// the middle of this run.
					if err := db.New(pool).JobTableVacuum(ctx); err != nil {
						return fmt.Errorf("bench: vacuum between runs: %w", err)
					}
				}
				var res fmt.Stringer
				switch run {
				case "insert":
					res, err = bench.Insert(ctx, cfg)
				case "drain":
					res, err = bench.Drain(ctx, cfg)
				case "latency":
					res, err = bench.Latency(ctx, cfg)
				case "idle":
					res, err = bench.Idle(ctx, cfg)
				}
				if err != nil {
					return fmt.Errorf("bench %s: %w", run, err)
				}
				fmt.Fprintln(a.stdout, res)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Jobs, "jobs", 100_000, "no-op jobs in the drain")
	f.IntVar(&cfg.Concurrency, "concurrency", bench.DefaultConcurrency, "worker concurrency in the drain and latency runs")
	f.IntVar(&cfg.Rate, "rate", 200, "inserts per second in the latency run")
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of the latency run")
	f.IntVar(&cfg.Inserts, "inserts", 5000, "single inserts timed in the insert run")
	f.IntVar(&cfg.BulkJobs, "bulk", 100_000, "jobs in the insert run's COPY")
	f.BoolVar(&cfg.Memory, "memory", false, "sample the worker's live heap at each tenth of the drain")
	f.BoolVar(&noProgress, "no-progress", false, "hide progress bars")
	return cmd
}
