package faults

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// bound is the generous limit on any single wait. It only keeps a broken
// test from hanging; nothing is measured against it.
const bound = 90 * time.Second

// env is one test's schema: tasuki's tables, the executions side table, a
// pool and a client on it.
type env struct {
	t      *testing.T
	schema string
	url    string
	pool   *pgxpool.Pool
	client *tasuki.Client[faultJob]
}

func newEnv(t *testing.T) *env {
	t.Helper()
	schema, url := testdb.Schema(t)
	pool := testdb.Pool(t, url)
	testdb.MigrateUp(t, pool)
	_, err := pool.Exec(context.Background(), executionsDDL)
	require.NoError(t, err)
	client, err := tasuki.NewClient[faultJob](pool, tasuki.ClientConfig{})
	require.NoError(t, err)
	return &env{t: t, schema: schema, url: url, pool: pool, client: client}
}

// workerURL is the connection string for a worker process: the test's
// schema, a pool of maxConns connections.
func (e *env) workerURL(maxConns int) string {
	return fmt.Sprintf("%s&pool_max_conns=%d", e.url, maxConns)
}

func (e *env) insertMany(jobs []faultJob, opts *tasuki.InsertOpts) {
	e.t.Helper()
	n, err := e.client.InsertMany(context.Background(), jobs, opts)
	require.NoError(e.t, err)
	require.EqualValues(e.t, len(jobs), n)
}

// counts returns how many jobs have each status.
func (e *env) counts() map[tasuki.Status]int {
	e.t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT status::text, count(*) FROM tasuki_job GROUP BY status`)
	require.NoError(e.t, err)
	defer rows.Close()
	out := map[tasuki.Status]int{}
	for rows.Next() {
		var s string
		var n int
		require.NoError(e.t, rows.Scan(&s, &n))
		out[tasuki.Status(s)] = n
	}
	require.NoError(e.t, rows.Err())
	return out
}

// waitCompleted waits until n jobs are completed and none is pending or
// running.
func (e *env) waitCompleted(n int) {
	e.t.Helper()
	waitUntil(e.t, fmt.Sprintf("%d jobs completed", n), bound, func() bool {
		c := e.counts()
		return c[tasuki.StatusCompleted] == n && c[tasuki.StatusPending] == 0 && c[tasuki.StatusRunning] == 0
	})
}

// execution is one row of the executions side table.
type execution struct {
	JobID      int64
	Worker     string
	Attempt    int
	StartedAt  time.Time
	FinishedAt *time.Time
	Outcome    *string
}

// executions returns every execution, by job, oldest first.
func (e *env) executions() map[int64][]execution {
	e.t.Helper()
	rows, err := e.pool.Query(context.Background(),
		`SELECT job_id, worker, attempt, started_at, finished_at, outcome FROM executions ORDER BY id`)
	require.NoError(e.t, err)
	defer rows.Close()
	out := map[int64][]execution{}
	for rows.Next() {
		var x execution
		require.NoError(e.t, rows.Scan(&x.JobID, &x.Worker, &x.Attempt, &x.StartedAt, &x.FinishedAt, &x.Outcome))
		out[x.JobID] = append(out[x.JobID], x)
	}
	require.NoError(e.t, rows.Err())
	return out
}

// count runs a query that returns one number.
func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

func (e *env) job(id int64) *tasuki.Job[faultJob] {
	e.t.Helper()
	job, err := e.client.Get(context.Background(), id)
	require.NoError(e.t, err)
	return job
}

// jobIDs returns the ids of every job, in order.
func (e *env) jobIDs() []int64 {
	e.t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT id FROM tasuki_job ORDER BY id`)
	require.NoError(e.t, err)
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		require.NoError(e.t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(e.t, rows.Err())
	return ids
}

// waitUntil polls cond every 20 ms until it holds.
func waitUntil(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func errorsText[T any](job *tasuki.Job[T]) string {
	var b strings.Builder
	for _, e := range job.Errors {
		fmt.Fprintf(&b, "attempt %d: %s\n", e.Attempt, e.Error)
	}
	return b.String()
}

// durations summarises measurements: min, median, max.
func durations(ds []time.Duration) string {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("min %s, median %s, max %s", s[0].Round(time.Millisecond),
		s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

// logBuffer collects a worker's log output; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// capturedLogger returns a debug-level JSON logger and what it wrote.
func capturedLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// quietLogger discards logs unless TASUKI_TEST_LOG is set.
func quietLogger() *slog.Logger {
	if os.Getenv("TASUKI_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
