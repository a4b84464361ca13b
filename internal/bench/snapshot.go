package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/tasuki"
)

// The snapshot run's defaults for Config.Concurrency and Config.Rate: a
// modest worker at a steady, sustainable load, so that what changes over
// the run is the table, not the load.
const (
	SnapshotConcurrency = 32
	SnapshotRate        = 400
)

// snapshotProducers is the most goroutines the snapshot run inserts from:
// one goroutine's durable commits cannot keep up a few hundred inserts a
// second on every disk.
const snapshotProducers = 8

func (c *Config) snapshotDefaults() {
	if c.Concurrency == 0 {
		c.Concurrency = SnapshotConcurrency
	}
	if c.Rate == 0 {
		c.Rate = SnapshotRate
	}
	if c.Warmup == 0 {
		c.Warmup = time.Minute
	}
	if c.Baseline == 0 {
		c.Baseline = time.Minute
	}
	if c.Hold == 0 {
		c.Hold = 15 * time.Minute
	}
	if c.After == 0 {
		c.After = 2 * time.Minute
	}
	if c.MinuteLength == 0 {
		c.MinuteLength = time.Minute
	}
	c.defaults()
}

// SnapshotMinute is one line of the snapshot run: the baseline period as a
// whole, a minute of the hold, or a minute after it.
type SnapshotMinute struct {
	// Label is "warm-up", "before", then "1", "2", … counted from the moment the
	// transaction opened, then "after 1", "after 2", … from its end.
	Label string
	// Length is the period's length (the last minute of a phase may be
	// short).
	Length time.Duration
	// Started is the number of handlers that started in the period; P50
	// and P99 are their times from the start of Insert to the start of the
	// handler (zero when none started).
	Started  int
	P50, P99 time.Duration
	// Completed and Inserted are the handlers that returned and the
	// inserts that committed in the period.
	Completed, Inserted int
	// Depth is the jobs inserted and not yet started at the period's end,
	// counted by the run itself: a count in the database would read the
	// pending index past every dead entry the snapshot keeps, and load
	// the database it measures.
	Depth int64
	// DeadTuples is tasuki_job's n_dead_tup at the period's end, as the
	// statistics system had it (it lags by a second or more).
	DeadTuples int64
	// ScanPages is the number of shared buffers (hit and read) the pending
	// index scan of a lease visited at the period's end, ScanTime its
	// execution time and ScanBuffers the Buffers line of its EXPLAIN; set
	// with Config.Explain only.
	ScanPages   int64
	ScanTime    time.Duration
	ScanBuffers string
}

// CompletedPerSecond is the period's rate of handlers returned.
func (m SnapshotMinute) CompletedPerSecond() float64 {
	return float64(m.Completed) / m.Length.Seconds()
}

// InsertedPerSecond is the period's rate of inserts.
func (m SnapshotMinute) InsertedPerSecond() float64 {
	return float64(m.Inserted) / m.Length.Seconds()
}

// snapshotHeader names the columns of SnapshotMinute.String.
const snapshotHeader = "snapshot: minute   started       p50       p99  completed/s  inserted/s   depth  n_dead_tup"

func (m SnapshotMinute) String() string {
	p50, p99 := "-", "-"
	if m.Started > 0 {
		p50, p99 = short(m.P50).String(), short(m.P99).String()
	}
	s := fmt.Sprintf("snapshot: %-8s %7d %9s %9s %12.1f %11.1f %7d %11d",
		m.Label, m.Started, p50, p99, m.CompletedPerSecond(), m.InsertedPerSecond(), m.Depth, m.DeadTuples)
	if m.ScanBuffers != "" {
		s += fmt.Sprintf("  lease scan: %d pages in %s (%s)", m.ScanPages, m.ScanTime.Round(time.Microsecond), m.ScanBuffers)
	}
	return s
}

// short rounds d to three or four significant digits, so that a column of
// latencies from microseconds to minutes stays readable.
func short(d time.Duration) time.Duration {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond)
	case d < time.Second:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(10 * time.Millisecond)
	}
}

// SnapshotResult is the outcome of Snapshot.
type SnapshotResult struct {
	Rate, Concurrency int
	// Xid is the held transaction's id; Hold how long it was held.
	Xid  int64
	Hold time.Duration
	// Minutes are the lines printed, in order.
	Minutes []SnapshotMinute
}

func (r SnapshotResult) String() string {
	s := fmt.Sprintf("snapshot: %d/s into a worker of concurrency %d, a REPEATABLE READ transaction (xid %d) idle for %s",
		r.Rate, r.Concurrency, r.Xid, r.Hold.Round(time.Second))
	var before, worst, last *SnapshotMinute
	var endOfHold *SnapshotMinute
	for i := range r.Minutes {
		m := &r.Minutes[i]
		switch {
		case m.Label == "warm-up":
		case m.Label == "before":
			before = m
		case strings.HasPrefix(m.Label, "after"):
			last = m
		default:
			endOfHold = m
			if m.Started > 0 && (worst == nil || m.P99 > worst.P99) {
				worst = m
			}
		}
	}
	if before == nil || endOfHold == nil {
		return s
	}
	s += fmt.Sprintf(": p99 before %s", short(before.P99))
	if worst != nil {
		s += fmt.Sprintf(", worst held %s (minute %s)", short(worst.P99), worst.Label)
	}
	held, over50, over99 := 0, 0, 0
	for _, m := range r.Minutes {
		if m.Label == "warm-up" || m.Label == "before" || strings.HasPrefix(m.Label, "after") {
			continue
		}
		held++
		if m.P50 > 3*before.P50 {
			over50++
		}
		if m.P99 > 3*before.P99 {
			over99++
		}
	}
	s += fmt.Sprintf(", above 3× before in %d of %d held minutes (p50 in %d)", over99, held, over50)
	if last != nil {
		s += fmt.Sprintf(", last after %s", short(last.P99))
	}
	s += fmt.Sprintf("; n_dead_tup before %d, end of hold %d", before.DeadTuples, endOfHold.DeadTuples)
	if last != nil {
		s += fmt.Sprintf(", end %d", last.DeadTuples)
	}
	if before.ScanBuffers != "" {
		s += fmt.Sprintf("; lease scan pages before %d, end of hold %d", before.ScanPages, endOfHold.ScanPages)
		if last != nil {
			s += fmt.Sprintf(", end %d", last.ScanPages)
		}
	}
	return s
}

// tally collects what happens between two lines.
type tally struct {
	mu        sync.Mutex
	latencies []time.Duration
	completed atomic.Int64
	inserted  atomic.Int64
}

func (t *tally) started(d time.Duration) {
	t.mu.Lock()
	t.latencies = append(t.latencies, d)
	t.mu.Unlock()
}

// take returns what was collected since the last take and starts afresh.
func (t *tally) take() (latencies []time.Duration, completed, inserted int) {
	t.mu.Lock()
	latencies, t.latencies = t.latencies, nil
	t.mu.Unlock()
	return latencies, int(t.completed.Swap(0)), int(t.inserted.Swap(0))
}

// Snapshot measures the queue while an old transaction holds back vacuum.
// A worker of Concurrency runs 1 ms jobs that producers insert, one per
// Insert, at a steady Rate. After Baseline, a session on a connection of
// its own opens a REPEATABLE READ transaction, takes an xid and a
// snapshot by reading tasuki_job, and stays idle in transaction for Hold;
// then it rolls back and the run goes on for After. No row version that
// dies after that snapshot can be removed while it is held, so every
// leased and finished job leaves dead versions in the table and dead
// entries in the pending index that each lease walks past.
//
// A line goes to out as each period ends: the baseline as a whole, then
// every MinuteLength of the hold and after it, with insert→handler-start
// percentiles (as in Latency), completed and inserted per second, the
// jobs inserted and not yet started, and tasuki_job's n_dead_tup; with
// Explain, the
// pages a lease's index scan visited. out may be nil.
func Snapshot(ctx context.Context, cfg Config, out io.Writer) (SnapshotResult, error) {
	cfg.snapshotDefaults()
	if out == nil {
		out = io.Discard
	}
	res := SnapshotResult{Rate: cfg.Rate, Concurrency: cfg.Concurrency}
	pool, err := open(ctx, cfg.URL, nil)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	queue := queueName("snapshot")
	defer cleanup(pool, queue)
	// The producers and the lines' statements have pools of their own,
	// so that neither waits for a connection the worker's handlers hold.
	producers := min(snapshotProducers, max(1, cfg.Rate/50))
	insertPool, err := openSized(ctx, cfg.URL, int32(producers))
	if err != nil {
		return res, err
	}
	defer insertPool.Close()
	watchPool, err := openSized(ctx, cfg.URL, 1)
	if err != nil {
		return res, err
	}
	defer watchPool.Close()
	w := &watcher{q: db.New(watchPool), pool: watchPool, queue: queue, explain: cfg.Explain}

	client, err := tasuki.NewClient[noop](insertPool, tasuki.ClientConfig{Queue: queue})
	if err != nil {
		return res, err
	}
	t := &tally{}
	stopWorker, err := runWorker(pool, queue, cfg.Concurrency, nil, func(_ context.Context, job *tasuki.Job[noop]) error {
		t.started(time.Since(time.Unix(0, job.Payload.SentAt)))
		time.Sleep(time.Millisecond)
		t.completed.Add(1)
		return nil
	})
	if err != nil {
		return res, err
	}
	workerStopped := false
	defer func() {
		if !workerStopped {
			_ = stopWorker()
		}
	}()
	// Let the worker connect and LISTEN before the clock starts.
	time.Sleep(500 * time.Millisecond)

	runCtx, stopProducers := context.WithCancel(ctx)
	defer stopProducers()
	failed := make(chan error, producers)
	var wg sync.WaitGroup
	for i := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := produce(runCtx, client, cfg.Rate, producers, i, &t.inserted); err != nil {
				failed <- err
			}
		}()
	}
	defer wg.Wait()
	defer stopProducers()

	// period waits until end, then writes the line of the time since the
	// line before.
	lastTake := time.Now()
	var insertedAll, startedAll int64
	period := func(label string, end time.Time) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-failed:
			return fmt.Errorf("insert: %w", err)
		case <-time.After(time.Until(end)):
		}
		latencies, completed, inserted := t.take()
		now := time.Now()
		m := SnapshotMinute{Label: label, Length: now.Sub(lastTake), Started: len(latencies), Completed: completed, Inserted: inserted}
		lastTake = now
		insertedAll += int64(inserted)
		startedAll += int64(len(latencies))
		m.Depth = insertedAll - startedAll
		if len(latencies) > 0 {
			slices.Sort(latencies)
			m.P50, m.P99 = percentile(latencies, 50), percentile(latencies, 99)
		}
		if err := w.look(ctx, &m); err != nil {
			return err
		}
		res.Minutes = append(res.Minutes, m)
		_, err := fmt.Fprintln(out, m)
		return err
	}
	// minutes writes one line per MinuteLength from start for length, the
	// last one short if need be.
	minutes := func(prefix string, start time.Time, length time.Duration) error {
		end := start.Add(length)
		for i := 1; ; i++ {
			periodEnd := start.Add(time.Duration(i) * cfg.MinuteLength)
			if periodEnd.After(end) {
				periodEnd = end
			}
			if err := period(prefix+strconv.Itoa(i), periodEnd); err != nil {
				return err
			}
			if !periodEnd.Before(end) {
				return nil
			}
		}
	}

	if _, err := fmt.Fprintln(out, snapshotHeader); err != nil {
		return res, err
	}
	t.take() // the handlers of the worker's start, if any
	lastTake = time.Now()
	if err := period("warm-up", lastTake.Add(cfg.Warmup)); err != nil {
		return res, err
	}
	if err := period("before", lastTake.Add(cfg.Baseline)); err != nil {
		return res, err
	}
	hold, err := holdSnapshot(ctx, cfg.URL)
	if err != nil {
		return res, err
	}
	res.Xid = hold.xid
	held := time.Now()
	err = minutes("", held, cfg.Hold)
	if endErr := hold.end(); err == nil {
		err = endErr
	}
	res.Hold = time.Since(held)
	if err != nil {
		return res, err
	}
	if err := minutes("after ", time.Now(), cfg.After); err != nil {
		return res, err
	}
	stopProducers()
	wg.Wait()
	workerStopped = true
	return res, stopWorker()
}

func openSized(ctx context.Context, url string, conns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = conns
	return pgxpool.NewWithConfig(ctx, cfg)
}

// produce inserts single jobs at rate/of per second until ctx ends, the
// i-th of `of` goroutines that share the rate, each offset by its share
// of the interval. A producer that falls behind catches up, but by no
// more than a second's worth, so that a stall does not end in a burst.
func produce(ctx context.Context, client *tasuki.Client[noop], rate, of, i int, inserted *atomic.Int64) error {
	interval := time.Duration(float64(time.Second) * float64(of) / float64(rate))
	next := time.Now().Add(time.Duration(i) * interval / time.Duration(of))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := time.Now()
		if d := next.Sub(now); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
			}
		} else if d < -time.Second {
			next = now
		}
		sent := time.Now()
		if _, err := client.Insert(ctx, noop{SentAt: sent.UnixNano()}, nil); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		inserted.Add(1)
		next = next.Add(interval)
	}
}

// heldSnapshot is the idle transaction of the snapshot run.
type heldSnapshot struct {
	conn *pgx.Conn
	tx   pgx.Tx
	xid  int64
}

// holdSnapshot opens the transaction on a connection of its own and takes
// its xid and snapshot; end rolls it back and closes the connection.
func holdSnapshot(ctx context.Context, url string) (*heldSnapshot, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("connect the snapshot session: %w", err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		_ = conn.Close(context.Background())
		return nil, fmt.Errorf("begin the snapshot transaction: %w", err)
	}
	row, err := db.New(tx).BenchSnapshotHold(ctx)
	if err != nil {
		_ = conn.Close(context.Background())
		return nil, fmt.Errorf("take the snapshot: %w", err)
	}
	return &heldSnapshot{conn: conn, tx: tx, xid: row.Xid}, nil
}

func (h *heldSnapshot) end() error {
	// Not the run's context: a canceled run must still end the
	// transaction, or the database keeps its dead rows until the
	// connection drops.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := h.tx.Rollback(ctx)
	if closeErr := h.conn.Close(ctx); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("end the snapshot transaction: %w", err)
	}
	return nil
}

// watcher reads the database's side of each line.
type watcher struct {
	q       *db.Queries
	pool    *pgxpool.Pool
	queue   string
	explain bool
	// noFlush is set once the server turned out to lack
	// pg_stat_force_next_flush (before PostgreSQL 15).
	noFlush bool
}

func (w *watcher) look(ctx context.Context, m *SnapshotMinute) error {
	var err error
	if !w.noFlush {
		var pgErr *pgconn.PgError
		err := w.q.BenchStatFlush(ctx)
		switch {
		case errors.As(err, &pgErr) && pgErr.Code == "42883": // undefined_function
			w.noFlush = true
		case err != nil:
			return fmt.Errorf("flush statistics: %w", err)
		}
	}
	if m.DeadTuples, err = w.q.BenchJobDeadTuples(ctx); err != nil {
		return fmt.Errorf("dead tuples: %w", err)
	}
	if !w.explain {
		return nil
	}
	conn, err := w.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	plan := &planRecorder{DBTX: conn}
	if _, err := db.New(plan).BenchExplainPendingScan(ctx, w.queue); err != nil {
		return fmt.Errorf("explain the lease scan: %w", err)
	}
	m.ScanBuffers, m.ScanPages, m.ScanTime = readPlan(plan.lines)
	return nil
}

// planRecorder is a db.DBTX that keeps the text of the rows its queries
// return. sqlc cannot type the output of EXPLAIN, so its generated code
// scans each row into nothing; the recorder keeps the line instead.
type planRecorder struct {
	db.DBTX
	lines []string
}

func (p *planRecorder) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := p.DBTX.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return &planRows{Rows: rows, p: p}, nil
}

type planRows struct {
	pgx.Rows
	p *planRecorder
}

func (r *planRows) Scan(dest ...any) error {
	if len(dest) > 0 {
		return r.Rows.Scan(dest...)
	}
	for _, v := range r.Rows.RawValues() {
		r.p.lines = append(r.p.lines, string(v))
	}
	return nil
}

// readPlan finds, in the text of EXPLAIN (ANALYZE, BUFFERS), the Buffers
// line of the top node (the first one: the planner's own comes after the
// plan, under "Planning:"), the pages it counts and the execution time.
func readPlan(lines []string) (buffers string, pages int64, took time.Duration) {
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if rest, ok := strings.CutPrefix(l, "Buffers: "); ok && buffers == "" {
			buffers = rest
			for _, f := range strings.Fields(rest) {
				for _, key := range []string{"hit=", "read="} {
					if v, ok := strings.CutPrefix(f, key); ok {
						n, _ := strconv.ParseInt(v, 10, 64)
						pages += n
					}
				}
			}
		}
		if rest, ok := strings.CutPrefix(l, "Execution Time: "); ok {
			ms, _ := strconv.ParseFloat(strings.TrimSuffix(rest, " ms"), 64)
			took = time.Duration(ms * float64(time.Millisecond))
		}
	}
	return buffers, pages, took
}
