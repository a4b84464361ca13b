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

// Guards against this: Run starts Config.Concurrency runner goroutines, but the worker
// leases up to the sum of its queues' concurrencies (Config.Concurrency is
// the default of each queue: Queues "a" and "b" with Concurrency 1 have a
// slot each, two in all). With fewer runners than slots, a job leased for
// a free slot of queue b waits in the work channel behind queue a's
// handler: here a handler that ran past its timeout and hangs, ignoring
// its context, as KindConfig.Timeout says may happen. Queue b's job is
// leased ("running") but never runs in this worker; with a timeout its
// lease even lapses unrenewed while it has not started, and when a runner
// frees at last it runs the job with a dead lease. Queues are meant to be
// independent (TestKindsPerQueueConcurrency passes only because the
// default Concurrency of 100 leaves runners to spare). Fix: start one
// runner per slot (the sum of the queues' concurrencies, the size of
// w.work), or grow runners on demand.
func TestTimeoutAttackHungHandlerStarvesAnotherQueue(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	release := make(chan struct{})
	startedA := make(chan int64, 1)
	ranB := make(chan int64, 1)
	w, err := worker.New(pool, worker.Config{
		Queues:        map[string]worker.QueueConfig{"a": {}, "b": {}},
		Concurrency:   1, // each queue's
		LeaseDuration: 2 * time.Second,
		PollInterval:  20 * time.Millisecond,
		RetryPolicy:   retryIn(time.Hour),
		Logger:        testLogger(t),
	}, worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[task]) error {
		if job.Queue == "a" {
			startedA <- job.ID
			<-release // hangs past its timeout, whatever its context says
			return ctx.Err()
		}
		ranB <- job.ID
		return nil
	}).With(worker.KindConfig{Timeout: 50 * time.Millisecond}))
	require.NoError(t, err)
	client := newClient[task](t, pool)
	running(t, w)
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before the worker's stop
	a := insert(t, client, task{N: 1}, &tasuki.InsertOpts{Queue: "a"})
	assert.Equal(t, a, receive(t, startedA, "queue a's handler"))
	b := insert(t, client, task{N: 2}, &tasuki.InsertOpts{Queue: "b"})
	assert.Equal(t, b, receive(t, ranB, "queue b's job, which has a free slot of its own"))
}
