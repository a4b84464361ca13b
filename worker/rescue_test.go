package worker_test

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// A job leased right after the worker rescued expired jobs one at a time
// is not stopped with ErrLeaseLost while its lease is fresh: its lease is
// timed from the statement that leased it, not from before the rescues,
// which took most of a lease.
func TestLeaseAfterRescueEachIsNotCanceled(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	// Three jobs of a dead worker whose rescue the application refuses
	// after 0.6 s each (well under the statement timeout of half a lease).
	for i := range 3 {
		insert(t, client, task{N: i, Mode: "stuck"}, nil)
		require.Len(t, leaseDirect(t, pool, "default", 1, time.Microsecond), 1)
	}
	exec(t, pool, `CREATE FUNCTION refuse_rescue() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.status = 'running' AND NEW.status <> 'running' AND NEW.payload->>'mode' = 'stuck'
			   AND NEW.errors::text LIKE '%lease expired%' THEN
				PERFORM pg_sleep(0.6);
				RAISE EXCEPTION 'the application refuses this change';
			END IF;
			RETURN NEW;
		END $$`)
	exec(t, pool, `CREATE TRIGGER refuse_rescue BEFORE UPDATE ON tasuki_job FOR EACH ROW EXECUTE FUNCTION refuse_rescue()`)
	fresh := insert(t, client, task{N: 3}, nil)

	causes := make(chan error, 10)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		select {
		case <-time.After(300 * time.Millisecond): // well within one lease
			causes <- nil
			return nil
		case <-ctx.Done():
			causes <- context.Cause(ctx)
			return ctx.Err()
		}
	}, worker.Config{LeaseDuration: 2 * time.Second, PollInterval: 20 * time.Millisecond,
		RetryPolicy: func(int) time.Duration { return time.Hour }})
	running(t, w)

	cause := receive(t, causes, "the fresh job's handler to return")
	assert.False(t, errors.Is(cause, worker.ErrLeaseLost), "a freshly leased job was stopped as if its lease lapsed: %v", cause)
	eventually(t, "the fresh job's attempt to be recorded", func() bool { return jobStatus(t, client, fresh) != tasuki.StatusRunning })
	job := getJob(t, client, fresh)
	assert.Equal(t, tasuki.StatusCompleted, job.Status, "errors: %s", errorsText(job))
}

// The listener keeps its backoff when only its own connection fails
// (ListenURL names a database that does not exist, as after a typo, or a
// direct endpoint that is down while the pool goes through PgBouncer):
// leases that succeed all along do not cut its waits short, so it does not
// open a server connection per poll.
func TestListenerBackoffSurvivesOtherLoopsSucceeding(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	u, err := url.Parse(testdb.URL())
	require.NoError(t, err)
	u.Path = "/no_such_database"
	logger, logs := bufferLogger()
	w := newWorker(t, pool, func(context.Context, *tasuki.Job[task]) error { return nil },
		worker.Config{PollInterval: 10 * time.Millisecond, ListenURL: u.String(), Logger: logger})
	stop := running(t, w)
	time.Sleep(3 * time.Second)
	stop()
	// Backoff 100 ms, 200, 400, 800, 1.6 s (±20 %): 5 or 6 attempts in
	// 3 s. 12 leaves room for scheduling.
	attempts := logs.count("notification listener disconnected")
	assert.LessOrEqual(t, attempts, 12, "listener connection attempts in 3 s")
}

// A rescue that takes longer than the lease statement's timeout does not
// stall the queue. A dead worker left 1000 expired jobs and the
// application has an audit trigger costing about 1 ms per changed row:
// rescuing them in one batch takes over a second, past the half-lease
// timeout. New jobs are leased meanwhile, and later rescues take fewer jobs
// at a time until they pass.
func TestSlowRescueDoesNotStallTheQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client := newClient[task](t, pool)

	_, err := client.InsertMany(ctx, make([]task, 1000), nil)
	require.NoError(t, err)
	require.Len(t, leaseDirect(t, pool, "default", 1000, time.Microsecond), 1000)
	exec(t, pool, `CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_sleep(0.001); RETURN NEW; END $$`)
	exec(t, pool, `CREATE TRIGGER audit BEFORE UPDATE ON tasuki_job FOR EACH ROW
		WHEN (OLD.status = 'running' AND NEW.status <> 'running') EXECUTE FUNCTION audit()`)
	fresh := insert(t, client, task{N: 1, Mode: "fresh"}, nil)

	w := newWorker(t, pool, func(context.Context, *tasuki.Job[task]) error { return nil },
		worker.Config{LeaseDuration: time.Second, PollInterval: 20 * time.Millisecond})
	running(t, w)
	// Ten leases' time: a healthy worker leases the fresh job at once.
	deadline := time.Now().Add(10 * time.Second)
	for jobStatus(t, client, fresh) != tasuki.StatusCompleted && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	assert.Equal(t, tasuki.StatusCompleted, jobStatus(t, client, fresh), "the queue is stalled behind its rescue")
	// Later rescues take fewer jobs at a time, until one fits its timeout.
	eventually(t, "expired jobs to be rescued", func() bool { return countStatus(t, pool, tasuki.StatusRunning) < 1000 })
}
