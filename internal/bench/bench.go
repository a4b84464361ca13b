// Package bench measures tasuki on a real database: how fast a worker
// drains a backlog, the delay from insert to handler start at a steady
// rate from one producer or many, insert throughput (single and COPY),
// what an idle worker costs, whether a worker's memory stays flat over a
// long drain, and how the queue fares while an old transaction holds back
// vacuum. `tasuki bench` runs it.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
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
	// Producers is how many goroutines insert in the latency run, at once,
	// each at an equal share of Rate, through one client on one pool with
	// a connection for each. Defaults to 1. The snapshot run has one.
	Producers int
	// Inserts is the number of single inserts timed. Defaults to 5,000.
	Inserts int
	// BulkJobs is the number of jobs inserted by one COPY. Defaults to
	// 100,000.
	BulkJobs int
	// Kinds is the number of kinds the drain's jobs are spread over, round
	// robin, and the idle run's worker has handlers for ("k0", "k1", …;
	// one kind is "noop"). Defaults to 1.
	Kinds int
	// Queues is the number of queues the drain's jobs are spread over, and
	// the worker of the drain and of the idle run works; the drain's
	// Concurrency is shared among them. Defaults to 1.
	Queues int
	// IdleWindow is how long the idle run counts, once the worker has
	// settled. Defaults to 10 s.
	IdleWindow time.Duration
	// PollInterval is the idle run worker's PollInterval. Defaults to the
	// worker's default, 1 s.
	PollInterval time.Duration
	// Memory samples the worker's live heap during the drain (forcing a GC
	// at each sample). Defaults to false.
	Memory bool
	// Unique has the insert run also time unique inserts. Defaults to
	// false.
	Unique bool
	// Progress receives progress bars; nil shows none.
	Progress io.Writer
	// Middleware wraps the drain worker's handlers, and InsertMiddleware
	// the drain's inserts (the OpenTelemetry module's drain sets its
	// own). Default to none.
	Middleware       []worker.Middleware
	InsertMiddleware []tasuki.InsertMiddleware

	// Warmup is how long the snapshot run inserts and works jobs before
	// its baseline, on a line of its own ("warm-up") that no figure is
	// compared with: the start's connections and prepared statements, the
	// first burst of the producers, and the table's first analyze fall
	// there. Defaults to 1 minute.
	Warmup time.Duration
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
	if c.Producers == 0 {
		c.Producers = 1
	}
	if c.Inserts == 0 {
		c.Inserts = 5000
	}
	if c.BulkJobs == 0 {
		c.BulkJobs = 100_000
	}
	if c.Kinds == 0 {
		c.Kinds = 1
	}
	if c.Queues == 0 {
		c.Queues = 1
	}
	if c.IdleWindow == 0 {
		c.IdleWindow = 10 * time.Second
	}
	if c.PollInterval == 0 {
		c.PollInterval = worker.DefaultPollInterval
	}
}

// noop is the benchmark's payload. SentAt is the insert's start, for the
// latency run.
type noop struct {
	SentAt int64 `json:"t,omitempty"`
}

func (noop) Kind() string { return "noop" }

// queryCounter counts the statements a pool sends, by name, and records
// the backend pid of each connection it opens. The worker copies its
// application pool's config, tracer included, for its own pool and its
// LISTEN connection, so a counter on the pool it is given sees all three.
type queryCounter struct {
	n      atomic.Int64
	mu     sync.Mutex
	byName map[string]int64
	pids   []int32
	// byConn counts statements by the backend pid of the connection that
	// sent them.
	byConn map[int32]int64
}

func (q *queryCounter) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	q.n.Add(1)
	name := statementName(data.SQL)
	pid := int32(conn.PgConn().PID())
	q.mu.Lock()
	if q.byName == nil {
		q.byName, q.byConn = make(map[string]int64), make(map[int32]int64)
	}
	q.byName[name]++
	q.byConn[pid]++
	q.mu.Unlock()
	return ctx
}

func (q *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart counts each statement of a batch: while jobs flow the
// worker sends its statements in batches, each behind PlanGeneric.
func (q *queryCounter) TraceBatchStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	for _, s := range data.Batch.QueuedQueries {
		q.TraceQueryStart(ctx, conn, pgx.TraceQueryStartData{SQL: s.SQL})
	}
	return ctx
}

func (q *queryCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (q *queryCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (q *queryCounter) TraceConnectStart(ctx context.Context, _ pgx.TraceConnectStartData) context.Context {
	return ctx
}

func (q *queryCounter) TraceConnectEnd(_ context.Context, data pgx.TraceConnectEndData) {
	if data.Conn == nil {
		return
	}
	pid := int32(data.Conn.PgConn().PID())
	q.mu.Lock()
	q.pids = append(q.pids, pid)
	q.mu.Unlock()
}

// names returns a copy of the counts by statement name.
func (q *queryCounter) names() map[string]int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return maps.Clone(q.byName)
}

// conns returns a copy of the counts by connection.
func (q *queryCounter) conns() map[int32]int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return maps.Clone(q.byConn)
}

// connPIDs returns the pids of the connections opened so far.
func (q *queryCounter) connPIDs() []int32 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.pids)
}

// statementName is the sqlc name of a statement ("-- name: JobLease
// :many" first), or else its first word.
func statementName(sql string) string {
	sql = strings.TrimSpace(sql)
	if rest, ok := strings.CutPrefix(sql, "-- name: "); ok {
		sql = rest
	}
	if f := strings.Fields(sql); len(f) > 0 {
		return f[0]
	}
	return "(empty)"
}

func open(ctx context.Context, url string, counter *queryCounter) (*pgxpool.Pool, error) {
	return openFor(ctx, url, counter, 0)
}

// spareConns are the connections a producers' pool has beyond one per
// producer: for the client's wake-ups and the run's own statements.
const spareConns = 4

// openFor opens a pool with a connection for each of producers goroutines
// and a few to spare, so that no producer waits for another's connection:
// that wait would be timed as part of its inserts. A pool of pgxpool's
// default size, when that is larger.
func openFor(ctx context.Context, url string, counter *queryCounter, producers int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if producers > 0 {
		cfg.MaxConns = max(cfg.MaxConns, int32(producers+spareConns))
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
func runWorker(pool *pgxpool.Pool, queue string, concurrency int, mws []worker.Middleware, h worker.HandlerFunc[noop]) (stop func() error, err error) {
	return startWorker(pool, worker.Config{Queue: queue, Concurrency: concurrency, Logger: quietLogger(), Middleware: mws}, worker.Handle[noop](h))
}

// startWorker starts a worker; stop shuts it down and waits.
func startWorker(pool *pgxpool.Pool, cfg worker.Config, handlers ...worker.Registration) (stop func() error, err error) {
	w, err := worker.New(pool, cfg, handlers...)
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

// kindNames are the kinds of a run of n kinds: "noop" alone, or "k0",
// "k1", … .
func kindNames(n int) []string {
	if n <= 1 {
		return []string{noop{}.Kind()}
	}
	kinds := make([]string, n)
	for i := range kinds {
		kinds[i] = fmt.Sprintf("k%d", i)
	}
	return kinds
}

// queueNames are the queues of a run of n queues: one of queueName's, or n
// of them numbered.
func queueNames(kind string, n int) []string {
	base := queueName(kind)
	if n <= 1 {
		return []string{base}
	}
	queues := make([]string, n)
	for i := range queues {
		queues[i] = fmt.Sprintf("%s-%d", base, i)
	}
	return queues
}

// spreadWorker starts one no-op worker with a handler for each of kinds,
// working every one of queues; concurrency, when above 0, is shared among
// the queues (the first ones get the remainder), so that a run of many
// queues runs as many handlers at once as a run of one.
func spreadWorker(pool *pgxpool.Pool, queues, kinds []string, concurrency int, poll time.Duration, mws []worker.Middleware, h worker.HandlerFunc[noop]) (stop func() error, err error) {
	cfg := worker.Config{Queues: make(map[string]worker.QueueConfig, len(queues)), PollInterval: poll, Logger: quietLogger(), Middleware: mws}
	for i, q := range queues {
		var qc worker.QueueConfig
		if concurrency > 0 {
			qc.Concurrency = max(concurrency/len(queues), 1)
			if i < concurrency%len(queues) {
				qc.Concurrency++
			}
		}
		cfg.Queues[q] = qc
	}
	regs := make([]worker.Registration, len(kinds))
	for i, k := range kinds {
		regs[i] = worker.Handle[noop](h).With(worker.KindConfig{Kind: k})
	}
	return startWorker(pool, cfg, regs...)
}

// DrainResult is the outcome of Drain.
type DrainResult struct {
	Jobs        int
	Concurrency int
	// Kinds and Queues are how many kinds and queues the jobs were spread
	// over.
	Kinds, Queues int
	Elapsed       time.Duration
	// Statements is what the worker sent to the database meanwhile.
	Statements int64
	// HeapInuse is the worker process's live heap at each tenth of the
	// drain, when Config.Memory is set.
	HeapInuse []uint64
	// StackInuse is the memory of the process's goroutine stacks at the
	// same moments (the worker's runners keep theirs between jobs).
	StackInuse []uint64
}

// PerSecond is the drain rate.
func (r DrainResult) PerSecond() float64 { return float64(r.Jobs) / r.Elapsed.Seconds() }

func (r DrainResult) String() string {
	spread := ""
	if r.Kinds > 1 || r.Queues > 1 {
		spread = fmt.Sprintf(" of %d kind%s in %d queue%s", r.Kinds, plural(r.Kinds), r.Queues, plural(r.Queues))
	}
	s := fmt.Sprintf("drain: %d no-op jobs%s, concurrency %d: %.2fs, %.0f jobs/s, %.1f jobs per statement",
		r.Jobs, spread, r.Concurrency, r.Elapsed.Seconds(), r.PerSecond(), float64(r.Jobs)/float64(max(r.Statements, 1)))
	if len(r.HeapInuse) > 0 {
		s += "; live heap MiB at each tenth:"
		for _, h := range r.HeapInuse {
			s += fmt.Sprintf(" %.1f", float64(h)/(1<<20))
		}
		s += "; stacks MiB:"
		for _, h := range r.StackInuse {
			s += fmt.Sprintf(" %.1f", float64(h)/(1<<20))
		}
	}
	return s
}

// Drain inserts Jobs no-op jobs (not timed), spread round robin over
// Kinds kinds and Queues queues, then times one worker handling all of
// them until the database records every one of them finished.
func Drain(ctx context.Context, cfg Config) (DrainResult, error) {
	cfg.defaults()
	res := DrainResult{Jobs: cfg.Jobs, Concurrency: cfg.Concurrency, Kinds: cfg.Kinds, Queues: cfg.Queues}
	if cfg.Kinds < 1 || cfg.Queues < 1 {
		return res, fmt.Errorf("bench: drain needs at least 1 kind and 1 queue, not %d kinds and %d queues", cfg.Kinds, cfg.Queues)
	}
	counter := &queryCounter{}
	pool, err := open(ctx, cfg.URL, counter)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	queues := queueNames("drain", cfg.Queues)
	kinds := kindNames(cfg.Kinds)
	for _, queue := range queues {
		defer cleanup(pool, queue)
	}
	fill := bar(cfg.Progress, cfg.Jobs, "inserting")
	if err := fillSpread(ctx, pool, queues, kinds, cfg.Jobs, cfg.InsertMiddleware, func(n int) { _ = fill.Add(n) }); err != nil {
		return res, err
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
	handle := func(context.Context, *tasuki.Job[noop]) error {
		handled.Add(1)
		return nil
	}
	var stop func() error
	if len(queues) == 1 && len(kinds) == 1 {
		stop, err = runWorker(pool, queues[0], cfg.Concurrency, cfg.Middleware, handle)
	} else {
		stop, err = spreadWorker(pool, queues, kinds, cfg.Concurrency, 0, cfg.Middleware, handle)
	}
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
			heap, stacks := liveMemory()
			res.HeapInuse, res.StackInuse = append(res.HeapInuse, heap), append(res.StackInuse, stacks)
			nextSample++
		}
		if done >= cfg.Jobs {
			unfinished, err := anyUnfinished(ctx, q, queues)
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
		heap, stacks := liveMemory()
		res.HeapInuse, res.StackInuse = append(res.HeapInuse, heap), append(res.StackInuse, stacks)
	}
	return res, stop()
}

// fillSpread inserts jobs no-op jobs, in batches, job i of kind i mod
// len(kinds) in queue (i div len(kinds)) mod len(queues), so that every
// pair of a kind and a queue gets its share. One kind in one queue goes
// through a Client, as an application with one kind would.
func fillSpread(ctx context.Context, pool *pgxpool.Pool, queues, kinds []string, jobs int, mws []tasuki.InsertMiddleware, added func(int)) error {
	const batch = 50_000
	if len(queues) == 1 && len(kinds) == 1 {
		client, err := tasuki.NewClient[noop](pool, tasuki.ClientConfig{Queue: queues[0], InsertMiddleware: mws})
		if err != nil {
			return err
		}
		payloads := make([]noop, batch)
		for left := jobs; left > 0; {
			n := min(left, batch)
			if _, err := client.InsertMany(ctx, payloads[:n], nil); err != nil {
				return err
			}
			left -= n
			added(n)
		}
		return nil
	}
	ins, err := tasuki.NewInserter(pool, tasuki.ClientConfig{InsertMiddleware: mws})
	if err != nil {
		return err
	}
	opts := make([]*tasuki.InsertOpts, len(queues))
	for i, q := range queues {
		opts[i] = &tasuki.InsertOpts{Queue: q}
	}
	params := make([]tasuki.InsertManyParams, 0, batch)
	for i := 0; i < jobs; {
		params = params[:0]
		for ; i < jobs && len(params) < batch; i++ {
			params = append(params, tasuki.InsertManyParams{
				Payload:    noop{},
				Kind:       kinds[i%len(kinds)],
				InsertOpts: opts[(i/len(kinds))%len(queues)],
			})
		}
		if _, err := ins.InsertMany(ctx, params); err != nil {
			return err
		}
		added(len(params))
	}
	return nil
}

// anyUnfinished reports whether any of queues has a job not finished.
func anyUnfinished(ctx context.Context, q *db.Queries, queues []string) (bool, error) {
	for _, queue := range queues {
		unfinished, err := q.JobAnyUnfinished(ctx, queue)
		if err != nil || unfinished {
			return unfinished, err
		}
	}
	return false, nil
}

func liveMemory() (heap, stacks uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse, m.StackInuse
}

// LatencyResult is the outcome of Latency.
type LatencyResult struct {
	// Jobs is how many jobs were inserted; each ran exactly once.
	Jobs int
	// Producers is how many goroutines inserted them, at once.
	Producers int
	// Rate is the inserts per second asked for, of all producers together.
	Rate int
	// Achieved is the inserts per second reached: Jobs over the time from
	// the start to the return of the last Insert. Below Rate when the
	// inserts could not keep up.
	Achieved float64
	// P50 to Max are percentiles of the time from the start of a job's
	// Insert to the start of its handler: what the caller sees, the
	// insert's own durable commit included.
	P50, P90, P99 time.Duration
	Max           time.Duration
	// InsertP50 and InsertP99 are percentiles of the time Insert itself
	// took (its commit included): the part of the latency spent before
	// the worker could know of the job.
	InsertP50, InsertP99 time.Duration
	// PickupP50 to PickupMax are percentiles of the time from the return
	// of a job's Insert to the start of its handler, 0 when the handler
	// started first (woken by an earlier job's notification, say): the
	// worker's part alone. The commit happened before the return, so this
	// bounds the time from commit to handler start from below, as P50 to
	// Max do from above.
	PickupP50, PickupP99, PickupMax time.Duration
}

func (r LatencyResult) String() string {
	return fmt.Sprintf("latency: %d jobs at %d/s from %d producer%s (reached %.0f/s), insert→handler start: p50 %s, p90 %s, p99 %s, max %s; "+
		"the insert's own commit: p50 %s, p99 %s; Insert's return→handler start: p50 %s, p99 %s, max %s",
		r.Jobs, r.Rate, r.Producers, plural(r.Producers), r.Achieved, round(r.P50), round(r.P90), round(r.P99), round(r.Max),
		round(r.InsertP50), round(r.InsertP99), round(r.PickupP50), round(r.PickupP99), round(r.PickupMax))
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

// insertTimes is when one job's Insert started and returned.
type insertTimes struct {
	id             int64
	sent, returned time.Time
}

// handlerStart is when a job's handler started.
type handlerStart struct {
	id int64
	at time.Time
}

// Latency inserts single jobs at a steady Rate for Duration into a running
// worker, from Producers goroutines at once, and measures, for each job,
// the time from the start of its Insert to the start of its handler. It
// fails if a job ran twice, or did not run within 30 s of the last insert.
func Latency(ctx context.Context, cfg Config) (LatencyResult, error) {
	cfg.defaults()
	res := LatencyResult{Rate: cfg.Rate, Producers: cfg.Producers}
	total := int(cfg.Duration.Seconds() * float64(cfg.Rate))
	if cfg.Rate < 1 || cfg.Producers < 1 || total < 1 {
		return res, fmt.Errorf("bench: latency needs a rate and producers of at least 1 and a duration of at least one insert, not rate %d, %d producers for %s",
			cfg.Rate, cfg.Producers, cfg.Duration)
	}
	pool, err := openFor(ctx, cfg.URL, nil, cfg.Producers)
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
	var starts []handlerStart
	stop, err := runWorker(pool, queue, cfg.Concurrency, nil, func(_ context.Context, job *tasuki.Job[noop]) error {
		at := time.Now()
		mu.Lock()
		starts = append(starts, handlerStart{id: job.ID, at: at})
		mu.Unlock()
		return nil
	})
	if err != nil {
		return res, err
	}
	// Let the worker connect and LISTEN before the clock starts.
	time.Sleep(500 * time.Millisecond)
	if err := warmUp(ctx, pool, client, cfg.Producers); err != nil {
		_ = stop()
		return res, err
	}

	progress := bar(cfg.Progress, total, "latency")
	// Each producer inserts its share at Rate/Producers a second; producer
	// p starts p/Rate after the first, so that together they insert at an
	// even pace, not in bursts of Producers jobs.
	interval := time.Second * time.Duration(cfg.Producers) / time.Duration(cfg.Rate)
	inserts := make([][]insertTimes, cfg.Producers)
	start := time.Now()
	err = together(cfg.Producers, func(p int) error {
		share := total / cfg.Producers
		if p < total%cfg.Producers {
			share++
		}
		if p > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(p) * time.Second / time.Duration(cfg.Rate)):
			}
		}
		tick := time.NewTicker(interval)
		defer tick.Stop()
		mine := make([]insertTimes, 0, share)
		defer func() { inserts[p] = mine }()
		for range share {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
			}
			sent := time.Now()
			job, err := client.Insert(ctx, noop{SentAt: sent.UnixNano()}, nil)
			if err != nil {
				return err
			}
			mine = append(mine, insertTimes{id: job.ID, sent: sent, returned: time.Now()})
			_ = progress.Add(1)
		}
		return nil
	})
	if err != nil {
		_ = stop()
		return res, err
	}
	var last time.Time
	sent := make(map[int64]insertTimes, total)
	for _, mine := range inserts {
		for _, in := range mine {
			sent[in.id] = in
			if in.returned.After(last) {
				last = in.returned
			}
		}
	}
	res.Achieved = float64(total) / last.Sub(start).Seconds()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(starts)
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
	lat := make([]time.Duration, 0, total)
	pickup := make([]time.Duration, 0, total)
	ran := make(map[int64]bool, total)
	for _, s := range starts {
		in, ok := sent[s.id]
		switch {
		case !ok:
			return res, fmt.Errorf("bench: job %d ran, but none of the producers inserted it", s.id)
		case ran[s.id]:
			return res, fmt.Errorf("bench: job %d ran twice", s.id)
		}
		ran[s.id] = true
		lat = append(lat, s.at.Sub(in.sent))
		pickup = append(pickup, max(s.at.Sub(in.returned), 0))
	}
	if len(ran) < total {
		return res, fmt.Errorf("bench: only %d of %d jobs ran within 30 s of the last insert", len(ran), total)
	}
	res.Jobs = len(ran)
	slices.Sort(lat)
	res.P50, res.P90, res.P99 = percentile(lat, 50), percentile(lat, 90), percentile(lat, 99)
	res.Max = lat[len(lat)-1]
	slices.Sort(pickup)
	res.PickupP50, res.PickupP99, res.PickupMax = percentile(pickup, 50), percentile(pickup, 99), pickup[len(pickup)-1]
	durations := make([]time.Duration, 0, total)
	for _, in := range sent {
		durations = append(durations, in.returned.Sub(in.sent))
	}
	slices.Sort(durations)
	res.InsertP50, res.InsertP99 = percentile(durations, 50), percentile(durations, 99)
	return res, nil
}

// warmUp readies a connection for each of producers goroutines: it opens
// it, and inserts a job on it in a transaction that it rolls back, which
// prepares the insert statement there and has the server process load
// what it needs to know of tasuki's table. Done by the first timed
// insert of each connection, that work, by every connection at once,
// makes the slowest percent of a run of 50 producers take hundreds of
// milliseconds, a cost a pool's long-lived connections pay once. The
// rolled-back inserts wake nobody, and leave no job.
func warmUp(ctx context.Context, pool *pgxpool.Pool, client *tasuki.Client[noop], producers int) error {
	// Each connection is held until all are: otherwise one could serve two
	// producers, and leave another connection cold.
	var held sync.WaitGroup
	held.Add(producers)
	err := together(producers, func(int) error {
		conn, err := pool.Acquire(ctx)
		held.Done()
		if err != nil {
			return err
		}
		defer conn.Release()
		defer held.Wait()
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		_, err = client.InsertTx(ctx, tx, noop{}, nil)
		return err
	})
	if err != nil {
		return err
	}
	return client.Flush(ctx)
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
	// UniqueTime is the time as many unique inserts took (each its own
	// key, so each inserts a job), in turns with the plain ones; 0 unless
	// Config.Unique.
	UniqueTime time.Duration
}

func (r InsertResult) String() string {
	single := float64(r.Single) / r.SingleTime.Seconds()
	s := fmt.Sprintf("insert: single, one goroutine: %.0f jobs/s (%d in %.2fs)", single, r.Single, r.SingleTime.Seconds())
	if r.CommitTime > 0 {
		ceiling := float64(r.Single) / r.CommitTime.Seconds()
		s += fmt.Sprintf(", %.0f%% of the %.0f empty durable commits/s this database allows one connection", 100*single/ceiling, ceiling)
	}
	if r.UniqueTime > 0 {
		s += fmt.Sprintf("; unique single: %.0f jobs/s, %.2f× a plain insert's time", float64(r.Single)/r.UniqueTime.Seconds(), r.UniqueTime.Seconds()/r.SingleTime.Seconds())
	}
	return s + fmt.Sprintf("; COPY: %.0f jobs/s (%d in %.2fs)", float64(r.Bulk)/r.BulkTime.Seconds(), r.Bulk, r.BulkTime.Seconds())
}

// Insert times Inserts single inserts from one goroutine (each its own
// transaction, NOTIFY included), then one InsertMany (COPY) of BulkJobs.
// With Unique, as many unique inserts run in turns with the plain ones.
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
		if cfg.Unique {
			start = time.Now()
			for i := range n {
				opts := &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{Key: strconv.Itoa(done + i)}}
				if _, err := client.Insert(ctx, noop{}, opts); err != nil {
					return res, err
				}
			}
			res.UniqueTime += time.Since(start)
		}
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
