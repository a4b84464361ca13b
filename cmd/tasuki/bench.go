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
	var producers int
	cmd := &cobra.Command{
		Use:   "bench [insert|drain|latency|idle|snapshot ...]",
		Short: "Measure insert speed, drain rate, latency and idle cost",
		Long: `Measures tasuki on a real database and prints one summary line per run:

  insert   single inserts from one goroutine (each its own transaction,
           its wake-up included), timed in turns with as many empty durable
           commits (the disk's ceiling for them); then one COPY of --bulk
           jobs. With --producers N, N goroutines at once, in turns: a plain
           one-row INSERT per transaction, Insert, InsertTx in a transaction
           that also inserts one plain row, and two plain rows in a
           transaction; then min(10, N) goroutines inserting 100-job
           batches: a plain COPY and InsertMany
  drain    --jobs pre-inserted no-op jobs: the time until the database
           records all of them done, by one worker with --concurrency;
           with --kinds and --queues the jobs are spread round robin over
           that many kinds and queues, all handled by the one worker, whose
           --concurrency the queues share
  latency  single inserts at a steady --rate for --duration into a running
           worker, from --producers goroutines at once (each an equal share
           of the rate; default 1): insert→handler-start percentiles, the
           insert's own time, its return→handler start, and the rate reached
  idle     what an idle worker costs: one worker with handlers for --kinds
           kinds over --queues queues, polling every --poll, no jobs; once
           it has settled, over --duration (here 10s unless given): the
           statements it sends per poll interval, by name, and the
           connections it holds (pg_stat_activity)
  snapshot the queue while an old transaction holds back vacuum: a worker
           (--concurrency, here 32 unless given) runs 1 ms jobs inserted
           one at a time at a steady --rate (here 400/s unless given); after
           --baseline a session of its own opens a REPEATABLE READ
           transaction, reads tasuki_job and stays idle in transaction for
           --hold, then rolls back, and the run goes on for --after. One
           line for the baseline, then one per --minute-length (numbered
           from the transaction's start, then "after 1", …): insert→
           handler-start p50 and p99, completed and inserted per second,
           jobs inserted and not yet started at the minute's end
           (counted by the run, not read from the database), and tasuki_job's
           n_dead_tup (from the statistics system, which lags by a second
           or more: each connection reports when it goes idle)

With no arguments it runs the first four; snapshot runs only when named.
Every worker setting but concurrency keeps its default. Without
--database-url or DATABASE_URL it runs on a throwaway PostgreSQL cluster
with durable settings (fsync and synchronous commit on), vacuuming tasuki's
table between runs; against a real database
it works in queues of its own and deletes their jobs afterwards. The insert
run's empty commits each write a transactional WAL message with the prefix
"tasuki.bench", which logical decoding (change data capture) passes on.`,
		Example: `  tasuki bench
  tasuki bench drain --jobs 1000000 --memory
  tasuki bench drain --kinds 4 --queues 4
  tasuki bench insert --unique
  tasuki bench idle --kinds 50 --queues 10 --duration 60s
  tasuki bench latency --producers 50 --rate 2000
  tasuki bench snapshot --hold 5m`,
		ValidArgs: []string{"insert", "drain", "latency", "idle", "snapshot"},
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
					if producers > 1 {
						res, err = bench.Producers(ctx, bench.ProducersConfig{URL: cfg.URL, Producers: producers})
						break
					}
					res, err = bench.Insert(ctx, cfg)
				case "drain":
					res, err = bench.Drain(ctx, cfg)
				case "latency":
					lat := cfg
					lat.Producers = producers
					res, err = bench.Latency(ctx, lat)
				case "idle":
					idle := cfg
					// --duration's default is the latency run's.
					if cmd.Flags().Changed("duration") {
						idle.IdleWindow = cfg.Duration
					}
					res, err = bench.Idle(ctx, idle)
				case "snapshot":
					snap := cfg
					// The shared flags' defaults are the other runs';
					// this run has its own unless they are given.
					if !cmd.Flags().Changed("concurrency") {
						snap.Concurrency = 0
					}
					if !cmd.Flags().Changed("rate") {
						snap.Rate = 0
					}
					res, err = bench.Snapshot(ctx, snap, a.stdout)
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
	f.IntVar(&cfg.Concurrency, "concurrency", bench.DefaultConcurrency, "worker concurrency in the drain and latency runs (snapshot: 32 unless given)")
	f.IntVar(&cfg.Rate, "rate", 200, "inserts per second in the latency run (snapshot: 400 unless given)")
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of the latency run (and of the idle run's count, 10s unless given)")
	f.IntVar(&cfg.Kinds, "kinds", 1, "drain and idle runs: kinds the jobs are spread over and the worker handles")
	f.IntVar(&cfg.Queues, "queues", 1, "drain and idle runs: queues the jobs are spread over and the worker works (sharing --concurrency in the drain)")
	f.DurationVar(&cfg.PollInterval, "poll", time.Second, "idle run: the worker's PollInterval")
	f.IntVar(&cfg.Inserts, "inserts", 5000, "single inserts timed in the insert run")
	f.IntVar(&cfg.BulkJobs, "bulk", 100_000, "jobs in the insert run's COPY")
	f.IntVar(&producers, "producers", 1, "goroutines inserting at once. Insert run: above 1, each way of inserting runs side by side with its plain counterpart (batches from min(10, producers)); latency run: each inserts an equal share of --rate")
	f.BoolVar(&cfg.Memory, "memory", false, "sample the worker's live heap at each tenth of the drain")
	f.BoolVar(&cfg.Unique, "unique", false, "insert run: also time unique inserts (InsertOpts.Unique), in turns with the plain ones")
	f.DurationVar(&cfg.Warmup, "warmup", time.Minute, "snapshot run: how long it runs before its baseline, on a line no figure is compared with")
	f.DurationVar(&cfg.Baseline, "baseline", time.Minute, "snapshot run: how long it measures before the transaction opens")
	f.DurationVar(&cfg.Hold, "hold", 15*time.Minute, "snapshot run: how long the transaction stays idle")
	f.DurationVar(&cfg.After, "after", 2*time.Minute, "snapshot run: how long it goes on after the transaction ends")
	f.DurationVar(&cfg.MinuteLength, "minute-length", time.Minute, "snapshot run: the period of its lines")
	f.BoolVar(&cfg.Explain, "explain", false, "snapshot run: explain (analyze, buffers) a lease's index scan at each line")
	_ = f.MarkHidden("explain")
	f.BoolVar(&noProgress, "no-progress", false, "hide progress bars")
	return cmd
}
