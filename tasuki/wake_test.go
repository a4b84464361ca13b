package tasuki_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// No wake-up is lost: with an idle worker that polls once an hour, every
// job of 40 producers inserting at once, through Insert, InsertTx,
// InsertMany and InsertManyTx, in transactions that commit out of order
// (an earlier insert commits later) or roll back, is picked up at once;
// only a lost wake-up would leave a job to the hourly poll.
func TestNoLostWakeUpWithManyProducers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, waitListening := listenerPool(t)

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

	c := newClient(t, pool, tasuki.ClientConfig{})
	const producers, rounds = 40, 5
	var want sync.Map
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(p), 7))
			for r := range rounds {
				to := fmt.Sprintf("p%d-r%d", p, r)
				pause := time.Duration(rnd.IntN(20)) * time.Millisecond
				rollback := rnd.IntN(5) == 0
				var err error
				switch r % 4 {
				case 0:
					_, err = c.Insert(ctx, email{To: to}, nil)
					rollback = false
				case 1:
					_, err = c.InsertMany(ctx, []email{{To: to}}, nil)
					rollback = false
				case 2, 3:
					err = func() error {
						tx, err := pool.Begin(ctx)
						if err != nil {
							return err
						}
						defer tx.Rollback(ctx)
						if r%4 == 2 {
							_, err = c.InsertTx(ctx, tx, email{To: to}, nil)
						} else {
							_, err = c.InsertManyTx(ctx, tx, []email{{To: to}}, nil)
						}
						if err != nil {
							return err
						}
						time.Sleep(pause) // others commit meanwhile
						if rollback {
							return tx.Rollback(ctx)
						}
						return tx.Commit(ctx)
					}()
				}
				if err != nil {
					errs <- err
					return
				}
				if !rollback {
					want.Store(to, true)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	var missing []string
	deadline := time.Now().Add(60 * time.Second) // bounds a broken test; measures nothing
	for {
		missing = missing[:0]
		mu.Lock()
		want.Range(func(k, _ any) bool {
			if !ran[k.(string)] {
				missing = append(missing, k.(string))
			}
			return true
		})
		mu.Unlock()
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	assert.Empty(t, missing, "jobs left to the hourly poll: their wake-up was lost")
	mu.Lock()
	defer mu.Unlock()
	for to := range ran {
		_, ok := want.Load(to)
		assert.True(t, ok, "job %s ran, but its transaction rolled back", to)
	}
}

// Insert's wake-up goes out after its commit, and Flush waits for it: a
// notification sent after Flush returns arrives after the insert's.
func TestInsertWakesAndFlushWaitsForIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	next := listen(t, pool)
	c := newClient(t, pool, tasuki.ClientConfig{Queue: "woken"})
	_, err := c.Insert(ctx, email{}, nil)
	require.NoError(t, err)
	require.NoError(t, c.Flush(ctx))
	notifyMarker(t, pool)
	assert.Equal(t, "woken", nextNote(t, next)["q"])
	assert.Equal(t, "marker", nextNote(t, next)["q"])
}

// A rolled-back InsertTx wakes nobody, and Flush waits until the client
// has decided: after Flush, a marker is the next notification.
func TestInsertTxWakesOnlyAfterCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	next := listen(t, pool)
	c := newClient(t, pool, tasuki.ClientConfig{})

	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := c.InsertTx(ctx, tx, email{}, &tasuki.InsertOpts{Queue: "rolled-back"}); err != nil {
			return err
		}
		return fmt.Errorf("roll back")
	})
	require.EqualError(t, err, "roll back")
	require.NoError(t, c.Flush(ctx))
	notifyMarker(t, pool)
	assert.Equal(t, "marker", nextNote(t, next)["q"], "the rolled-back insert woke nobody")

	// A transaction left open is followed until it commits.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = c.InsertTx(ctx, tx, email{}, &tasuki.InsertOpts{Queue: "later"})
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond) // past the fast checks: now a slow one
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, c.Flush(ctx))
	notifyMarker(t, pool)
	assert.Equal(t, "later", nextNote(t, next)["q"])
	assert.Equal(t, "marker", nextNote(t, next)["q"])

	// A delayed job wakes nobody.
	_, err = c.Insert(ctx, email{}, &tasuki.InsertOpts{Queue: "delayed", Delay: time.Hour})
	require.NoError(t, err)
	require.NoError(t, c.Flush(ctx))
	notifyMarker(t, pool)
	assert.Equal(t, "marker", nextNote(t, next)["q"])
}
