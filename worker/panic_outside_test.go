package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

type nilPointerError struct{ msg string }

func (e *nilPointerError) Error() string { return e.msg } // panics on a nil receiver

// A handler that returns a typed nil pointer as its error makes the
// worker's own code panic (in Error). The worker survives: the attempt is
// recorded as failed with the panic, and other jobs run on.
func TestPanicWhileRecordingOutcome(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client, err := tasuki.NewClient[task](pool, tasuki.ClientConfig{})
	require.NoError(t, err)
	bad, err := client.Insert(ctx, task{N: 1, Mode: "typed-nil"}, &tasuki.InsertOpts{MaxAttempts: 1})
	require.NoError(t, err)

	w := newWorker(t, pool, func(_ context.Context, job *tasuki.Job[task]) error {
		if job.Payload.Mode == "typed-nil" {
			var e *nilPointerError
			return e
		}
		return nil
	}, worker.Config{Concurrency: 1})
	running(t, w)

	eventually(t, "the bad job failed", func() bool { return jobStatus(t, client, bad.ID) == tasuki.StatusFailed })
	job, err := client.Get(ctx, bad.ID)
	require.NoError(t, err)
	assert.Contains(t, job.LastError(), "panic")

	good, err := client.Insert(ctx, task{N: 2}, nil)
	require.NoError(t, err)
	eventually(t, "the next job completed", func() bool { return jobStatus(t, client, good.ID) == tasuki.StatusCompleted })
}

// A worker whose every slot is busy still rescues jobs whose lease expired
// (their worker died), so they do not wait for a free slot somewhere.
func TestBusyWorkerStillRescues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client, err := tasuki.NewClient[task](pool, tasuki.ClientConfig{})
	require.NoError(t, err)
	dead, err := client.Insert(ctx, task{N: 1}, nil)
	require.NoError(t, err)
	// A worker that died holding the job: leased, never renewed.
	rows, err := db.New(pool).JobLease(ctx, testdb.Lease(db.JobLeaseParams{LeaseUs: time.Second.Microseconds()}, "default", "task", 1))
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, dead.ID, rows[0].ID)

	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{}, 1)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		if job.Payload.N == 2 {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	}, worker.Config{Concurrency: 1, LeaseDuration: 2 * time.Second})
	_, err = client.Insert(ctx, task{N: 2}, nil)
	require.NoError(t, err)
	running(t, w)
	select {
	case <-started:
	case <-time.After(time.Minute):
		t.Fatal("the blocking job did not start")
	}
	// The only slot is taken; the dead worker's job is rescued anyway.
	eventually(t, "the expired job rescued", func() bool {
		job, err := client.Get(ctx, dead.ID)
		require.NoError(t, err)
		return job.Status == tasuki.StatusPending && len(job.Errors) == 1
	})
}

// One outcome the database refuses (here an application trigger) does not
// hold back the others of its batch; its job runs again after its lease
// expires, and fails once out of attempts.
func TestPoisonOutcomeDoesNotBlockTheBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	_, err := pool.Exec(ctx, `
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'completed' AND NEW.payload->>'mode' = 'poison' THEN
        RAISE EXCEPTION 'poison job % refused', NEW.id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE UPDATE ON tasuki_job FOR EACH ROW EXECUTE FUNCTION refuse_poison();`)
	require.NoError(t, err)
	client, err := tasuki.NewClient[task](pool, tasuki.ClientConfig{})
	require.NoError(t, err)
	poison, err := client.Insert(ctx, task{Mode: "poison"}, &tasuki.InsertOpts{MaxAttempts: 2})
	require.NoError(t, err)
	payloads := make([]task, 50)
	for i := range payloads {
		payloads[i].N = i
	}
	_, err = client.InsertMany(ctx, payloads, nil)
	require.NoError(t, err)

	w := newWorker(t, pool, func(context.Context, *tasuki.Job[task]) error { return nil },
		worker.Config{LeaseDuration: time.Second})
	running(t, w)
	eventually(t, "the other jobs completed", func() bool { return countStatus(t, pool, tasuki.StatusCompleted) == 50 })
	eventually(t, "the poison job failed", func() bool { return jobStatus(t, client, poison.ID) == tasuki.StatusFailed })
	job, err := client.Get(ctx, poison.ID)
	require.NoError(t, err)
	assert.Contains(t, job.LastError(), "lease expired")
}
