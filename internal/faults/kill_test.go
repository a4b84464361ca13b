package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/tasuki"
)

// A worker process killed with SIGKILL while its handlers run: no job is
// lost. Another worker runs the killed jobs again once their leases expire,
// with the lost attempt counted and recorded. The recovery time, from the
// kill to every job completed, is logged against the lease duration.
func TestKilledWorkersJobsRunAgain(t *testing.T) {
	t.Parallel()
	const (
		rounds   = 3
		inFlight = 10
		lease    = 2 * time.Second
	)
	e := newEnv(t)
	var recoveries, reruns []time.Duration
	leaseEnds := map[int64]time.Time{}
	for round := range rounds {
		queue := fmt.Sprintf("kill-%d", round)
		cfg := roleConfig{Queue: queue, Concurrency: inFlight, LeaseMS: int(lease.Milliseconds()), RecordEnd: true}
		victim := startWorker(t, e.workerURL(4), fmt.Sprintf("victim-%d", round), cfg)

		jobs := make([]faultJob, inFlight)
		for i := range jobs {
			// Long on the first attempt, so the kill finds them all
			// running; instant when run again, so the recovery time is
			// tasuki's alone.
			jobs[i] = faultJob{N: i, SleepMS: 60_000, FirstAttemptOnly: true}
		}
		e.insertMany(jobs, &tasuki.InsertOpts{Queue: queue})
		waitUntil(t, "the victim to run every job", bound, func() bool {
			return e.count(`SELECT count(*) FROM executions WHERE worker = $1`, victim.name) == inFlight
		})

		rescuer := startWorker(t, e.workerURL(4)+"&application_name=rescuer", fmt.Sprintf("rescuer-%d", round), cfg)
		waitUntil(t, "the rescuer to start", bound, func() bool {
			return e.count(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rescuer'`) > 0
		})

		// The leases as the database holds them at the kill: nobody may
		// run these jobs again before they expire.
		rows, err := e.pool.Query(context.Background(),
			`SELECT id, lease_expires_at FROM tasuki_job WHERE queue = $1 AND status = 'running'`, queue)
		require.NoError(t, err)
		for rows.Next() {
			var id int64
			var at time.Time
			require.NoError(t, rows.Scan(&id, &at))
			leaseEnds[id] = at
		}
		require.NoError(t, rows.Err())

		killed := time.Now()
		victim.kill()
		var firstRerun time.Duration
		waitUntil(t, "the killed jobs to complete", bound, func() bool {
			if firstRerun == 0 && e.count(`SELECT count(*) FROM executions WHERE worker = $1`, rescuer.name) > 0 {
				firstRerun = time.Since(killed)
			}
			return e.count(`SELECT count(*) FROM tasuki_job WHERE queue = $1 AND status = 'completed'`, queue) == inFlight
		})
		recovery := time.Since(killed)
		recoveries, reruns = append(recoveries, recovery), append(reruns, firstRerun)
		t.Logf("round %d: SIGKILL with %d jobs in flight; first rerun after %s, all completed after %s (%.2f × the %s lease)",
			round, inFlight, firstRerun.Round(time.Millisecond), recovery.Round(time.Millisecond), recovery.Seconds()/lease.Seconds(), lease)
		rescuer.kill() // its work is done; the next round starts afresh
	}
	t.Logf("recovery (kill → all %d jobs completed), %d rounds, lease %s: %s", inFlight, rounds, lease, durations(recoveries))
	t.Logf("first rerun after the kill: %s", durations(reruns))

	// Every job: two executions, the victim's and the rescuer's; completed
	// on its second attempt; the lost attempt in its history.
	execs := e.executions()
	ids := e.jobIDs()
	require.Len(t, ids, rounds*inFlight)
	for _, id := range ids {
		job := e.job(id)
		assert.Equal(t, tasuki.StatusCompleted, job.Status, "job %d", id)
		assert.Equal(t, 2, job.Attempt, "job %d: the killed attempt counts", id)
		if assert.Len(t, job.Errors, 1, "job %d: %s", id, errorsText(job)) {
			assert.Equal(t, 1, job.Errors[0].Attempt)
			assert.Contains(t, job.Errors[0].Error, "lease expired")
		}
		x := execs[id]
		if assert.Len(t, x, 2, "job %d executions", id) {
			assert.Contains(t, x[0].Worker, "victim", "job %d", id)
			assert.Nil(t, x[0].FinishedAt, "job %d: the victim never finished it", id)
			assert.Contains(t, x[1].Worker, "rescuer", "job %d", id)
			assert.Equal(t, 2, x[1].Attempt, "job %d", id)
			// A heartbeat between that read and the kill only moved the
			// lease further out: the rerun comes after what was read.
			assert.True(t, x[1].StartedAt.After(leaseEnds[id]), "job %d ran again at %s, before its lease ended at %s",
				id, x[1].StartedAt, leaseEnds[id])
		}
	}
}
