// Package bench measures tasuki on a real database: how fast a worker
// drains a backlog, the delay from insert to handler start at a steady
// rate, insert throughput (single and COPY), what an idle worker costs,
// whether a worker's memory stays flat over a long drain, and how the queue
// fares while an old transaction holds back vacuum. `tasuki bench` runs it.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/schollz/progressbar/v3"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// Config says what to measure and where. Zero fields take the defaults
// given.
type Config struct {
	// URL is the database; tasuki's schema must be applied.
	URL string
	// Jobs is the number of no-op jobs the drain runs. Defaults to 100,000.
	Jobs int
	// Concurrency is the worker's concurrency in the drain and latency
	// runs; every other worker setting keeps its default. Defaults to
	// 2,000, the worker count of River's own benchmark, so that the two are
	// compared alike. The snapshot run defaults to SnapshotConcurrency
	// instead.
	Concurrency int
	// Rate is the latency run's inserts per second. Defaults to 200. The
	// snapshot run defaults to SnapshotRate instead.
	Rate int
	// Duration is how long the latency run inserts. Defaults to 10 s.
	Duration time.Duration
	// Inserts is the number of single inserts timed. Defaults to 5,000.
	Inserts int
	// BulkJobs is the number of jobs inserted by one COPY. Defaults to
	// 100,000.
	BulkJobs int
	// Memory samples the worker's live heap during the drain (forcing a GC
	// at each sample). Defaults to false.
	Memory bool
	// Progress receives progress bars; nil shows none.
	Progress io.Writer

	// Baseline is how long the snapshot run measures before it opens its
	// transaction. Defaults to 1 minute.
	Baseline time.Duration
	// Hold is how long the snapshot run's transaction stays open, idle.
	// Defaults to 15 minutes.
	Hold time.Duration
	// After is how long the snapshot run goes on once the transaction has
	// ended. Defaults to 2 minutes.
	After time.Duration
	// MinuteLength is the period of the snapshot run's lines: one per
	// "minute" of the hold and after it. Defaults to 1 minute; tests and
	// quick looks use less.
	MinuteLength time.Duration
	// Explain makes the snapshot run explain (ANALYZE, BUFFERS) the read
	// at the heart of a lease at the end of each period and add the pages
	// it visited to the line. Defaults to false.
	Explain bool
}

// DefaultConcurrency is Config.Concurrency's default.
const DefaultConcurrency = 2000

func (c *Config) defaults() {
	if c.Jobs == 0 {
		c.Jobs = 100_000
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Rate == 0 {
		c.Rate = 200
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Inserts == 0 {
		c.Inserts = 5000
	}
	if c.BulkJobs == 0 {
		c.BulkJobs = 100_000
	}
}

// noop is the benchmark's payload. SentAt is the insert's start, for the
// latency run.
type noop struct {
	SentAt int64 `json:"t,omitempty"`
}

// queryCounter counts the statements a pool sends.
type queryCounter struct{ n atomic.Int64 }

func (q *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	q.n.Add(1)
	return ctx
}

func (q *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func open(ctx context.Context, url string, counter *queryCounter) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if counter != nil {
		cfg.ConnConfig.Tracer = counter
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

func queueName(kind string) string {
	return fmt.Sprintf("bench-%s-%d", kind, time.Now().UnixNano())
}

// cleanup deletes a benchmark queue's jobs, so a shared database is left
// as it was found.
func cleanup(pool *pgxpool.Pool, queue string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	q := db.New(pool)
	for {
		n, err := q.JobDeleteQueueBatch(ctx, db.JobDeleteQueueBatchParams{Queue: queue, Max: 10_000})
		if err != nil || n == 0 {
			return
		}
	}
}

func bar(w io.Writer, total int, what string) *progressbar.ProgressBar {
	if w == nil {
		return progressbar.DefaultSilent(int64(total))
	}
	return progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("jobs"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// runWorker starts a no-op worker; stop shuts it down and waits.
func runWorker(pool *pgxpool.Pool, queue string, concurrency int, h worker.HandlerFunc[noop]) (stop func() error, err error) {
	w, err := worker.New[noop](pool, h, worker.Config{Queue: queue, Concurrency: concurrency, Logger: quietLogger()})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return func() error {
		cancel()
		return <-done
	}, nil
}

// DrainResult is the outcome of Drain.
type DrainResult struct {
	Jobs        int
	Concurrency int
	Elapsed     time.Duration
	// Statements is what the worker sent to the database meanwhile.
	Statements int64
	// HeapInuse is the worker process's live heap at each tenth of the
	// drain, when Config.Memory is set.
	HeapInuse []uint64
}

// PerSecond is the drain rate.
func (r DrainResult) PerSecond() float64 { return float64(r.Jobs) / r.Elapsed.Seconds() }

func (r DrainResult) String() string {
	s := fmt.Sprintf("drain: %d no-op jobs, concurrency %d: %.2fs, %.0f jobs/s, %.1f jobs per statement",
		r.Jobs, r.Concurrency, r.Elapsed.Seconds(), r.PerSecond(), float64(r.Jobs)/float64(max(r.Statements, 1)))
	if len(r.HeapInuse) > 0 {
		s += "; live heap MiB at each tenth:"
		for _, h := range r.HeapInuse {
			s += fmt.Sprintf(" %.1f", float64(h)/(1<<20))
		}
	}
	return s
}

// Drain inserts Jobs no-op jobs (not timed), then times one worker until
// the database records every one of them finished.
func Drain(ctx context.Context, cfg Config) (DrainResult, error) {
	cfg.defaults()
	res := DrainResult{Jobs: cfg.Jobs, Concurrency: cfg.Concurrency}
	counter := &queryCounter{}
	pool, err := open(ctx, cfg.URL, counter)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	queue := queueName("drain")
	defer cleanup(pool, queue)
	client, err := tasuki.NewClient[noop](pool, tasuki.ClientConfig{Queue: queue})
	if err != nil {
		return res, err
	}
	fill := bar(cfg.Progress, cfg.Jobs, "inserting")
	batch := make([]noop, 50_000)
	for left := cfg.Jobs; left > 0; {
		n := min(left, len(batch))
		if _, err := client.InsertMany(ctx, batch[:n], nil); err != nil {
			return res, err
		}
		left -= n
		_ = fill.Add(n)
	}
	_ = fill.Finish()

	// The progress poll has its own pool, so the statement count is the
	// worker's alone.
	pollPool, err := open(ctx, cfg.URL, nil)
	if err != nil {
		return res, err
	}
	defer pollPool.Close()
	q := db.New(pollPool)
	progress := bar(cfg.Progress, cfg.Jobs, "draining")
	var handled atomic.Int64
	before := counter.n.Load()
	start := time.Now()
	stop, err := runWorker(pool, queue, cfg.Concurrency, func(context.Context, *tasuki.Job[noop]) error {
		handled.Add(1)
		return nil
	})
	if err != nil {
		return res, err
	}
	// Progress comes from the handler count; only once every handler ran
	// is the database asked (cheaply) whether all outcomes are recorded,
	// so that watching does not slow down what is watched.
	nextSample := 0
	for {
		done := int(handled.Load())
		_ = progress.Set(done)
		if cfg.Memory && done >= nextSample*cfg.Jobs/10 {
			res.HeapInuse = append(res.HeapInuse, liveHeap())
			nextSample++
		}
		if done >= cfg.Jobs {
			unfinished, err := q.JobAnyUnfinished(ctx, queue)
			if err != nil {
				_ = stop()
				return res, err
			}
			if !unfinished {
				res.Elapsed = time.Since(start)
				res.Statements = counter.n.Load() - before
				break
			}
		}
		select {
		case <-ctx.Done():
			_ = stop()
			return res, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	_ = progress.Finish()
	if cfg.Memory {
		res.HeapInuse = append(res.HeapInuse, liveHeap())
	}
	return res, stop()
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// LatencyResult is the outcome of Latency.
type LatencyResult struct {
	Jobs          int
	Rate          int
	P50, P90, P99 time.Duration
	Max           time.Duration
	// InsertP50 is the median time Insert itself took (its commit
	// included), the part of the latency spent before the worker could
	// know of the job.
	InsertP50 time.Duration
}

func (r LatencyResult) String() string {
	return fmt.Sprintf("latency: %d jobs at %d/s, insert→handler start: p50 %s, p90 %s, p99 %s, max %s; the insert's own commit: p50 %s",
		r.Jobs, r.Rate, round(r.P50), round(r.P90), round(r.P99), round(r.Max), round(r.InsertP50))
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

// Latency inserts single jobs at a steady Rate for Duration into a running
// worker and measures, for each, the time from the start of its Insert to
// the start of its handler.
func Latency(ctx context.Context, cfg Config) (LatencyResult, error) {
	cfg.defaults()
	res := LatencyResult{Rate: cfg.Rate}
	pool, err := open(ctx, cfg.URL, nil)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	queue := queueName("latency")
	defer cleanup(pool, queue)
	client, err := tasuki.NewClient[noop](pool, tasuki.ClientConfig{Queue: queue})
	if err != nil {
		return res, err
	}
	var mu sync.Mutex
	var lat []time.Duration
	stop, err := runWorker(pool, queue, cfg.Concurrency, func(_ context.Context, job *tasuki.Job[noop]) error {
		d := time.Since(time.Unix(0, job.Payload.SentAt))
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return res, err
	}
	// Let the worker connect and LISTEN before the clock starts.
	time.Sleep(500 * time.Millisecond)

	total := int(cfg.Duration.Seconds() * float64(cfg.Rate))
	progress := bar(cfg.Progress, total, "latency")
	tick := time.NewTicker(time.Second / time.Duration(cfg.Rate))
	inserts := make([]time.Duration, 0, total)
	for i := 0; i < total; i++ {
		select {
		case <-ctx.Done():
			_ = stop()
			return res, ctx.Err()
		case <-tick.C:
		}
		sent := time.Now()
		if _, err := client.Insert(ctx, noop{SentAt: sent.UnixNano()}, nil); err != nil {
			tick.Stop()
			_ = stop()
			return res, err
		}
		inserts = append(inserts, time.Since(sent))
		_ = progress.Add(1)
	}
	tick.Stop()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(lat)
		mu.Unlock()
		if n >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = progress.Finish()
	if err := stop(); err != nil {
		return res, err
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lat) < total {
		return res, fmt.Errorf("bench: only %d of %d jobs ran within 30 s of the last insert", len(lat), total)
	}
	slices.Sort(lat)
	res.Jobs = len(lat)
	res.P50, res.P90, res.P99 = percentile(lat, 50), percentile(lat, 90), percentile(lat, 99)
	res.Max = lat[len(lat)-1]
	slices.Sort(inserts)
	res.InsertP50 = percentile(inserts, 50)
	return res, nil
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

// InsertResult is the outcome of Insert.
type InsertResult struct {
	Single     int
	SingleTime time.Duration
	// CommitTime is the time the same number of empty durable commits took,
	// run in turns with the inserts: what the database and its disk allow
	// one connection, whatever the statement.
	CommitTime time.Duration
	Bulk       int
	BulkTime   time.Duration
}

func (r InsertResult) String() string {
	single := float64(r.Single) / r.SingleTime.Seconds()
	s := fmt.Sprintf("insert: single, one goroutine: %.0f jobs/s (%d in %.2fs)", single, r.Single, r.SingleTime.Seconds())
	if r.CommitTime > 0 {
		ceiling := float64(r.Single) / r.CommitTime.Seconds()
		s += fmt.Sprintf(", %.0f%% of the %.0f empty durable commits/s this database allows one connection", 100*single/ceiling, ceiling)
	}
	return s + fmt.Sprintf("; COPY: %.0f jobs/s (%d in %.2fs)", float64(r.Bulk)/r.BulkTime.Seconds(), r.Bulk, r.BulkTime.Seconds())
}

// Insert times Inserts single inserts from one goroutine (each its own
// transaction, NOTIFY included), then one InsertMany (COPY) of BulkJobs.
// In turns with the inserts it times as many empty transactions that
// only commit: a single insert cannot be faster than the disk's flush,
// so the ratio of the two tells tasuki's cost apart from the disk's, on a
// disk whose speed drifts.
func Insert(ctx context.Context, cfg Config) (InsertResult, error) {
	cfg.defaults()
	res := InsertResult{Single: cfg.Inserts, Bulk: cfg.BulkJobs}
	pool, err := open(ctx, cfg.URL, nil)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	queue := queueName("insert")
	defer cleanup(pool, queue)
	client, err := tasuki.NewClient[noop](pool, tasuki.ClientConfig{Queue: queue})
	if err != nil {
		return res, err
	}
	q := db.New(pool)
	// Untimed: the pool's first connection and each statement's
	// preparation are not what is measured.
	probeErr := q.DurableCommitProbe(ctx)
	probe := probeErr == nil
	if !probe {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		// A database that does not let this role write WAL messages still
		// gets its inserts timed.
		slog.Warn("tasuki bench: cannot time empty commits; the insert line will lack its ceiling", slog.Any("error", probeErr))
	}
	if _, err := client.Insert(ctx, noop{}, nil); err != nil {
		return res, err
	}
	progress := bar(cfg.Progress, cfg.Inserts, "single inserts")
	const turn = 100
	for done := 0; done < cfg.Inserts; {
		n := min(turn, cfg.Inserts-done)
		start := time.Now()
		for i := 0; probe && i < n; i++ {
			if err := q.DurableCommitProbe(ctx); err != nil {
				return res, err
			}
		}
		if probe {
			res.CommitTime += time.Since(start)
		}
		start = time.Now()
		for range n {
			if _, err := client.Insert(ctx, noop{}, nil); err != nil {
				return res, err
			}
		}
		res.SingleTime += time.Since(start)
		done += n
		_ = progress.Add(n)
	}
	_ = progress.Finish()

	payloads := make([]noop, cfg.BulkJobs)
	start := time.Now()
	if _, err := client.InsertMany(ctx, payloads, nil); err != nil {
		return res, err
	}
	res.BulkTime = time.Since(start)
	return res, nil
}

// IdleResult is the outcome of Idle.
type IdleResult struct {
	Window       time.Duration
	PollInterval time.Duration
	Queries      int64
}

// PerPoll is the number of statements per poll interval.
func (r IdleResult) PerPoll() float64 {
	return float64(r.Queries) / (r.Window.Seconds() / r.PollInterval.Seconds())
}

func (r IdleResult) String() string {
	return fmt.Sprintf("idle: %d statements in %s with nothing to do: %.2f per poll interval (%s)",
		r.Queries, r.Window, r.PerPoll(), r.PollInterval)
}

// Idle counts the statements a worker with default settings sends in a
// 10-second window with nothing to do.
func Idle(ctx context.Context, cfg Config) (IdleResult, error) {
	cfg.defaults()
	res := IdleResult{Window: 10 * time.Second, PollInterval: worker.DefaultPollInterval}
	counter := &queryCounter{}
	pool, err := open(ctx, cfg.URL, counter)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	stop, err := runWorker(pool, queueName("idle"), 0, func(context.Context, *tasuki.Job[noop]) error { return nil })
	if err != nil {
		return res, err
	}
	time.Sleep(2 * time.Second) // past start-up
	before := counter.n.Load()
	select {
	case <-ctx.Done():
	case <-time.After(res.Window):
	}
	res.Queries = counter.n.Load() - before
	return res, stop()
}
