package faults

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// retryIn finds the wait in a JSON log line, in nanoseconds.
var retryIn = regexp.MustCompile(`"retry_in":(\d+)`)

// PostgreSQL is down for longer than the worker's longest retry wait, then
// comes back: the worker takes up work promptly, not after the rest of a
// long wait. The lease loop, which polls every 50 ms, keeps trying through
// the outage and never waits more than its cap (400 ms ±20 %) between
// tries: that is checked in its logs. The delay from the server accepting
// connections to the handler starting is logged (these machines are too
// noisy to assert on it); `go test ./internal/faults -run Outage -v` shows
// it.
//
// Not parallel: the outage drops the connections of every test in this
// binary.
func TestWorkResumesPromptlyAfterOutage(t *testing.T) {
	cluster := testdb.Cluster()
	if cluster == nil {
		t.Skip("TEST_DATABASE_URL is set: stopping a server this test did not start is not its business")
	}
	e := newEnv(t)
	logger, logs := capturedLogger()
	started := make(chan time.Time, 1)
	w, err := worker.New(e.pool, worker.Config{PollInterval: 50 * time.Millisecond, Logger: logger}, worker.Handle(worker.HandlerFunc[faultJob](func(context.Context, *tasuki.Job[faultJob]) error {
		started <- time.Now()
		return nil
	})))
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		stop()
		assert.NoError(t, <-done)
	}()
	waitUntil(t, "the worker's listener", bound, func() bool {
		return e.count(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tasuki-listener' AND query LIKE '%LISTEN%'`) > 0
	})

	opCtx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	require.NoError(t, cluster.StopServer(opCtx))
	// Longer than the 5 s cap of the old retry waits, so that every loop
	// of the worker is deep in its backoff.
	time.Sleep(7 * time.Second)
	require.NoError(t, cluster.StartServer(opCtx))
	back := time.Now()

	// The client's pool lost its connections too: retry until the insert
	// is in.
	var job *tasuki.Job[faultJob]
	waitUntil(t, "an insert to succeed", bound, func() bool {
		job, err = e.client.Insert(context.Background(), faultJob{N: 1}, nil)
		return err == nil
	})
	inserted := time.Now()
	var at time.Time
	select {
	case at = <-started:
	case <-time.After(bound):
		t.Fatal("the job inserted after the outage never started")
	}
	t.Logf("server accepting again → insert committed: %s; → handler started: %s (job %d)",
		inserted.Sub(back).Round(time.Millisecond), at.Sub(back).Round(time.Millisecond), job.ID)

	var retries []time.Duration
	for _, line := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(line, "leasing jobs failed") {
			continue
		}
		m := retryIn.FindStringSubmatch(line)
		require.NotNil(t, m, "a lease failure says when it retries: %s", line)
		ns, err := strconv.ParseInt(m[1], 10, 64)
		require.NoError(t, err)
		retries = append(retries, time.Duration(ns))
	}
	require.NotEmpty(t, retries, "the lease loop saw the outage")
	for _, d := range retries {
		assert.LessOrEqual(t, d, 480*time.Millisecond, "the lease loop never waits longer than its cap between tries")
	}
}
