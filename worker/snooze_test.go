package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// A snoozed job runs again after its delay as if the attempt had not
// happened: its Attempt stays, its Snoozes grows, and nothing enters its
// error history. A job with one attempt can be snoozed and still run.
func TestSnoozeKeepsTheAttemptAndCountsSnoozes(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	type run struct{ attempt, snoozes int }
	var mu sync.Mutex
	var runs []run
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		mu.Lock()
		runs = append(runs, run{job.Attempt, job.Snoozes})
		mu.Unlock()
		if job.Snoozes < 2 {
			return tasuki.Snooze(0)
		}
		return nil
	}, worker.Config{})
	stop := running(t, w)
	id := insert(t, client, task{}, &tasuki.InsertOpts{MaxAttempts: 1})
	eventually(t, "the job completes", func() bool { return jobStatus(t, client, id) == tasuki.StatusCompleted })
	stop()

	assert.Equal(t, []run{{1, 0}, {1, 1}, {1, 2}}, runs, "each run after a snooze has the same attempt and one more snooze")
	job := getJob(t, client, id)
	assert.Equal(t, 1, job.Attempt)
	assert.Equal(t, 2, job.Snoozes)
	assert.Empty(t, job.Errors, "a snooze is not an error")
}

// A snooze waits its delay: the job is pending, scheduled that far after
// the snooze, with its attempt given back.
func TestSnoozeWaitsItsDelay(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	ran := make(chan struct{}, 1)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		ran <- struct{}{}
		return tasuki.Snooze(time.Hour)
	}, worker.Config{})
	stop := running(t, w)
	before := time.Now()
	id := insert(t, client, task{}, nil)
	waitFor(t, ran, "the handler runs")
	eventually(t, "the snooze is recorded", func() bool { return getJob(t, client, id).Snoozes == 1 })
	stop()

	job := getJob(t, client, id)
	assert.Equal(t, tasuki.StatusPending, job.Status)
	assert.Equal(t, 0, job.Attempt, "the attempt is given back")
	assert.WithinDuration(t, before.Add(time.Hour), job.ScheduledAt, 5*time.Minute)
	assert.Empty(t, job.Errors)
	require.Equal(t, "job snoozed for 1h0m0s", tasuki.Snooze(time.Hour).Error())
	var snooze *tasuki.SnoozeError
	require.ErrorAs(t, tasuki.Snooze(-time.Second), &snooze)
	assert.Zero(t, snooze.Delay, "a negative delay counts as 0")
}
