package worker_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

type task struct {
	N    int    `json:"n"`
	Mode string `json:"mode,omitempty"`
}

func (task) Kind() string { return "task" }

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("TASUKI_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(discard{}, nil))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// running starts w.Run in the background and returns a function that stops
// it and waits for Run to return.
func running(t *testing.T, w *worker.Worker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(2 * time.Minute):
				t.Fatal("worker did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newWorker[T any](t *testing.T, pool *pgxpool.Pool, h worker.HandlerFunc[T], cfg worker.Config) *worker.Worker {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	w, err := worker.New(pool, cfg, worker.Handle[T](h))
	require.NoError(t, err)
	return w
}

// eventually polls cond until it holds; the generous bound only keeps a
// broken test from hanging, it measures nothing.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, time.Minute, what, cond)
}

// eventuallyWithin is eventually with its own bound, for a condition that
// takes most of a minute by design. The bound only keeps a broken test
// from hanging.
func eventuallyWithin(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func jobStatus[T any](t *testing.T, c *tasuki.Client[T], id int64) tasuki.Status {
	t.Helper()
	job, err := c.Get(context.Background(), id)
	require.NoError(t, err)
	return job.Status
}

func countStatus(t *testing.T, pool *pgxpool.Pool, status tasuki.Status) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM tasuki_job WHERE status = $1", string(status)).Scan(&n))
	return n
}
