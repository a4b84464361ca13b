package faults

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// Every connection of a worker terminated with pg_terminate_backend, its
// pool's and its LISTEN connection's, again and again, once with a job in
// flight: the worker carries on by itself, the job in flight completes
// once, and NOTIFY wake-ups resume. The poll interval is a minute, so
// polling cannot explain a pickup within the bound below.
func TestTerminatedConnectionsWorkerResumes(t *testing.T) {
	t.Parallel()
	const (
		rounds      = 3
		pickupBound = 30 * time.Second // half the poll interval
	)
	e := newEnv(t)
	tp := newTrackedPool(t, e.url)

	var mu sync.Mutex
	ran := map[int64]int{}
	started := make(chan int64, 100)
	release := make(chan struct{})
	w, err := worker.New(tp.Pool, worker.Config{Concurrency: 4, LeaseDuration: 5 * time.Second, PollInterval: time.Minute, Logger: quietLogger()}, worker.Handle(worker.HandlerFunc[faultJob](func(ctx context.Context, job *tasuki.Job[faultJob]) error {
		mu.Lock()
		ran[job.ID]++
		mu.Unlock()
		started <- job.ID
		if job.Payload.N < 0 { // the job in flight: wait for the test
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})))
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		stop()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(bound):
			t.Error("worker did not stop")
		}
	}()

	// pickup inserts a job and returns how long the worker took to start it.
	pickup := func(n int) time.Duration {
		t.Helper()
		insertedAt := time.Now()
		job, err := e.client.Insert(context.Background(), faultJob{N: n}, nil)
		require.NoError(t, err)
		select {
		case id := <-started:
			require.Equal(t, job.ID, id)
		case <-time.After(pickupBound):
			t.Fatalf("job %d not picked up within %s: the NOTIFY wake-up did not resume", n, pickupBound)
		}
		return time.Since(insertedAt)
	}
	listening := func(after int32) int32 {
		t.Helper()
		var pid int32
		waitUntil(t, "the listener to LISTEN", bound, func() bool {
			pid = tp.listening(t, e.pool)
			return pid != 0 && pid != after
		})
		// The reconnected listener wakes the worker once, for jobs it may
		// have missed; let that wake-up pass so it cannot explain the
		// next pickup.
		time.Sleep(300 * time.Millisecond)
		return pid
	}

	listener := listening(0)
	t.Logf("before any fault: picked up after %s", pickup(0).Round(time.Millisecond))

	// A job in flight while its worker's connections die.
	inFlight, err := e.client.Insert(context.Background(), faultJob{N: -1}, nil)
	require.NoError(t, err)
	select {
	case <-started:
	case <-time.After(pickupBound):
		t.Fatal("the job meant to be in flight did not start")
	}

	var pickups []time.Duration
	for round := 1; round <= rounds; round++ {
		n := tp.terminateAll(t, e.pool)
		require.Positive(t, n)
		listener = listening(listener)
		if round == 1 {
			close(release) // its outcome goes out on a connection opened after the fault
		}
		d := pickup(round)
		pickups = append(pickups, d)
		t.Logf("round %d: %d connections terminated (pool and listener); the listener came back and a new job was picked up after %s",
			round, n, d.Round(time.Millisecond))
	}
	t.Logf("pickup after the listener's reconnect, %d rounds, poll interval 1m: %s", rounds, durations(pickups))

	e.waitCompleted(rounds + 2)
	mu.Lock()
	defer mu.Unlock()
	for id, n := range ran {
		assert.Equal(t, 1, n, "job %d ran once", id)
	}
	job := e.job(inFlight.ID)
	assert.Equal(t, 1, job.Attempt)
	assert.Empty(t, job.Errors)
}
