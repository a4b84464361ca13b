package maintenance_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/maintenance"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// deleteGate makes every delete of job gated after the first (the batch
// delete, refused for another row, runs through; the one-by-one delete
// that follows) wait on advisory lock key, which the caller holds. So a
// test can change the database between the cleaner's list and its delete
// of that job, as another session would. A sequence counts the deletes, as
// the refused batch rolls back whatever else it wrote.
func deleteGate(t *testing.T, pool *pgxpool.Pool, gated int64, key int) {
	t.Helper()
	ctx := context.Background()
	_, err := pool.Exec(ctx, fmt.Sprintf(`
CREATE SEQUENCE delete_gate_hits;
CREATE FUNCTION delete_gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('delete_gate_hits') > 1 THEN
        PERFORM pg_advisory_xact_lock(%d);
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER delete_gate BEFORE DELETE ON tasuki_job
    FOR EACH ROW WHEN (OLD.id = %d) EXECUTE FUNCTION delete_gate();`, key, gated))
	require.NoError(t, err)
}

// waitAdvisoryWaiter waits until some session waits for advisory lock key.
func waitAdvisoryWaiter(t *testing.T, pool *pgxpool.Pool, key int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var n int
		require.NoError(t, pool.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = $1`, key).Scan(&n))
		if n > 0 {
			return
		}
		require.True(t, time.Now().Before(deadline), "the cleaner never reached its one-by-one delete")
		time.Sleep(5 * time.Millisecond)
	}
}

// runGated runs c.RunOnce in the background; between the cleaner's list and
// its delete of the gated job, meanwhile runs; then the cleaner goes on.
func runGated(t *testing.T, pool *pgxpool.Pool, c *maintenance.Cleaner, key int, meanwhile func()) (int64, error) {
	t.Helper()
	ctx := context.Background()
	holder, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer holder.Release()
	_, err = holder.Exec(ctx, "SELECT pg_advisory_lock($1)", key)
	require.NoError(t, err)
	type res struct {
		n   int64
		err error
	}
	done := make(chan res, 1)
	go func() {
		n, err := c.RunOnce(ctx)
		done <- res{n, err}
	}()
	waitAdvisoryWaiter(t, pool, key)
	meanwhile()
	_, err = holder.Exec(ctx, "SELECT pg_advisory_unlock($1)", key)
	require.NoError(t, err)
	r := <-done
	return r.n, r.err
}

// A finished job that another session retries, and a worker completes
// again, between the cleaner's list (after a refused batch) and its
// one-by-one delete, is kept: each one-by-one delete checks the job
// against its queue's retention again.
func TestCleanerKeepsJobCompletedAgainAfterItsList(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	old := addJobs(t, pool, 3, tasuki.StatusFailed, 30*24*time.Hour)
	a, b, c := old[0], old[1], old[2]
	// The application's table references c: the batch delete is refused.
	_, err := pool.Exec(ctx, `CREATE TABLE receipts (job_id bigint REFERENCES tasuki_job (id))`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO receipts VALUES ($1)`, c)
	require.NoError(t, err)
	const key = 947001
	deleteGate(t, pool, a, key)
	admin, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)

	cl := newCleaner(t, pool, maintenance.CleanerConfig{})
	_, err = runGated(t, pool, cl, key, func() {
		// An operator retries b; a worker runs it and it completes now.
		_, err := admin.Retry(ctx, b)
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `UPDATE tasuki_job SET status = 'completed', attempts = attempts + 1,
			finished_at = now(), lease_token = NULL, lease_expires_at = NULL WHERE id = $1`, b)
		require.NoError(t, err)
	})
	require.NoError(t, err)
	assert.Contains(t, remaining(t, pool), b,
		"job %d completed a moment ago; its queue keeps completed jobs 24h, yet the cleaner deleted it", b)
}

// The same window with only the public API: a queue's retention set to
// forever while the cleaner deletes one by one applies to the jobs
// already listed.
func TestCleanerHonoursRetentionSetDuringOneByOne(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	old := addJobs(t, pool, 3, tasuki.StatusCompleted, 48*time.Hour)
	a, b, c := old[0], old[1], old[2]
	_, err := pool.Exec(ctx, `CREATE TABLE receipts (job_id bigint REFERENCES tasuki_job (id))`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO receipts VALUES ($1)`, c)
	require.NoError(t, err)
	const key = 947002
	deleteGate(t, pool, a, key)
	admin, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)

	cl := newCleaner(t, pool, maintenance.CleanerConfig{})
	_, err = runGated(t, pool, cl, key, func() {
		require.NoError(t, admin.SetRetention(ctx, "q", tasuki.Retention{Completed: tasuki.KeepForever}))
	})
	require.NoError(t, err)
	assert.Contains(t, remaining(t, pool), b,
		"queue q keeps completed jobs forever since before job %d was deleted", b)
}
