package faults

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// No faults, heavy contention: 20,000 jobs, four worker processes with 200
// handlers between them, half the jobs inserted while the workers run.
// Every job is completed, and handled exactly once.
//
// Not parallel: it keeps both cores busy.
func TestContentionEveryJobExactlyOnce(t *testing.T) {
	const (
		jobs      = 20_000
		processes = 4
		handlers  = 200
	)
	e := newEnv(t)

	batch := make([]faultJob, 0, 2500)
	insert := func(from, to int) {
		for n := from; n < to; n++ {
			batch = append(batch, faultJob{N: n})
			if len(batch) == cap(batch) || n == to-1 {
				e.insertMany(batch, nil)
				batch = batch[:0]
			}
		}
	}
	insert(0, jobs/2)

	start := time.Now()
	var procs []*proc
	for i := range processes {
		// The default 30 s lease: with no faults, nothing may run twice.
		procs = append(procs, startWorker(t, e.workerURL(16), fmt.Sprintf("w%d", i),
			roleConfig{Concurrency: handlers / processes}))
	}
	insert(jobs/2, jobs) // while the workers run: NOTIFY wake-ups under load
	e.waitCompleted(jobs)
	elapsed := time.Since(start)

	for _, p := range procs {
		p.signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		require.Equal(t, 0, p.wait(bound), "worker %s exits cleanly", p.name)
	}

	assert.Equal(t, jobs, e.count(`SELECT count(*) FROM executions`), "executions")
	assert.Equal(t, jobs, e.count(`SELECT count(DISTINCT job_id) FROM executions`), "jobs executed")
	assert.Equal(t, 0, e.count(`SELECT count(*) FROM (SELECT job_id FROM executions GROUP BY job_id HAVING count(*) > 1) d`),
		"jobs executed more than once")
	assert.Equal(t, 0, e.count(`SELECT count(*) FROM tasuki_job WHERE attempts <> 1 OR errors <> '[]'`),
		"jobs with more than one attempt or an error")
	var perWorker []string
	rows, err := e.pool.Query(context.Background(), `SELECT worker, count(*) FROM executions GROUP BY worker ORDER BY worker`)
	require.NoError(t, err)
	for rows.Next() {
		var w string
		var n int
		require.NoError(t, rows.Scan(&w, &n))
		perWorker = append(perWorker, fmt.Sprintf("%s=%d", w, n))
	}
	require.NoError(t, rows.Err())
	t.Logf("%d jobs, %d processes, %d handlers: all completed exactly once in %s (%.0f jobs/s); per worker %v",
		jobs, processes, handlers, elapsed.Round(time.Millisecond), float64(jobs)/elapsed.Seconds(), perWorker)
}
