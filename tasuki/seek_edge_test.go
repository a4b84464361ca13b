package tasuki_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// A transaction inserts jobs of many priorities through InsertTx (a batch
// that enqueues one job per item, each with the item's own priority). Its
// commit must wake the idle worker, whose poll is an hour away. The
// wake-up now names one head per priority, and past about 340 priorities
// the NOTIFY payload reaches PostgreSQL's 8000-byte limit: the wake-up
// statement fails ("payload string too long"), nobody is woken, and every
// job waits for the hourly poll. Before the heads, the payload was a few
// dozen bytes whatever was inserted.
func TestInsertTxOfManyPrioritiesWakesTheWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, waitListening := listenerPool(t)
	client := newClient(t, pool, tasuki.ClientConfig{})

	var mu sync.Mutex
	ran := map[string]bool{}
	w, err := worker.New(pool, worker.Config{PollInterval: time.Hour, Logger: discardLogger()}, worker.Handle(worker.HandlerFunc[email](func(_ context.Context, job *tasuki.Job[email]) error {
		mu.Lock()
		ran[job.Payload.To] = true
		mu.Unlock()
		return nil
	})))
	require.NoError(t, err)
	runWorker(t, w)
	waitListening()

	const n = 400
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	for p := range n {
		_, err := client.InsertTx(ctx, tx, email{To: fmt.Sprint(p)}, &tasuki.InsertOpts{Priority: p})
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit(ctx))
	flushCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	flushErr := client.Flush(flushCtx)

	deadline := time.Now().Add(60 * time.Second) // bounds a broken test; measures nothing
	for {
		mu.Lock()
		got := len(ran)
		mu.Unlock()
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d jobs ran; the commit's wake-up was lost (Flush: %v)", got, n, flushErr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, flushErr)
}
