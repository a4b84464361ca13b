package faults

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/tasuki"
)

// A worker process frozen with SIGSTOP past its lease (a stop-the-world
// pause, a VM migration, a debugger), then resumed with SIGCONT: meanwhile
// another worker has taken the job and completed it. The frozen worker's
// late completion is refused (fencing by lease token), and the job's final
// state is the second worker's: two executions, completed once, and a
// history that shows the lease-expired attempt.
func TestFrozenWorkersLateCompletionIsRefused(t *testing.T) {
	t.Parallel()
	const lease = 2 * time.Second
	e := newEnv(t)
	cfg := roleConfig{Concurrency: 1, LeaseMS: int(lease.Milliseconds()), RecordEnd: true}
	frozen := startWorker(t, e.workerURL(4), "frozen", cfg)

	// Its handler sleeps through the freeze, ignoring its context, so it
	// returns "completed" the moment the process resumes.
	job, err := e.client.Insert(context.Background(), faultJob{N: 1, SleepMS: 1000, FirstAttemptOnly: true}, nil)
	require.NoError(t, err)
	waitUntil(t, "the first worker to start the job", bound, func() bool {
		return e.count(`SELECT count(*) FROM executions WHERE worker = 'frozen'`) == 1
	})
	frozen.signal(syscall.SIGSTOP)
	stoppedAt := time.Now()
	before, err := db.New(e.pool).JobGet(context.Background(), job.ID)
	require.NoError(t, err)

	second := startWorker(t, e.workerURL(4), "second", cfg)
	e.waitCompleted(1)
	t.Logf("the second worker completed the job %s after the freeze (lease %s)",
		time.Since(stoppedAt).Round(time.Millisecond), lease)
	completed, err := db.New(e.pool).JobGet(context.Background(), job.ID)
	require.NoError(t, err)
	assert.NotEqual(t, before.LeaseToken, completed.LeaseToken)

	// Resume the frozen worker, then stop it: its final flush writes every
	// outcome it still holds, so whatever it was going to write has been
	// tried when it exits.
	frozen.signal(syscall.SIGCONT)
	waitUntil(t, "the frozen worker's handler to return", bound, func() bool {
		return e.count(`SELECT count(*) FROM executions WHERE worker = 'frozen' AND finished_at IS NOT NULL`) == 1
	})
	frozen.signal(syscall.SIGTERM)
	require.Equal(t, 0, frozen.wait(bound), "the resumed worker shuts down cleanly")
	second.signal(syscall.SIGTERM)
	require.Equal(t, 0, second.wait(bound))

	after, err := db.New(e.pool).JobGet(context.Background(), job.ID)
	require.NoError(t, err)
	assert.Equal(t, completed, after, "the frozen worker changed nothing")

	final := e.job(job.ID)
	assert.Equal(t, tasuki.StatusCompleted, final.Status)
	assert.Equal(t, 2, final.Attempt)
	if assert.Len(t, final.Errors, 1, errorsText(final)) {
		assert.Equal(t, 1, final.Errors[0].Attempt)
		assert.Contains(t, final.Errors[0].Error, "lease expired")
	}
	x := e.executions()[job.ID]
	if assert.Len(t, x, 2) {
		assert.Equal(t, "frozen", x[0].Worker)
		assert.Equal(t, 1, x[0].Attempt)
		assert.Equal(t, "second", x[1].Worker)
		assert.Equal(t, 2, x[1].Attempt)
		assert.True(t, x[1].FinishedAt.Before(*x[0].FinishedAt), "the frozen handler returned after the second worker's")
	}

	// How the frozen worker learned it had lost the job: either its
	// outcome reached the database and was refused by the lease token, or
	// a heartbeat found the lease gone first and the outcome was dropped.
	// Both happen, depending on which goroutine runs first on SIGCONT.
	if refused := frozen.logRecords("outcomes refused"); len(refused) > 0 {
		t.Logf("the frozen worker's late completion reached the database and was refused by its lease token")
	} else {
		t.Logf("the frozen worker's heartbeat found its lease gone before it wrote the outcome; it dropped it")
	}
	// Either way, the database refuses any write under the frozen lease.
	q := db.New(e.pool)
	changed, err := q.JobFinishMany(context.Background(), db.JobFinishManyParams{
		Ids: []int64{job.ID}, Tokens: []pgtype.UUID{before.LeaseToken}, Statuses: []string{"failed"},
		DelaysUs: []int64{0}, Errors: []string{"late"}, GiveBack: []bool{false},
	})
	require.NoError(t, err)
	assert.Empty(t, changed, "an outcome under the frozen lease is refused")
	renewed, err := q.JobHeartbeatMany(context.Background(), db.JobHeartbeatManyParams{
		Ids: []int64{job.ID}, Tokens: []pgtype.UUID{before.LeaseToken}, LeaseUs: lease.Microseconds(),
	})
	require.NoError(t, err)
	assert.Empty(t, renewed, "a heartbeat under the frozen lease is refused")
	unchanged, err := q.JobGet(context.Background(), job.ID)
	require.NoError(t, err)
	assert.Equal(t, completed, unchanged)
}
