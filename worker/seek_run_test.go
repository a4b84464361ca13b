package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// Transactions that inserted jobs behind where the worker has leased since
// (scheduled earlier than jobs it already took), committing in the reverse
// of their order, wake the worker for exactly those jobs: each is picked
// up at its commit, though the poll (and with it the worker's own look
// behind its positions) is an hour away.
func TestLateCommitsBehindTheLastLeaseArePickedUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	done := make(chan int64, 100)
	w := newWorker(t, pool, func(_ context.Context, job *tasuki.Job[task]) error {
		done <- job.ID
		return nil
	}, worker.Config{Queue: "default", PollInterval: time.Hour})
	running(t, w)

	first := insert(t, client, task{N: 1}, nil)
	require.Equal(t, first, receive(t, done, "the first job"))

	const n = 6 // each open transaction holds one of the pool's 8 connections
	txs := make([]pgx.Tx, n)
	want := map[int64]bool{}
	base := time.Now().Add(-time.Hour)
	for i := range txs {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx)
		job, err := client.InsertTx(ctx, tx, task{N: i}, &tasuki.InsertOpts{Priority: i % 3, RunAt: base.Add(time.Duration(i) * time.Second)})
		require.NoError(t, err)
		txs[i] = tx
		want[job.ID] = true
	}
	for i := n - 1; i >= 0; i-- {
		require.NoError(t, txs[i].Commit(ctx))
	}
	for len(want) > 0 {
		id := receive(t, done, "a job committed behind the last lease")
		require.True(t, want[id], "job %d ran twice or was not inserted here", id)
		delete(want, id)
	}
}

// With no notifications at all, a job the application inserted by its own
// SQL behind where the worker leased last is found by the worker's look
// behind its positions, every PollInterval.
func TestJobsBehindTheLastLeaseAreFoundWithoutNotifications(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	done := make(chan int64, 10)
	w := newWorker(t, pool, func(_ context.Context, job *tasuki.Job[task]) error {
		done <- job.ID
		return nil
	}, worker.Config{Queue: "default", PollInterval: 50 * time.Millisecond, DisableListen: true})
	running(t, w)

	first := insert(t, client, task{N: 1}, nil)
	require.Equal(t, first, receive(t, done, "the first job"))
	var behind int64
	require.NoError(t, pool.QueryRow(ctx,
		`INSERT INTO tasuki_job (kind, payload, priority, scheduled_at) VALUES ('task', '{"n":2}', 4, now() - interval '1 day') RETURNING id`).Scan(&behind))
	require.Equal(t, behind, receive(t, done, "the job behind the last lease"))
}
