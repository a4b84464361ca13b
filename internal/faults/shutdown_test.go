package faults

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/tasuki"
)

// SIGTERM to a busy worker process, as a deploy or a scale-down sends: it
// lets short handlers (which ignore their context) finish, cancels long ones
// (which respect it) when its 2 s shutdown timeout passes, and exits. The
// interrupted jobs go back to pending with their attempt given back; jobs
// it never started stay pending. Nothing is lost: a new worker runs them
// all.
func TestShutdownUnderLoadGivesBackInterruptedJobs(t *testing.T) {
	t.Parallel()
	const (
		shutdownTimeout = 2 * time.Second
		short, long     = 10, 10
		waiting         = 10 // beyond the worker's concurrency: never started
	)
	e := newEnv(t)
	cfg := roleConfig{Concurrency: short + long, LeaseMS: 5000, ShutdownMS: int(shutdownTimeout.Milliseconds()), RecordEnd: true}
	busy := startWorker(t, e.workerURL(8), "busy", cfg)

	var jobs []faultJob
	for i := range short {
		jobs = append(jobs, faultJob{N: i, SleepMS: 1000}) // ignores its context
	}
	for i := range long {
		jobs = append(jobs, faultJob{N: short + i, SleepMS: 60_000, RespectCtx: true})
	}
	e.insertMany(jobs, nil)
	waitUntil(t, "the worker to be busy", bound, func() bool {
		return e.count(`SELECT count(*) FROM executions`) == short+long
	})
	// Leased after the busy worker's slots are full: it never runs them.
	more := make([]faultJob, waiting)
	for i := range more {
		more[i] = faultJob{N: short + long + i, SleepMS: 10}
	}
	e.insertMany(more, nil)

	sent := time.Now()
	busy.signal(syscall.SIGTERM)
	require.Equal(t, 0, busy.wait(bound), "the worker exits cleanly")
	took := time.Since(sent)
	t.Logf("SIGTERM with %d short and %d long jobs running: exited after %s (shutdown timeout %s)",
		short, long, took.Round(time.Millisecond), shutdownTimeout)
	// It waited for its long handlers as long as its shutdown timeout
	// said, and no longer: far less than their 60 s of work or a lease.
	// The upper bound is generous; it only tells "waited for the
	// timeout" from "waited for the handlers".
	assert.GreaterOrEqual(t, took, shutdownTimeout, "the worker gave its handlers the shutdown timeout")
	assert.Less(t, took, 20*time.Second, "the worker did not wait for its long handlers")
	assert.Len(t, busy.logRecords("shutdown timeout passed"), 1, "the long handlers were canceled")
	assert.Empty(t, busy.logRecords("handlers did not return"), "every handler returned once canceled")

	execs := e.executions()
	for _, id := range e.jobIDs() {
		job := e.job(id)
		x := execs[id]
		switch n := job.Payload.N; {
		case n < short:
			assert.Equal(t, tasuki.StatusCompleted, job.Status, "short job %d finished during the drain", n)
			assert.Equal(t, 1, job.Attempt)
		case n < short+long:
			assert.Equal(t, tasuki.StatusPending, job.Status, "long job %d went back to pending", n)
			assert.Equal(t, 0, job.Attempt, "long job %d: its interrupted attempt was given back", n)
			assert.Empty(t, job.Errors, "long job %d", n)
			assert.Nil(t, job.FinishedAt)
			if assert.Len(t, x, 1) && assert.NotNil(t, x[0].Outcome) {
				assert.Contains(t, *x[0].Outcome, "shut down", "long job %d: its handler saw the shutdown", n)
			}
		default:
			assert.Equal(t, tasuki.StatusPending, job.Status, "waiting job %d", n)
			assert.Equal(t, 0, job.Attempt, "waiting job %d", n)
			assert.Empty(t, x, "waiting job %d never ran", n)
		}
	}

	// Nothing lost: a new worker (its handlers cut short) runs the rest.
	cfg.MaxSleepMS = 10
	next := startWorker(t, e.workerURL(8), "next", cfg)
	e.waitCompleted(short + long + waiting)
	next.signal(syscall.SIGTERM)
	require.Equal(t, 0, next.wait(bound))
	assert.Equal(t, short+long+waiting, e.count(`SELECT count(*) FROM tasuki_job WHERE status = 'completed' AND attempts = 1`),
		"every job completed on its first counted attempt")
	assert.Equal(t, short+2*long+waiting, e.count(`SELECT count(*) FROM executions`), "the long jobs ran twice, the others once")
}
