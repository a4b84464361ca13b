package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

func businessRows(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM business`).Scan(&n))
	return n
}

// A handler completes its job in its own transaction, with its own
// write: both commit together. When the transaction rolls back, neither
// does, and the attempt ends as the handler says. CompleteTx outside a
// handler, or with another job, is refused.
func TestCompleteTx(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `CREATE TABLE business (job_id bigint)`)
	require.NoError(t, err)
	client := newClient[task](t, pool)
	outside := make(chan error, 1)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		other := *job
		other.ID++
		outside <- worker.CompleteTx(ctx, nil, &other)
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO business VALUES ($1)`, job.ID); err != nil {
				return err
			}
			if err := worker.CompleteTx(ctx, tx, job); err != nil {
				return err
			}
			if job.Payload.Mode == "rollback" {
				return errors.New("changed my mind") // rolls back both
			}
			return nil
		})
	}, worker.Config{RetryPolicy: retryIn(time.Hour)})
	stop := running(t, w)
	ok := insert(t, client, task{}, nil)
	assert.ErrorIs(t, receive(t, outside, "the first run"), worker.ErrNotInHandler)
	eventually(t, "completed in the handler's transaction", func() bool { return jobStatus(t, client, ok) == tasuki.StatusCompleted })
	assert.Equal(t, 1, businessRows(t, pool))

	back := insert(t, client, task{Mode: "rollback"}, nil)
	receive(t, outside, "the second run")
	eventually(t, "the attempt is recorded as failed", func() bool { return len(getJob(t, client, back).Errors) == 1 })
	stop()
	job := getJob(t, client, back)
	assert.Equal(t, tasuki.StatusPending, job.Status, "the rolled back completion left the job to its retry")
	assert.Equal(t, "changed my mind", job.LastError())
	assert.Equal(t, 1, businessRows(t, pool), "the rolled back write is not there")
	assert.ErrorIs(t, worker.CompleteTx(ctx, nil, job), worker.ErrNotInHandler, "not a handler's context")
}

// After the lease was lost (the job canceled from outside here),
// CompleteTx fails with ErrLeaseLost and changes nothing: the caller's
// transaction, which must not commit, is rolled back with its write.
func TestCompleteTxAfterTheLeaseWasLost(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `CREATE TABLE business (job_id bigint)`)
	require.NoError(t, err)
	client := newClient[task](t, pool)
	canceled := make(chan struct{})
	result := make(chan error, 1)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		<-canceled
		// The cancel ended ctx; a handler that goes on regardless still
		// cannot complete the job.
		ctx = context.WithoutCancel(ctx)
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO business VALUES ($1)`, job.ID); err != nil {
				return err
			}
			return worker.CompleteTx(ctx, tx, job)
		})
		result <- err
		return err
	}, worker.Config{})
	stop := running(t, w)
	id := insert(t, client, task{}, nil)
	eventually(t, "the job runs", func() bool { return jobStatus(t, client, id) == tasuki.StatusRunning })
	_, err = client.Cancel(ctx, id)
	require.NoError(t, err)
	close(canceled)
	assert.ErrorIs(t, receive(t, result, "CompleteTx"), worker.ErrLeaseLost)
	stop()
	assert.Equal(t, tasuki.StatusCanceled, jobStatus(t, client, id))
	assert.Zero(t, businessRows(t, pool), "the caller's transaction did not commit")
}
