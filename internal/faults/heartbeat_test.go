package faults

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// Heartbeats that are slow, or fail, for less than the lease: twice the job
// table is locked (LOCK TABLE … ACCESS EXCLUSIVE) for well under the lease,
// so every heartbeat and lease statement waits; the second time, the
// backend of a heartbeat caught waiting is terminated as well. Two workers
// hold the jobs, so a lease wrongly given up would be taken by the other.
// No job is lost, none runs twice, and no handler is stopped.
func TestSlowAndFailingHeartbeatsWithinTheLease(t *testing.T) {
	t.Parallel()
	const (
		lease     = 4 * time.Second
		heartbeat = time.Second
		lockFor   = 1500 * time.Millisecond
		jobs      = 4
	)
	e := newEnv(t)

	var mu sync.Mutex
	ran := map[int64][]string{}
	var stopped []string
	running := make(chan struct{}, jobs)
	var pools []*trackedPool
	for i := range 2 {
		name := fmt.Sprintf("w%d", i)
		tp := newTrackedPool(t, e.url)
		pools = append(pools, tp)
		w, err := worker.New(tp.Pool, worker.Config{Concurrency: jobs / 2, LeaseDuration: lease, HeartbeatInterval: heartbeat,
			PollInterval: 100 * time.Millisecond, Logger: quietLogger()}, worker.Handle(worker.HandlerFunc[faultJob](func(ctx context.Context, job *tasuki.Job[faultJob]) error {
			mu.Lock()
			ran[job.ID] = append(ran[job.ID], name)
			mu.Unlock()
			running <- struct{}{}
			select {
			case <-time.After(ms(job.Payload.SleepMS)):
				return nil
			case <-ctx.Done():
				mu.Lock()
				stopped = append(stopped, fmt.Sprintf("job %d on %s: %v", job.ID, name, context.Cause(ctx)))
				mu.Unlock()
				return ctx.Err()
			}
		})))
		require.NoError(t, err)
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		t.Cleanup(func() {
			stop()
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-time.After(bound):
				t.Error("worker did not stop")
			}
		})
	}

	// Long enough to span both faults and several heartbeats.
	jobsIn := make([]faultJob, jobs)
	for i := range jobsIn {
		jobsIn[i] = faultJob{N: i, SleepMS: 9000}
	}
	e.insertMany(jobsIn, nil)
	for range jobs {
		select {
		case <-running:
		case <-time.After(bound):
			t.Fatal("jobs did not start")
		}
	}

	// waitingHeartbeat returns the pid of one of the workers' heartbeats
	// waiting for the lock.
	waitingHeartbeat := func() int32 {
		var pid int32
		waitUntil(t, "a heartbeat to wait for the lock", bound, func() bool {
			// Read at each look: the heartbeat may wait on a connection
			// the worker's pool opened after the lock was taken.
			var ours []int32
			for _, tp := range pools {
				p, _ := tp.backends()
				ours = append(ours, p...)
			}
			err := e.pool.QueryRow(context.Background(), `
				SELECT pid FROM pg_stat_activity
				WHERE pid = ANY($1) AND wait_event_type = 'Lock' AND query LIKE '%JobHeartbeatMany%'
				LIMIT 1`, ours).Scan(&pid)
			if err == pgx.ErrNoRows {
				return false
			}
			require.NoError(t, err)
			return true
		})
		return pid
	}

	for round, kill := range []bool{false, true} {
		tx, err := e.pool.Begin(context.Background())
		require.NoError(t, err)
		// A failed test must not end with the lock held: the pool's Close
		// would wait for it until the test binary times out.
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		_, err = tx.Exec(context.Background(), `LOCK TABLE tasuki_job IN ACCESS EXCLUSIVE MODE`)
		require.NoError(t, err)
		lockedAt := time.Now()
		pid := waitingHeartbeat()
		if kill {
			var ok bool
			require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
			require.True(t, ok)
		}
		time.Sleep(time.Until(lockedAt.Add(lockFor)))
		require.NoError(t, tx.Commit(context.Background()))
		t.Logf("round %d: job table locked for %s (lease %s, heartbeat every %s); a heartbeat waited on it%s",
			round, time.Since(lockedAt).Round(time.Millisecond), lease, heartbeat,
			map[bool]string{true: " and its backend was terminated", false: ""}[kill])
		time.Sleep(2 * heartbeat) // heartbeats catch up before the next fault
	}

	e.waitCompleted(jobs)
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, stopped, "no handler was stopped")
	for id, by := range ran {
		assert.Len(t, by, 1, "job %d ran once: %v", id, by)
	}
	for _, id := range e.jobIDs() {
		job := e.job(id)
		assert.Equal(t, 1, job.Attempt, "job %d", id)
		assert.Empty(t, job.Errors, "job %d: %s", id, errorsText(job))
	}
}
