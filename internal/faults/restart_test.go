package faults

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// PostgreSQL restarted (pg_ctl restart -m fast: every connection dropped)
// while two worker processes run jobs and a client inserts in a loop that
// retries on error. Workers and client reconnect by themselves; no job
// whose insert succeeded is lost, and none is left pending or running.
//
// Not parallel: the restart drops the connections of every test in this
// binary. Parallel tests start only after the sequential ones are done.
func TestPostgresRestartLosesNoJob(t *testing.T) {
	cluster := testdb.Cluster()
	if cluster == nil {
		t.Skip("TEST_DATABASE_URL is set: restarting a server this test did not start is not its business")
	}
	e := newEnv(t)
	cfg := roleConfig{Concurrency: 10, LeaseMS: 2000, RetryMS: 100}
	var procs []*proc
	for i := range 2 {
		procs = append(procs, startWorker(t, e.workerURL(8), fmt.Sprintf("w%d", i), cfg))
	}

	// The client: a job every 5 ms or so, each retried until it is in. An
	// insert whose commit succeeded but whose answer was lost with the
	// connection is retried too: such a job is in twice, which is what
	// at-least-once insertion with retries means.
	ctx, stopInserting := context.WithCancel(context.Background())
	defer stopInserting()
	var (
		mu       sync.Mutex
		inserted = map[int]int64{} // N → id, for every insert that returned success
		failures int
		firstErr error
	)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ctx.Err() == nil; n++ {
			for ctx.Err() == nil {
				job, err := e.client.Insert(ctx, faultJob{N: n, SleepMS: 100}, nil)
				if err == nil {
					mu.Lock()
					inserted[n] = job.ID
					mu.Unlock()
					break
				}
				mu.Lock()
				failures++
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	insertedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(inserted)
	}
	waitUntil(t, "jobs to be inserted and run", bound, func() bool {
		return insertedCount() >= 100 && e.count(`SELECT count(*) FROM executions`) >= 50
	})

	runningAtRestart := e.count(`SELECT count(*) FROM tasuki_job WHERE status = 'running'`)
	restartStart := time.Now()
	restartServer(t, cluster)
	restartTook := time.Since(restartStart)
	before := insertedCount()
	waitUntil(t, "inserts to go on after the restart", bound, func() bool { return insertedCount() >= before+100 })
	stopInserting()
	wg.Wait()

	e.waitCompleted(e.count(`SELECT count(*) FROM tasuki_job`))
	for _, p := range procs {
		p.signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		assert.Equal(t, 0, p.wait(bound), "worker %s survived the restart and exits cleanly", p.name)
	}

	mu.Lock()
	defer mu.Unlock()
	jobs := e.count(`SELECT count(*) FROM tasuki_job`)
	for n, id := range inserted {
		job := e.job(id)
		require.Equal(t, tasuki.StatusCompleted, job.Status, "job %d (n=%d): %s", id, n, errorsText(job))
		require.Equal(t, n, job.Payload.N)
	}
	assert.Equal(t, 0, e.count(`SELECT count(*) FROM tasuki_job j WHERE NOT EXISTS (SELECT FROM executions x WHERE x.job_id = j.id)`),
		"completed jobs without an execution")
	assert.Equal(t, 0, e.count(`SELECT count(*) FROM tasuki_job WHERE status <> 'completed'`))
	duplicates := e.count(`SELECT count(*) - count(DISTINCT (payload->>'n')) FROM tasuki_job`)
	reruns := e.count(`SELECT count(*) - count(DISTINCT job_id) FROM executions`)
	retried := e.count(`SELECT count(*) FROM tasuki_job WHERE attempts > 1`)
	t.Logf("restart with %d jobs running took %s; %d inserts succeeded (%d jobs stored, %d stored twice by a retried insert), %d insert attempts failed (first: %v); "+
		"all completed; %d executions repeated, %d jobs needed more than one attempt",
		runningAtRestart, restartTook.Round(time.Millisecond), len(inserted), jobs, duplicates, failures, firstErr, reruns, retried)
	assert.Positive(t, failures, "the restart was seen by the client")
}
