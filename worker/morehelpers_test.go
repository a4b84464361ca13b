package worker_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// bound is the generous limit on any single wait in these tests. It only
// keeps a broken test from hanging; nothing is measured against it.
const bound = 60 * time.Second

// newClient returns a client for T; a T without a Kind method inserts jobs
// of kind "task", for the task worker to find.
func newClient[T any](t *testing.T, pool *pgxpool.Pool) *tasuki.Client[T] {
	t.Helper()
	var cfg tasuki.ClientConfig
	if _, err := tasuki.KindOf[T]("", ""); err != nil {
		cfg.Kind = "task"
	}
	c, err := tasuki.NewClient[T](pool, cfg)
	require.NoError(t, err)
	return c
}

func insert[T any](t *testing.T, c *tasuki.Client[T], payload T, opts *tasuki.InsertOpts) int64 {
	t.Helper()
	job, err := c.Insert(context.Background(), payload, opts)
	require.NoError(t, err)
	return job.ID
}

func getJob[T any](t *testing.T, c *tasuki.Client[T], id int64) *tasuki.Job[T] {
	t.Helper()
	job, err := c.Get(context.Background(), id)
	require.NoError(t, err)
	return job
}

// rawJob reads a job's row as stored, lease token included.
func rawJob(t *testing.T, pool *pgxpool.Pool, id int64) *db.TasukiJob {
	t.Helper()
	row, err := db.New(pool).JobGet(context.Background(), id)
	require.NoError(t, err)
	return row
}

// leaseDirect leases jobs the way a worker does, but nobody runs or
// heartbeats them: a worker that died right after leasing.
func leaseDirect(t *testing.T, pool *pgxpool.Pool, queue string, max int, lease time.Duration) []*db.TasukiJob {
	t.Helper()
	rows, err := db.New(pool).JobLease(context.Background(), testdb.Lease(db.JobLeaseParams{
		LeaseUs: lease.Microseconds(),
	}, queue, "task", max))
	require.NoError(t, err)
	return rows
}

// receive waits for a value on ch.
func receive[V any](t *testing.T, ch <-chan V, what string) V {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(bound):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// waitFor waits until ch is closed.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(bound):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// logWatch is a slog.Handler that closes a channel the first time a record
// whose message contains a given text is logged: tests use it to learn that
// the worker reached a point of its life (e.g. started shutting down).
type logWatch struct {
	mu      *sync.Mutex
	watches *[]watch
}

type watch struct {
	text string
	ch   chan struct{}
}

func newLogWatch() *logWatch {
	return &logWatch{mu: new(sync.Mutex), watches: new([]watch)}
}

// on returns a channel closed once a message containing text is logged.
func (h *logWatch) on(text string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := make(chan struct{})
	*h.watches = append(*h.watches, watch{text: text, ch: ch})
	return ch
}

func (h *logWatch) logger() *slog.Logger { return slog.New(h) }

func (h *logWatch) Enabled(context.Context, slog.Level) bool { return true }

func (h *logWatch) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	kept := (*h.watches)[:0]
	for _, w := range *h.watches {
		if strings.Contains(r.Message, w.text) {
			close(w.ch)
			continue
		}
		kept = append(kept, w)
	}
	*h.watches = kept
	return nil
}

func (h *logWatch) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logWatch) WithGroup(string) slog.Handler      { return h }

// retryIn returns a RetryPolicy that always waits d.
func retryIn(d time.Duration) func(int) time.Duration {
	return func(int) time.Duration { return d }
}

// errorsText joins a job's error history, for failure messages.
func errorsText[T any](job *tasuki.Job[T]) string {
	var b strings.Builder
	for _, e := range job.Errors {
		b.WriteString(e.Error)
		b.WriteString("\n")
	}
	return b.String()
}

// listenerTap watches the connections a worker's notification listener
// opens: it learns their backend pids (so a test can find its own listener
// among those of parallel tests) and can hold new ones back, keeping the
// listener disconnected for as long as a test needs.
type listenerTap struct {
	mu   sync.Mutex
	pids []uint32
	gate chan struct{} // while non-nil, listener connections wait for it
}

// newTappedPool returns a pool on a fresh migrated schema, like testdb.New,
// whose connections report to a listenerTap. The listener connects with a
// copy of the pool's connection settings, hooks included.
func newTappedPool(t *testing.T) (*pgxpool.Pool, *listenerTap) {
	t.Helper()
	_, url := testdb.Schema(t)
	return newTappedPoolAt(t, url)
}

// newTappedPoolAt is newTappedPool on the schema of url.
func newTappedPoolAt(t *testing.T, url string) (*pgxpool.Pool, *listenerTap) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = max(cfg.MaxConns, 8)
	tap := &listenerTap{}
	cfg.ConnConfig.AfterConnect = tap.afterConnect
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	testdb.MigrateUp(t, pool)
	return pool, tap
}

func (tap *listenerTap) afterConnect(ctx context.Context, c *pgconn.PgConn) error {
	if c.ParameterStatus("application_name") != "tasuki-listener" {
		return nil
	}
	tap.mu.Lock()
	gate := tap.gate
	tap.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	tap.mu.Lock()
	tap.pids = append(tap.pids, c.PID())
	tap.mu.Unlock()
	return nil
}

// hold keeps new listener connections waiting until release.
func (tap *listenerTap) hold() {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	tap.gate = make(chan struct{})
}

func (tap *listenerTap) release() {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	if tap.gate != nil {
		close(tap.gate)
		tap.gate = nil
	}
}

func (tap *listenerTap) connections() int {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return len(tap.pids)
}

// listening waits until the listener's n-th connection (counting from 1)
// has run LISTEN, and returns its backend pid.
func (tap *listenerTap) listening(t *testing.T, pool *pgxpool.Pool, n int) uint32 {
	t.Helper()
	var pid uint32
	eventually(t, "the worker's listener to LISTEN", func() bool {
		tap.mu.Lock()
		if len(tap.pids) < n {
			tap.mu.Unlock()
			return false
		}
		pid = tap.pids[n-1]
		tap.mu.Unlock()
		var ok bool
		require.NoError(t, pool.QueryRow(context.Background(), `
			SELECT EXISTS (SELECT FROM pg_stat_activity
			               WHERE pid = $1 AND state = 'idle' AND query LIKE '%LISTEN tasuki_jobs%')`,
			int32(pid)).Scan(&ok))
		return ok
	})
	return pid
}

// terminate ends a backend, as a crashed server process or a dropped
// connection would.
func terminate(t *testing.T, pool *pgxpool.Pool, pid uint32) {
	t.Helper()
	var ok bool
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT pg_terminate_backend($1)", int32(pid)).Scan(&ok))
	require.True(t, ok, "backend %d terminated", pid)
	eventually(t, "the backend to exit", func() bool {
		var alive bool
		require.NoError(t, pool.QueryRow(context.Background(),
			"SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)", int32(pid)).Scan(&alive))
		return !alive
	})
}

// batchAsQuery has a test's query tracer see a batch as one statement
// with the batch's statements as its text: while jobs flow, the worker
// sends each statement in a batch behind db.PlanGeneric.
type batchAsQuery struct{ pgx.QueryTracer }

func (b batchAsQuery) TraceBatchStart(ctx context.Context, c *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	sql := make([]string, 0, len(d.Batch.QueuedQueries))
	for _, q := range d.Batch.QueuedQueries {
		sql = append(sql, q.SQL)
	}
	return b.TraceQueryStart(ctx, c, pgx.TraceQueryStartData{SQL: strings.Join(sql, ";\n")})
}

func (batchAsQuery) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (b batchAsQuery) TraceBatchEnd(ctx context.Context, c *pgx.Conn, d pgx.TraceBatchEndData) {
	b.TraceQueryEnd(ctx, c, pgx.TraceQueryEndData{Err: d.Err})
}
