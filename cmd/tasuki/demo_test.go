package main

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
)

var (
	enqueuedRE  = regexp.MustCompile(`(?m)^\s+enqueued\s+(\d+)$`)
	completedRE = regexp.MustCompile(`(?m)^\s+completed\s+(\d+)$`)
	pendingRE   = regexp.MustCompile(`(?m)^\s+pending\s+(\d+)$`)
	runningRE   = regexp.MustCompile(`(?m)^\s+running\s+(\d+)$`)
	failedRE    = regexp.MustCompile(`(?m)^\s+failed\s+(\d+)$`)
	canceledRE  = regexp.MustCompile(`(?m)^\s+canceled\s+(\d+)$`)
	// queueRE is the summary's line of the demo queue's jobs by status.
	queueRE = regexp.MustCompile(`(?m)^\s+queue "tasuki-demo" now holds: ` +
		`pending (\d+), running (\d+), completed (\d+), failed (\d+), canceled (\d+)$`)
)

// demoQueueCounts are the numbers of the summary's queue line.
type demoQueueCounts struct {
	pending, running, completed, failed, canceled int64
}

func parseDemoQueue(t *testing.T, stdout string) demoQueueCounts {
	t.Helper()
	m := queueRE.FindStringSubmatch(stdout)
	require.NotNil(t, m, "%s not found in:\n%s", queueRE, stdout)
	n := make([]int64, len(m)-1)
	for i, s := range m[1:] {
		var err error
		n[i], err = strconv.ParseInt(s, 10, 64)
		require.NoError(t, err)
	}
	return demoQueueCounts{pending: n[0], running: n[1], completed: n[2], failed: n[3], canceled: n[4]}
}

// parseDemoRun returns the summary's counts of the run's own jobs by
// status, and checks that they account for every job it enqueued.
func parseDemoRun(t *testing.T, stdout string) demoQueueCounts {
	t.Helper()
	c := demoQueueCounts{
		pending:   matchInt(t, pendingRE, stdout),
		running:   matchInt(t, runningRE, stdout),
		completed: matchInt(t, completedRE, stdout),
		failed:    matchInt(t, failedRE, stdout),
		canceled:  matchInt(t, canceledRE, stdout),
	}
	assert.Equal(t, matchInt(t, enqueuedRE, stdout), c.pending+c.running+c.completed+c.failed+c.canceled,
		"the run's jobs by status must add up to those it enqueued; stdout:\n%s", stdout)
	assert.NotContains(t, stdout, "deleted")
	return c
}

// requireEveryJobCompleted checks, for a demo run on a queue of its own,
// that every job the demo enqueued is in the database and completed: with
// the default shutdown timeout and concurrency, none is lost, left pending
// or left running.
func requireEveryJobCompleted(t *testing.T, stdout string) {
	t.Helper()
	enqueued := matchInt(t, enqueuedRE, stdout)
	require.Positive(t, enqueued, "stdout:\n%s", stdout)
	want := demoQueueCounts{completed: enqueued}
	assert.Equal(t, want, parseDemoQueue(t, stdout), "the queue after the demo; stdout:\n%s", stdout)
	assert.Equal(t, want, parseDemoRun(t, stdout), "the run's jobs; stdout:\n%s", stdout)
}

// requireDemoSummary checks that a demo run succeeded and that its summary
// shows jobs enqueued and completed.
func requireDemoSummary(t *testing.T, r result) {
	t.Helper()
	require.Zero(t, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	assert.Contains(t, r.stdout, "demo summary after")
	assert.Positive(t, matchInt(t, enqueuedRE, r.stdout))
	assert.Positive(t, matchInt(t, completedRE, r.stdout))
	// The live line and the handler's logs.
	assert.Regexp(t, `(?m)^\[\s*\d+s\] enqueued \d+ \| pending \d+ \| running \d+ \| completed \d+`, r.stdout)
	assert.Contains(t, r.stderr, `msg="job start"`)
	assert.Contains(t, r.stderr, `msg="job end"`)
	// The worker waited for its jobs: none is left running.
	assert.Contains(t, r.stdout, "running 0,")
	// Each test's demo has a queue of its own, kept up with.
	requireEveryJobCompleted(t, r.stdout)
}

func TestDemo(t *testing.T) {
	t.Parallel()
	_, url := testdb.Schema(t)
	testdb.MigrateUp(t, testdb.Pool(t, url))

	r := runCLI(t, url, "demo", "--duration", "3s", "--concurrency", "50")
	requireDemoSummary(t, r)
	assert.Contains(t, r.stderr, "using database")
	assert.NotContains(t, r.stderr, "throwaway")
}

// TestDemoThrowaway runs the demo as a user without a database would: on
// a throwaway cluster, which must be gone once the demo exits.
func TestDemoThrowaway(t *testing.T) {
	t.Parallel()
	if testdb.Cluster() == nil {
		t.Skip("TEST_DATABASE_URL is set; PostgreSQL server binaries may be missing")
	}
	r := runCLI(t, "", "demo", "--duration", "2s")
	requireDemoSummary(t, r)
	assert.Contains(t, r.stderr, "starting a throwaway PostgreSQL cluster")
	m := regexp.MustCompile(`msg="throwaway cluster ready" .*dir=(\S+)`).FindStringSubmatch(r.stderr)
	require.NotNil(t, m, "stderr:\n%s", r.stderr)
	_, err := os.Stat(m[1])
	assert.True(t, os.IsNotExist(err), "the cluster's directory %s is left behind (%v)", m[1], err)
}

// TestDemoAccountsForEveryJob runs short demos whose duration is a
// multiple of the producer's pace, so that the producer's last insert and
// the stop fall at the same moment: the job inserted then must be run like
// every other, not left pending in the queue.
func TestDemoAccountsForEveryJob(t *testing.T) {
	t.Parallel()
	for i := range 4 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			_, url := testdb.Schema(t)
			testdb.MigrateUp(t, testdb.Pool(t, url))
			r := runCLI(t, url, "demo", "--duration", "1s")
			require.Zero(t, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
			requireEveryJobCompleted(t, r.stdout)
		})
	}
}

// TestDemoBacklog runs a demo whose worker cannot keep up: the jobs it
// did not start before it stopped are reported as pending, and every job
// enqueued is counted once.
func TestDemoBacklog(t *testing.T) {
	t.Parallel()
	_, url := testdb.Schema(t)
	testdb.MigrateUp(t, testdb.Pool(t, url))
	// One job at a time: the jobs of 1 s of producing sleep 16 s in all.
	r := runCLI(t, url, "demo", "--duration", "1s", "--concurrency", "1")
	require.Zero(t, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	run := parseDemoRun(t, r.stdout)
	assert.Positive(t, run.pending, "stdout:\n%s", r.stdout)
	assert.Positive(t, run.completed, "stdout:\n%s", r.stdout)
	assert.Zero(t, run.running, "stdout:\n%s", r.stdout)
	assert.Equal(t, run, parseDemoQueue(t, r.stdout), "stdout:\n%s", r.stdout)
	assert.Contains(t, r.stderr, "jobs not started in time stay pending")
}

func TestDemoWithoutSchema(t *testing.T) {
	t.Parallel()
	_, url := testdb.Schema(t)
	r := runCLI(t, url, "demo", "--duration", "1s")
	require.NotZero(t, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	assert.Contains(t, r.stderr, "\ntasuki: the tasuki schema is missing")
	assert.Contains(t, r.stderr, "migrate up")
}

func TestDemoRejectsBadFlags(t *testing.T) {
	t.Parallel()
	line := requireOneLineError(t, runCLI(t, "", "demo", "--duration", "-1s"))
	assert.Contains(t, line, "--duration -1s")
	line = requireOneLineError(t, runCLI(t, "", "demo", "--concurrency", "0"))
	assert.Contains(t, line, "--concurrency 0")
}

// startDemo starts the demo without a duration and returns once its
// handler has started a job, with its stdout and stderr so far.
func startDemo(t *testing.T, url string) (*exec.Cmd, *syncBuffer, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(cliPath, "demo", "--database-url", url)
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	waitFor(t, stderr, `msg="job start"`)
	return cmd, stdout, stderr
}

// waitFor waits up to 30 s for text to appear in b.
func waitFor(t *testing.T, b *syncBuffer, text string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(b.String(), text) {
		require.True(t, time.Now().Before(deadline), "%q did not appear in:\n%s", text, b.String())
		time.Sleep(20 * time.Millisecond)
	}
}

// waitExit waits up to 30 s for cmd to exit.
func waitExit(t *testing.T, cmd *exec.Cmd) *os.ProcessState {
	t.Helper()
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the demo did not exit")
	}
	return cmd.ProcessState
}

func TestDemoStopsOnSignal(t *testing.T) {
	t.Parallel()
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			_, url := testdb.Schema(t)
			testdb.MigrateUp(t, testdb.Pool(t, url))
			cmd, stdout, stderr := startDemo(t, url)

			require.NoError(t, cmd.Process.Signal(sig))
			state := waitExit(t, cmd)
			r := result{stdout: stdout.String(), stderr: stderr.String(), code: state.ExitCode()}
			assert.Contains(t, r.stderr, `reason=interrupted`)
			// Stopped gracefully: the jobs it had started were finished,
			// and so was every job enqueued before the signal.
			assert.Positive(t, matchInt(t, completedRE, r.stdout))
			assert.Contains(t, r.stdout, "running 0,")
			requireEveryJobCompleted(t, r.stdout)
			assert.Zero(t, r.code, "stderr:\n%s", r.stderr)
		})
	}
}

// TestDemoSecondInterrupt checks that a second Ctrl-C ends the demo at
// once, without waiting for its running jobs.
func TestDemoSecondInterrupt(t *testing.T) {
	t.Parallel()
	_, url := testdb.Schema(t)
	testdb.MigrateUp(t, testdb.Pool(t, url))
	cmd, stdout, stderr := startDemo(t, url)

	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	waitFor(t, stderr, "demo stopping")
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	state := waitExit(t, cmd)
	assert.False(t, state.Success())
	assert.NotContains(t, stdout.String(), "demo summary")
}

// syncBuffer is a bytes.Buffer that a running command writes to while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
