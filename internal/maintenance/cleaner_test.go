package maintenance_test

import (
	"context"
	"io"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/maintenance"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newCleaner(t *testing.T, pool *pgxpool.Pool, cfg maintenance.CleanerConfig) *maintenance.Cleaner {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	c, err := maintenance.NewCleaner(pool, cfg)
	require.NoError(t, err)
	return c
}

// addJobs inserts n jobs with one COPY and sets them to status, finished
// ago before now when the status is a finished one. It returns their ids.
func addJobs(t *testing.T, pool *pgxpool.Pool, n int, status tasuki.Status, ago time.Duration) []int64 {
	t.Helper()
	return addJobsIn(t, pool, "q", n, status, ago)
}

// addJobsIn is addJobs for the given queue.
func addJobsIn(t *testing.T, pool *pgxpool.Pool, queue string, n int, status tasuki.Status, ago time.Duration) []int64 {
	t.Helper()
	ctx := context.Background()
	c, err := tasuki.NewClient[int](pool, tasuki.ClientConfig{Kind: "int", Queue: queue})
	require.NoError(t, err)
	var first int64
	require.NoError(t, pool.QueryRow(ctx, "SELECT coalesce(max(id), 0) + 1 FROM tasuki_job").Scan(&first))
	_, err = c.InsertMany(ctx, make([]int, n), nil)
	require.NoError(t, err)
	ids := make([]int64, 0, n)
	rows, err := pool.Query(ctx, "SELECT id FROM tasuki_job WHERE id >= $1 ORDER BY id", first)
	require.NoError(t, err)
	for rows.Next() {
		var id int64
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	require.Len(t, ids, n)
	switch {
	case status == tasuki.StatusRunning:
		_, err = pool.Exec(ctx, `UPDATE tasuki_job SET status = 'running', attempts = 1,
			lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 hour'
			WHERE id = ANY($1)`, ids)
	case status.Finished():
		_, err = pool.Exec(ctx, `UPDATE tasuki_job SET status = $2::tasuki_job_status, attempts = 1,
			finished_at = now() - $3 * interval '1 microsecond' WHERE id = ANY($1)`, ids, string(status), ago.Microseconds())
	}
	require.NoError(t, err)
	// Old pending and running jobs too: age alone never deletes a job.
	_, err = pool.Exec(ctx, "UPDATE tasuki_job SET created_at = now() - interval '365 days' WHERE id = ANY($1)", ids)
	require.NoError(t, err)
	return ids
}

func remaining(t *testing.T, pool *pgxpool.Pool) []int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT id FROM tasuki_job ORDER BY id")
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	return ids
}

func sorted(groups ...[]int64) []int64 {
	out := []int64{}
	for _, g := range groups {
		out = append(out, g...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func TestNewCleanerConfig(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	c, err := maintenance.NewCleaner(pool, maintenance.CleanerConfig{})
	require.NoError(t, err)
	cfg := c.Config()
	assert.Equal(t, time.Minute, cfg.Interval)
	assert.Equal(t, 1000, cfg.BatchSize)
	assert.Equal(t, slog.Default(), cfg.Logger)

	_, err = maintenance.NewCleaner(nil, maintenance.CleanerConfig{})
	var invalid *tasuki.InvalidOptionError
	require.ErrorAs(t, err, &invalid)
	for _, cfg := range []maintenance.CleanerConfig{
		{Interval: -1},
		{Interval: time.Millisecond},
		{BatchSize: -1},
		{BatchSize: 100_001},
	} {
		_, err := maintenance.NewCleaner(pool, cfg)
		require.ErrorAs(t, err, &invalid, "%+v", cfg)
		assert.Contains(t, invalid.Option, "CleanerConfig.")
	}
}

// TestCleanerRetention deletes exactly the finished jobs past their
// status's retention, and never a pending or running one, however old.
func TestCleanerRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	day := 24 * time.Hour

	oldCompleted := addJobs(t, pool, 3, tasuki.StatusCompleted, 25*time.Hour)
	youngCompleted := addJobs(t, pool, 2, tasuki.StatusCompleted, 23*time.Hour)
	oldCanceled := addJobs(t, pool, 2, tasuki.StatusCanceled, 8*day)
	youngCanceled := addJobs(t, pool, 2, tasuki.StatusCanceled, 6*day)
	oldFailed := addJobs(t, pool, 2, tasuki.StatusFailed, 8*day)
	youngFailed := addJobs(t, pool, 2, tasuki.StatusFailed, 6*day)
	pending := addJobs(t, pool, 2, tasuki.StatusPending, 0)
	running := addJobs(t, pool, 2, tasuki.StatusRunning, 0)

	c := newCleaner(t, pool, maintenance.CleanerConfig{BatchSize: 2})
	n, err := c.RunOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(len(oldCompleted)+len(oldCanceled)+len(oldFailed)), n)
	assert.Equal(t, sorted(youngCompleted, youngCanceled, youngFailed, pending, running), remaining(t, pool))

	n, err = c.RunOnce(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
}

// TestCleanerQueueRetention: each queue's finished jobs are deleted by that
// queue's own retention setting, whichever process cleans; a queue that
// keeps its jobs forever loses none, and a queue without a setting keeps
// the defaults.
func TestCleanerQueueRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	admin, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	day := 24 * time.Hour
	require.NoError(t, admin.SetRetention(ctx, "audit", tasuki.Retention{
		Completed: tasuki.KeepForever, Canceled: tasuki.KeepForever, Failed: tasuki.KeepForever,
	}))
	require.NoError(t, admin.SetRetention(ctx, "short", tasuki.Retention{Completed: time.Hour, Canceled: time.Minute}))

	audit := sorted(
		addJobsIn(t, pool, "audit", 3, tasuki.StatusCompleted, 1000*day),
		addJobsIn(t, pool, "audit", 2, tasuki.StatusFailed, 1000*day),
		addJobsIn(t, pool, "audit", 2, tasuki.StatusCanceled, 1000*day),
	)
	addJobsIn(t, pool, "short", 3, tasuki.StatusCompleted, 2*time.Hour)
	addJobsIn(t, pool, "short", 2, tasuki.StatusCanceled, 2*time.Minute)
	shortKept := sorted(
		addJobsIn(t, pool, "short", 2, tasuki.StatusCompleted, 30*time.Minute),
		addJobsIn(t, pool, "short", 2, tasuki.StatusFailed, 6*day), // failed: the default, 7 days
	)
	addJobsIn(t, pool, "short", 1, tasuki.StatusFailed, 8*day)
	addJobsIn(t, pool, "plain", 2, tasuki.StatusCompleted, 25*time.Hour)
	plainKept := addJobsIn(t, pool, "plain", 2, tasuki.StatusCompleted, 23*time.Hour)

	n, err := newCleaner(t, pool, maintenance.CleanerConfig{BatchSize: 2}).RunOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(3+2+1+2), n)
	assert.Equal(t, sorted(audit, shortKept, plainKept), remaining(t, pool))

	stats, err := admin.Stats(ctx)
	require.NoError(t, err)
	got := map[string]tasuki.Retention{}
	for _, s := range stats {
		got[s.Queue] = s.Retention
	}
	assert.Equal(t, map[string]tasuki.Retention{
		"audit": {Completed: tasuki.KeepForever, Canceled: tasuki.KeepForever, Failed: tasuki.KeepForever},
		"short": {Completed: time.Hour, Canceled: time.Minute, Failed: 7 * day},
		"plain": {Completed: day, Canceled: 7 * day, Failed: 7 * day},
	}, got)

	// Back to the defaults: the audit queue's jobs are then deleted too.
	require.NoError(t, admin.SetRetention(ctx, "audit", tasuki.Retention{}))
	n, err = newCleaner(t, pool, maintenance.CleanerConfig{}).RunOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(len(audit)), n)
}

func TestSetRetentionValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin, err := tasuki.NewAdmin(testdb.New(t))
	require.NoError(t, err)
	var invalid *tasuki.InvalidOptionError
	for option, r := range map[string]tasuki.Retention{
		"Retention.Completed": {Completed: -2},
		"Retention.Canceled":  {Canceled: -time.Hour},
		"Retention.Failed":    {Failed: time.Nanosecond},
	} {
		err := admin.SetRetention(ctx, "q", r)
		require.ErrorAs(t, err, &invalid, option)
		assert.Equal(t, option, invalid.Option)
	}
	require.ErrorAs(t, admin.SetRetention(ctx, "bad\x00queue", tasuki.Retention{}), &invalid)
	require.ErrorAs(t, admin.SetRetention(ctx, "", tasuki.Retention{}), &invalid)
}

// TestCleanersRace runs two cleaners, each with a pool of its own like two
// worker processes, at the same time, several times over: between them
// they delete every eligible job exactly once, and nothing else.
func TestCleanersRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testdb.Schema(t)
	setup := testdb.Pool(t, url)
	testdb.MigrateUp(t, setup)
	cleaners := []*maintenance.Cleaner{
		newCleaner(t, testdb.Pool(t, url), maintenance.CleanerConfig{BatchSize: 50}),
		newCleaner(t, testdb.Pool(t, url), maintenance.CleanerConfig{BatchSize: 50}),
	}

	for round := range 5 {
		eligible := addJobs(t, setup, 400, tasuki.StatusCompleted, 48*time.Hour)
		eligible = append(eligible, addJobs(t, setup, 300, tasuki.StatusFailed, 30*24*time.Hour)...)
		keep := sorted(
			addJobs(t, setup, 20, tasuki.StatusCompleted, time.Hour),
			addJobs(t, setup, 20, tasuki.StatusFailed, 24*time.Hour),
			addJobs(t, setup, 20, tasuki.StatusPending, 0),
			addJobs(t, setup, 20, tasuki.StatusRunning, 0),
		)

		var wg sync.WaitGroup
		start := make(chan struct{})
		deleted := make([]int64, len(cleaners))
		errs := make([]error, len(cleaners))
		for i, c := range cleaners {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				deleted[i], errs[i] = c.RunOnce(ctx)
			}()
		}
		close(start)
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
		assert.Equal(t, int64(len(eligible)), deleted[0]+deleted[1], "round %d: deleted %v", round, deleted)
		t.Logf("round %d: deleted %v", round, deleted)
		assert.Equal(t, keep, remaining(t, setup), "round %d", round)

		_, err := setup.Exec(ctx, "DELETE FROM tasuki_job")
		require.NoError(t, err)
	}
}

// TestCleanerSkipsWhileAnotherLeads holds the cleaner's lock in an open
// transaction, as a cleaning process would: the Cleaner deletes nothing,
// and once that transaction ends it cleans.
func TestCleanerSkipsWhileAnotherLeads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	eligible := addJobs(t, pool, 10, tasuki.StatusCompleted, 48*time.Hour)
	c := newCleaner(t, pool, maintenance.CleanerConfig{BatchSize: 3})

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	locked, err := db.New(tx).CleanerTryLock(ctx)
	require.NoError(t, err)
	require.True(t, locked)

	n, err := c.RunOnce(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
	assert.Equal(t, eligible, remaining(t, pool))

	require.NoError(t, tx.Rollback(ctx))
	n, err = c.RunOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(len(eligible)), n)
	assert.Empty(t, remaining(t, pool))
}

// TestCleanerTakesOverFromDeadLeader kills the connection of a process that
// holds the lock, as a crash would: the lock goes with it.
func TestCleanerTakesOverFromDeadLeader(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	addJobs(t, pool, 5, tasuki.StatusFailed, 30*24*time.Hour)
	c := newCleaner(t, pool, maintenance.CleanerConfig{})

	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig)
	require.NoError(t, err)
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	locked, err := db.New(tx).CleanerTryLock(ctx)
	require.NoError(t, err)
	require.True(t, locked)
	n, err := c.RunOnce(ctx)
	require.NoError(t, err)
	require.Zero(t, n)

	var ok bool
	require.NoError(t, pool.QueryRow(ctx, "SELECT pg_terminate_backend($1)", int32(conn.PgConn().PID())).Scan(&ok))
	require.True(t, ok)
	deadline := time.Now().Add(60 * time.Second)
	for {
		n, err = c.RunOnce(ctx)
		require.NoError(t, err)
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the backend is still exiting
	}
	assert.Equal(t, int64(5), n)
	assert.Empty(t, remaining(t, pool))
}

// TestCleanerSchemas checks that the lock is per schema: a leader in one
// schema does not stop the cleaner of another.
func TestCleanerSchemas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	other := testdb.New(t)
	tx, err := other.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	locked, err := db.New(tx).CleanerTryLock(ctx)
	require.NoError(t, err)
	require.True(t, locked)

	pool := testdb.New(t)
	addJobs(t, pool, 4, tasuki.StatusCompleted, 48*time.Hour)
	n, err := newCleaner(t, pool, maintenance.CleanerConfig{}).RunOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(4), n)
}

func TestCleanerRun(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	c := newCleaner(t, pool, maintenance.CleanerConfig{Interval: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	// Jobs that become eligible while it runs are deleted at a later round.
	addJobs(t, pool, 7, tasuki.StatusCompleted, 48*time.Hour)
	keep := addJobs(t, pool, 2, tasuki.StatusCompleted, time.Hour)
	deadline := time.Now().Add(60 * time.Second)
	for len(remaining(t, pool)) > len(keep) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	assert.Equal(t, keep, remaining(t, pool))

	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestCleanerRunSchemaMissing(t *testing.T) {
	t.Parallel()
	c := newCleaner(t, testdb.NewEmpty(t), maintenance.CleanerConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := c.Run(ctx)
	assert.ErrorIs(t, err, tasuki.ErrSchemaMissing)
	assert.NoError(t, ctx.Err(), "Run returns at once")
}

// A finished job the database refuses to delete (the application's table
// references it) does not stop the cleaning: the others are deleted, and
// the refused one is deleted once the database accepts it.
func TestCleanerRefusedDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	old := addJobs(t, pool, 5, tasuki.StatusCompleted, 48*time.Hour)
	_, err := pool.Exec(ctx, `CREATE TABLE receipts (job_id bigint REFERENCES tasuki_job (id))`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO receipts VALUES ($1)`, old[2])
	require.NoError(t, err)

	c := newCleaner(t, pool, maintenance.CleanerConfig{BatchSize: 2})
	n, err := c.RunOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(4), n)
	assert.Equal(t, []int64{old[2]}, remaining(t, pool))
	n, err = c.RunOnce(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "the refused job is set aside for a while")

	_, err = pool.Exec(ctx, `DELETE FROM receipts`)
	require.NoError(t, err)
	// Another process (no memory of the refusal) deletes it.
	n, err = newCleaner(t, pool, maintenance.CleanerConfig{}).RunOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	assert.Empty(t, remaining(t, pool))
}

// The installation's default retention applies to every queue without a
// setting of its own, and a queue's own setting wins over it, field by
// field; Stats shows the result and QueueRetention and DefaultRetention
// what is stored.
func TestCleanerDefaultRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	admin, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	day := 24 * time.Hour

	stored, err := admin.DefaultRetention(ctx)
	require.NoError(t, err)
	assert.Equal(t, tasuki.Retention{}, stored, "nothing set: tasuki's built-in defaults")

	require.NoError(t, admin.SetDefaultRetention(ctx, tasuki.Retention{Completed: tasuki.KeepForever, Failed: 30 * day}))
	require.NoError(t, admin.SetRetention(ctx, "short", tasuki.Retention{Completed: time.Hour}))

	kept := sorted(
		addJobsIn(t, pool, "plain", 2, tasuki.StatusCompleted, 1000*day), // the installation keeps completed jobs
		addJobsIn(t, pool, "plain", 2, tasuki.StatusFailed, 20*day),      // failed: 30 days
		addJobsIn(t, pool, "short", 1, tasuki.StatusCompleted, 30*time.Minute),
		addJobsIn(t, pool, "short", 1, tasuki.StatusCanceled, 6*day), // canceled: built-in 7 days
	)
	addJobsIn(t, pool, "plain", 1, tasuki.StatusFailed, 31*day)
	addJobsIn(t, pool, "plain", 1, tasuki.StatusCanceled, 8*day)
	addJobsIn(t, pool, "short", 2, tasuki.StatusCompleted, 2*time.Hour)

	n, err := newCleaner(t, pool, maintenance.CleanerConfig{}).RunOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(4), n)
	assert.Equal(t, kept, remaining(t, pool))

	stats, err := admin.Stats(ctx)
	require.NoError(t, err)
	got := map[string]tasuki.Retention{}
	for _, s := range stats {
		got[s.Queue] = s.Retention
	}
	assert.Equal(t, map[string]tasuki.Retention{
		"plain": {Completed: tasuki.KeepForever, Canceled: 7 * day, Failed: 30 * day},
		"short": {Completed: time.Hour, Canceled: 7 * day, Failed: 30 * day},
	}, got)

	stored, err = admin.DefaultRetention(ctx)
	require.NoError(t, err)
	assert.Equal(t, tasuki.Retention{Completed: tasuki.KeepForever, Failed: 30 * day}, stored)
	own, err := admin.QueueRetention(ctx, "short")
	require.NoError(t, err)
	assert.Equal(t, tasuki.Retention{Completed: time.Hour}, own)
	own, err = admin.QueueRetention(ctx, "never-set")
	require.NoError(t, err)
	assert.Equal(t, tasuki.Retention{}, own)

	var invalid *tasuki.InvalidOptionError
	require.ErrorAs(t, admin.SetDefaultRetention(ctx, tasuki.Retention{Canceled: tasuki.MaxRetention + time.Hour}), &invalid)
	assert.Equal(t, "Retention.Canceled", invalid.Option)
	require.NoError(t, admin.SetDefaultRetention(ctx, tasuki.Retention{Canceled: tasuki.MaxRetention}))
	_, err = admin.QueueRetention(ctx, "bad\x00queue")
	require.ErrorAs(t, err, &invalid)
}
