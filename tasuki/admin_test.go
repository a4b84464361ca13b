package tasuki_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

func newAdmin(t *testing.T, pool *pgxpool.Pool) *tasuki.Admin {
	t.Helper()
	a, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	return a
}

// leaseJobs leases up to n runnable jobs of a queue as a worker would; they
// stay running until finishJobs.
func leaseJobs(t *testing.T, pool *pgxpool.Pool, queue string, n int) []*db.TasukiJob {
	t.Helper()
	rows, err := db.New(pool).JobLease(context.Background(), testdb.Lease(db.JobLeaseParams{
		LeaseUs: time.Minute.Microseconds(),
	}, queue, "email", n))
	require.NoError(t, err)
	return rows
}

// finishJobs records an outcome for leased jobs as a worker would: status
// is completed, failed, canceled or pending (a retry), errText the
// attempt's error ("" for none).
func finishJobs(t *testing.T, pool *pgxpool.Pool, rows []*db.TasukiJob, status, errText string) {
	t.Helper()
	p := db.JobFinishManyParams{}
	for _, r := range rows {
		p.Ids = append(p.Ids, r.ID)
		p.Tokens = append(p.Tokens, r.LeaseToken)
		p.Statuses = append(p.Statuses, status)
		p.DelaysUs = append(p.DelaysUs, 0)
		p.Errors = append(p.Errors, errText)
		p.GiveBack = append(p.GiveBack, false)
	}
	ids, err := db.New(pool).JobFinishMany(context.Background(), p)
	require.NoError(t, err)
	require.Len(t, ids, len(rows))
}

// jobIn inserts a job into queue and brings it to status the way a worker
// would. A failed job has used all its attempts (max attempts 1): the case
// the Rust original's "requeue failed" never matched.
func jobIn(t *testing.T, pool *pgxpool.Pool, queue string, status tasuki.Status) int64 {
	t.Helper()
	c := newClient(t, pool, tasuki.ClientConfig{Queue: queue})
	job, err := c.Insert(context.Background(), email{To: string(status) + "@example.com"}, &tasuki.InsertOpts{MaxAttempts: 1})
	require.NoError(t, err)
	// Its wake-up is out before the test listens.
	require.NoError(t, c.Flush(context.Background()))
	if status == tasuki.StatusPending {
		return job.ID
	}
	// Lease exactly this job: every earlier pending job of the queue is
	// leased too, and put back after.
	var mine []*db.TasukiJob
	var others []*db.TasukiJob
	for _, r := range leaseJobs(t, pool, queue, 1000) {
		if r.ID == job.ID {
			mine = append(mine, r)
		} else {
			others = append(others, r)
		}
	}
	require.Len(t, mine, 1)
	if len(others) > 0 {
		// Back to pending, the attempt given back.
		p := db.JobFinishManyParams{}
		for _, r := range others {
			p.Ids = append(p.Ids, r.ID)
			p.Tokens = append(p.Tokens, r.LeaseToken)
			p.Statuses = append(p.Statuses, "pending")
			p.DelaysUs = append(p.DelaysUs, 0)
			p.Errors = append(p.Errors, "")
			p.GiveBack = append(p.GiveBack, true)
		}
		_, err := db.New(pool).JobFinishMany(context.Background(), p)
		require.NoError(t, err)
	}
	switch status {
	case tasuki.StatusRunning:
	case tasuki.StatusCompleted:
		finishJobs(t, pool, mine, "completed", "")
	case tasuki.StatusFailed:
		finishJobs(t, pool, mine, "failed", "boom")
	case tasuki.StatusCanceled:
		finishJobs(t, pool, mine, "canceled", "handler gave up")
	default:
		t.Fatalf("jobIn: status %q", status)
	}
	return job.ID
}

func adminGet(t *testing.T, a *tasuki.Admin, id int64) *tasuki.Job[json.RawMessage] {
	t.Helper()
	job, err := a.Get(context.Background(), id)
	require.NoError(t, err)
	return job
}

// notifyMarker sends a wake-up for a queue of its own: received after
// other notifications, it proves that no other was sent before it.
func notifyMarker(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	require.NoError(t, db.New(pool).NotifyInsert(context.Background(), "marker"))
}

func nextNote(t *testing.T, next func(context.Context) (map[string]any, error)) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := next(ctx)
	require.NoError(t, err)
	return n
}

func TestNewAdminRequiresPool(t *testing.T) {
	t.Parallel()
	_, err := tasuki.NewAdmin(nil)
	var invalid *tasuki.InvalidOptionError
	require.ErrorAs(t, err, &invalid)
}

func TestAdminStatsEmpty(t *testing.T) {
	t.Parallel()
	a := newAdmin(t, testdb.New(t))
	stats, err := a.Stats(context.Background())
	require.NoError(t, err)
	assert.NotNil(t, stats)
	assert.Empty(t, stats)
}

func TestAdminStats(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	a := newAdmin(t, pool)

	// Queue "a": every status once, plus a job due in an hour (pending, not
	// runnable) and one that has been runnable for an hour.
	for _, s := range []tasuki.Status{tasuki.StatusPending, tasuki.StatusRunning, tasuki.StatusCompleted, tasuki.StatusFailed, tasuki.StatusCanceled} {
		jobIn(t, pool, "a", s)
	}
	c := newClient(t, pool, tasuki.ClientConfig{Queue: "a"})
	_, err := c.Insert(ctx, email{}, &tasuki.InsertOpts{Delay: time.Hour})
	require.NoError(t, err)
	_, err = c.Insert(ctx, email{}, &tasuki.InsertOpts{RunAt: time.Now().Add(-time.Hour)})
	require.NoError(t, err)
	// Queue "b": only completed jobs, so nothing is runnable.
	jobIn(t, pool, "b", tasuki.StatusCompleted)
	jobIn(t, pool, "b", tasuki.StatusCompleted)
	// Queue "c": paused, without jobs.
	_, err = a.PauseQueue(ctx, "c")
	require.NoError(t, err)

	stats, err := a.Stats(ctx)
	require.NoError(t, err)
	require.Len(t, stats, 3)

	sa := stats[0]
	assert.Equal(t, "a", sa.Queue)
	assert.Equal(t, []int64{3, 1, 1, 1, 1}, []int64{sa.Pending, sa.Running, sa.Completed, sa.Failed, sa.Canceled})
	assert.Equal(t, int64(7), sa.Total())
	assert.GreaterOrEqual(t, sa.OldestRunnableAge, time.Hour)
	assert.Less(t, sa.OldestRunnableAge, 2*time.Hour)
	assert.False(t, sa.Paused)
	assert.Nil(t, sa.PausedAt)

	defaults := tasuki.Retention{Completed: tasuki.DefaultCompletedRetention, Canceled: tasuki.DefaultCanceledRetention, Failed: tasuki.DefaultFailedRetention}
	assert.Equal(t, tasuki.QueueStats{Queue: "b", Completed: 2, Retention: defaults,
		Kinds: []tasuki.KindStats{{Kind: "email", Completed: 2}}}, stats[1])

	sc := stats[2]
	assert.Equal(t, "c", sc.Queue)
	assert.Zero(t, sc.Total())
	assert.Zero(t, sc.OldestRunnableAge)
	assert.True(t, sc.Paused)
	require.NotNil(t, sc.PausedAt)

	// Resumed, a queue without jobs still appears, with zeros.
	_, err = a.ResumeQueue(ctx, "c")
	require.NoError(t, err)
	stats, err = a.Stats(ctx)
	require.NoError(t, err)
	require.Len(t, stats, 3)
	assert.Equal(t, tasuki.QueueStats{Queue: "c", Retention: defaults}, stats[2])
}

func TestAdminSchemaMissing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newAdmin(t, testdb.NewEmpty(t))
	_, err := a.Stats(ctx)
	assert.ErrorIs(t, err, tasuki.ErrSchemaMissing)
	_, err = a.List(ctx, tasuki.ListParams{})
	assert.ErrorIs(t, err, tasuki.ErrSchemaMissing)
	_, err = a.Get(ctx, 1)
	assert.ErrorIs(t, err, tasuki.ErrSchemaMissing)
	_, err = a.CancelMany(ctx, tasuki.JobFilter{Queue: "q"})
	assert.ErrorIs(t, err, tasuki.ErrSchemaMissing)
	_, err = a.Clean(ctx, tasuki.CleanParams{FinishedBefore: time.Now()})
	assert.ErrorIs(t, err, tasuki.ErrSchemaMissing)
	_, err = a.PauseQueue(ctx, "q")
	assert.ErrorIs(t, err, tasuki.ErrSchemaMissing)
}

// TestAdminListPagination walks many jobs that share one created_at, a few
// per page: every job appears exactly once, newest first, and the first
// page starts with the newest job (the Rust original's defect 5).
func TestAdminListPagination(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	a := newAdmin(t, pool)
	c := newClient(t, pool, tasuki.ClientConfig{Queue: "many"})

	const total = 103
	payloads := make([]email, total)
	for i := range payloads {
		payloads[i] = email{To: fmt.Sprintf("%d@example.com", i)}
	}
	// One transaction: now(), and so created_at, is the same for all.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = c.InsertManyTx(ctx, tx, payloads, nil)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))

	var newest int64
	require.NoError(t, pool.QueryRow(ctx, "SELECT max(id) FROM tasuki_job").Scan(&newest))
	var distinct int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(DISTINCT created_at) FROM tasuki_job").Scan(&distinct))
	require.Equal(t, 1, distinct, "the jobs must share one created_at")

	seen := make(map[int64]int)
	var order []int64
	params := tasuki.ListParams{Queue: "many", Limit: 10}
	pages := 0
	for {
		page, err := a.List(ctx, params)
		require.NoError(t, err)
		pages++
		if pages == 1 {
			require.NotEmpty(t, page.Jobs)
			assert.Equal(t, newest, page.Jobs[0].ID, "the first page starts with the newest job")
		}
		assert.LessOrEqual(t, len(page.Jobs), 10)
		for _, j := range page.Jobs {
			seen[j.ID]++
			order = append(order, j.ID)
			assert.JSONEq(t, fmt.Sprintf(`{"to":%q,"subject":""}`, fmt.Sprintf("%d@example.com", j.ID-newest+total-1)), string(j.Payload))
		}
		if page.Next == 0 {
			break
		}
		assert.Equal(t, page.Jobs[len(page.Jobs)-1].ID, page.Next)
		params.After = page.Next
		require.Less(t, pages, 100, "pagination does not end")
	}
	assert.Equal(t, 11, pages)
	assert.Len(t, seen, total)
	for id, n := range seen {
		assert.Equal(t, 1, n, "job %d listed %d times", id, n)
	}
	for i := 1; i < len(order); i++ {
		assert.Greater(t, order[i-1], order[i], "newest first")
	}

	// A page that ends exactly at the last job says there is no next one.
	page, err := a.List(ctx, tasuki.ListParams{Limit: total})
	require.NoError(t, err)
	assert.Len(t, page.Jobs, total)
	assert.Zero(t, page.Next)

	// The default limit is 100.
	page, err = a.List(ctx, tasuki.ListParams{})
	require.NoError(t, err)
	assert.Len(t, page.Jobs, 100)
	assert.Equal(t, page.Jobs[99].ID, page.Next)
}

func TestAdminListFilters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	a := newAdmin(t, pool)

	pending := jobIn(t, pool, "a", tasuki.StatusPending)
	failed := jobIn(t, pool, "a", tasuki.StatusFailed)
	completed := jobIn(t, pool, "b", tasuki.StatusCompleted)
	old := jobIn(t, pool, "b", tasuki.StatusPending)
	_, err := pool.Exec(ctx, "UPDATE tasuki_job SET created_at = now() - interval '2 days' WHERE id = $1", old)
	require.NoError(t, err)

	ids := func(p tasuki.ListParams) []int64 {
		t.Helper()
		page, err := a.List(ctx, p)
		require.NoError(t, err)
		out := []int64{}
		for _, j := range page.Jobs {
			out = append(out, j.ID)
		}
		return out
	}
	assert.Equal(t, []int64{old, completed, failed, pending}, ids(tasuki.ListParams{}))
	assert.Equal(t, []int64{failed, pending}, ids(tasuki.ListParams{Queue: "a"}))
	assert.Equal(t, []int64{}, ids(tasuki.ListParams{Queue: "nope"}))
	assert.Equal(t, []int64{old, pending}, ids(tasuki.ListParams{Statuses: []tasuki.Status{tasuki.StatusPending}}))
	assert.Equal(t, []int64{completed, failed}, ids(tasuki.ListParams{Statuses: []tasuki.Status{tasuki.StatusFailed, tasuki.StatusCompleted}}))
	assert.Equal(t, []int64{old}, ids(tasuki.ListParams{Queue: "b", Statuses: []tasuki.Status{tasuki.StatusPending}}))
	day := time.Now().Add(-24 * time.Hour)
	assert.Equal(t, []int64{completed, failed, pending}, ids(tasuki.ListParams{CreatedAfter: day}))
	assert.Equal(t, []int64{old}, ids(tasuki.ListParams{CreatedBefore: day}))
	assert.Equal(t, []int64{old}, ids(tasuki.ListParams{CreatedAfter: day.Add(-48 * time.Hour), CreatedBefore: day}))

	job := adminGet(t, a, failed)
	page, err := a.List(ctx, tasuki.ListParams{Queue: "a", Statuses: []tasuki.Status{tasuki.StatusFailed}})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 1)
	assert.Equal(t, job, page.Jobs[0], "List returns jobs as Get does")

	for _, p := range []tasuki.ListParams{
		{Limit: -1},
		{Limit: tasuki.MaxListLimit + 1},
		{After: -5},
		{Statuses: []tasuki.Status{"done"}},
		{CreatedAfter: day, CreatedBefore: day},
	} {
		_, err := a.List(ctx, p)
		var invalid *tasuki.InvalidOptionError
		assert.ErrorAs(t, err, &invalid, "%+v", p)
	}
	page, err = a.List(ctx, tasuki.ListParams{Limit: tasuki.MaxListLimit})
	require.NoError(t, err)
	assert.Len(t, page.Jobs, 4)
}

func TestAdminGet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	a := newAdmin(t, pool)

	id := jobIn(t, pool, "q", tasuki.StatusFailed)
	job := adminGet(t, a, id)
	assert.Equal(t, tasuki.StatusFailed, job.Status)
	assert.Equal(t, "q", job.Queue)
	assert.JSONEq(t, `{"to":"failed@example.com","subject":""}`, string(job.Payload))
	require.Len(t, job.Errors, 1)
	assert.Equal(t, 1, job.Errors[0].Attempt)
	assert.Equal(t, "boom", job.Errors[0].Error)
	assert.NotNil(t, job.FinishedAt)

	_, err := a.Get(ctx, id+1000)
	assert.ErrorIs(t, err, tasuki.ErrJobNotFound)
	assert.EqualError(t, err, fmt.Sprintf("tasuki: job %d not found", id+1000))
}

func TestAdminCancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	a := newAdmin(t, pool)

	pending := jobIn(t, pool, "q", tasuki.StatusPending)
	running := jobIn(t, pool, "q", tasuki.StatusRunning)
	completed := jobIn(t, pool, "q", tasuki.StatusCompleted)
	failed := jobIn(t, pool, "q", tasuki.StatusFailed)
	runningRow, err := db.New(pool).JobGet(ctx, running)
	require.NoError(t, err)
	next := listen(t, pool)

	job, err := a.Cancel(ctx, pending)
	require.NoError(t, err)
	assert.Equal(t, pending, job.ID)
	assert.Equal(t, tasuki.StatusCanceled, job.Status)
	assert.NotNil(t, job.FinishedAt)
	assert.Equal(t, "canceled: by request", job.LastError())

	job, err = a.Cancel(ctx, running)
	require.NoError(t, err)
	assert.Equal(t, tasuki.StatusCanceled, job.Status)
	// The running job's worker is told.
	notifyMarker(t, pool)
	for {
		n := nextNote(t, next)
		if n["k"] == "cancel" && n["id"] == float64(running) {
			assert.Equal(t, "q", n["q"])
			break
		}
		require.NotEqual(t, "marker", n["q"], "no cancel notification for the running job")
	}
	// Its worker's late result changes nothing.
	ids, err := db.New(pool).JobFinishMany(ctx, db.JobFinishManyParams{
		Ids: []int64{running}, Tokens: []pgtype.UUID{runningRow.LeaseToken}, Statuses: []string{"completed"},
		DelaysUs: []int64{0}, Errors: []string{""}, GiveBack: []bool{false},
	})
	require.NoError(t, err)
	assert.Empty(t, ids)
	assert.Equal(t, tasuki.StatusCanceled, adminGet(t, a, running).Status)

	// Finished jobs stay as they finished (the Rust original's defect 6).
	for id, status := range map[int64]tasuki.Status{completed: tasuki.StatusCompleted, failed: tasuki.StatusFailed, pending: tasuki.StatusCanceled} {
		before := adminGet(t, a, id)
		_, err := a.Cancel(ctx, id)
		var finished *tasuki.JobFinishedError
		require.ErrorAs(t, err, &finished)
		assert.Equal(t, status, finished.Status)
		assert.Equal(t, id, finished.JobID)
		assert.Equal(t, before, adminGet(t, a, id))
	}

	_, err = a.Cancel(ctx, failed+1000)
	assert.ErrorIs(t, err, tasuki.ErrJobNotFound)
	assert.Contains(t, err.Error(), fmt.Sprintf("job %d not found", failed+1000))
}

func TestAdminCancelMany(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	a := newAdmin(t, pool)

	p1 := jobIn(t, pool, "q", tasuki.StatusPending)
	p2 := jobIn(t, pool, "q", tasuki.StatusPending)
	r1 := jobIn(t, pool, "q", tasuki.StatusRunning)
	c1 := jobIn(t, pool, "q", tasuki.StatusCompleted)
	f1 := jobIn(t, pool, "q", tasuki.StatusFailed)
	x1 := jobIn(t, pool, "canceled-before", tasuki.StatusCanceled)
	other := jobIn(t, pool, "other", tasuki.StatusPending)
	next := listen(t, pool)
	status := func(id int64) tasuki.Status { return adminGet(t, a, id).Status }

	// Only pending: the running job goes on.
	n, err := a.CancelMany(ctx, tasuki.JobFilter{Queue: "q", Statuses: []tasuki.Status{tasuki.StatusPending}, IDs: []int64{p1}})
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	assert.Equal(t, tasuki.StatusCanceled, status(p1))
	assert.Equal(t, tasuki.StatusPending, status(p2))

	// The whole queue: pending and running, never the finished jobs.
	finishedBefore := map[int64]*tasuki.Job[json.RawMessage]{c1: adminGet(t, a, c1), f1: adminGet(t, a, f1), p1: adminGet(t, a, p1)}
	n, err = a.CancelMany(ctx, tasuki.JobFilter{Queue: "q"})
	require.NoError(t, err)
	assert.Equal(t, int64(2), n)
	assert.Equal(t, tasuki.StatusCanceled, status(p2))
	assert.Equal(t, tasuki.StatusCanceled, status(r1))
	for id, before := range finishedBefore {
		assert.Equal(t, before, adminGet(t, a, id), "finished job %d changed", id)
	}
	assert.Equal(t, tasuki.StatusPending, status(other))
	assert.Equal(t, "canceled: by request", adminGet(t, a, r1).LastError())

	// One notification, for the running job only.
	notifyMarker(t, pool)
	note := nextNote(t, next)
	assert.Equal(t, "cancel", note["k"])
	assert.Equal(t, float64(r1), note["id"])
	assert.Equal(t, "marker", nextNote(t, next)["q"])

	// By ids across queues; finished ids are ignored.
	n, err = a.CancelMany(ctx, tasuki.JobFilter{IDs: []int64{other, c1, x1, other + 1000}})
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	assert.Equal(t, tasuki.StatusCanceled, status(other))

	n, err = a.CancelMany(ctx, tasuki.JobFilter{Queue: "q"})
	require.NoError(t, err)
	assert.Zero(t, n)

	for _, f := range []tasuki.JobFilter{
		{},
		{Statuses: []tasuki.Status{tasuki.StatusPending}},
		{Queue: "q", Statuses: []tasuki.Status{tasuki.StatusCompleted}},
		{Queue: "q", Statuses: []tasuki.Status{"bogus"}},
	} {
		_, err := a.CancelMany(ctx, f)
		var invalid *tasuki.InvalidOptionError
		assert.ErrorAs(t, err, &invalid, "%+v", f)
	}
}

func TestAdminRetry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	a := newAdmin(t, pool)

	failed := jobIn(t, pool, "q", tasuki.StatusFailed)
	canceled := jobIn(t, pool, "q", tasuki.StatusCanceled)
	before := adminGet(t, a, failed)
	require.Equal(t, before.MaxAttempts, before.Attempt, "a failed job has used all its attempts")
	next := listen(t, pool)

	job, err := a.Retry(ctx, failed)
	require.NoError(t, err)
	assert.Equal(t, tasuki.StatusPending, job.Status)
	assert.Zero(t, job.Attempt)
	assert.Nil(t, job.FinishedAt)
	assert.Equal(t, before.Errors, job.Errors, "the error history is kept")
	assert.False(t, job.ScheduledAt.After(time.Now().Add(time.Minute)))
	assert.True(t, job.ScheduledAt.After(before.ScheduledAt) || job.ScheduledAt.Equal(before.ScheduledAt))
	// Workers of the queue are woken.
	note := nextNote(t, next)
	assert.Equal(t, map[string]any{"k": "insert", "s": note["s"], "q": "q"}, note)

	job, err = a.Retry(ctx, canceled)
	require.NoError(t, err)
	assert.Equal(t, tasuki.StatusPending, job.Status)

	// Both run again, with a full set of attempts.
	rows := leaseJobs(t, pool, "q", 10)
	require.Len(t, rows, 2)
	for _, r := range rows {
		assert.Equal(t, int32(1), r.Attempts)
	}
	finishJobs(t, pool, rows, "completed", "")

	for _, s := range []tasuki.Status{tasuki.StatusPending, tasuki.StatusRunning, tasuki.StatusCompleted} {
		id := jobIn(t, pool, "other-"+string(s), s)
		before := adminGet(t, a, id)
		_, err := a.Retry(ctx, id)
		var statusErr *tasuki.JobStatusError
		require.ErrorAs(t, err, &statusErr, "%s", s)
		assert.Equal(t, s, statusErr.Status)
		assert.Contains(t, err.Error(), "only failed or canceled jobs can be retried")
		assert.Equal(t, before, adminGet(t, a, id))
	}
	_, err = a.Retry(ctx, 1_000_000)
	assert.ErrorIs(t, err, tasuki.ErrJobNotFound)
}

// TestAdminRetryManyFailed is the Rust original's defect 3: "retry failed
// jobs" must match jobs that failed because they ran out of attempts.
func TestAdminRetryManyFailed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	a := newAdmin(t, pool)

	f1 := jobIn(t, pool, "q", tasuki.StatusFailed)
	f2 := jobIn(t, pool, "q", tasuki.StatusFailed)
	x1 := jobIn(t, pool, "q", tasuki.StatusCanceled)
	c1 := jobIn(t, pool, "q", tasuki.StatusCompleted)
	r1 := jobIn(t, pool, "q", tasuki.StatusRunning)
	p1 := jobIn(t, pool, "q", tasuki.StatusPending)
	fOther := jobIn(t, pool, "other", tasuki.StatusFailed)
	xOther := jobIn(t, pool, "third", tasuki.StatusCanceled)
	next := listen(t, pool)
	status := func(id int64) tasuki.Status { return adminGet(t, a, id).Status }

	n, err := a.RetryMany(ctx, tasuki.JobFilter{Queue: "q", Statuses: []tasuki.Status{tasuki.StatusFailed}})
	require.NoError(t, err)
	assert.Equal(t, int64(2), n)
	for _, id := range []int64{f1, f2} {
		job := adminGet(t, a, id)
		assert.Equal(t, tasuki.StatusPending, job.Status)
		assert.Zero(t, job.Attempt)
		assert.Nil(t, job.FinishedAt)
		assert.Len(t, job.Errors, 1)
	}
	assert.Equal(t, tasuki.StatusCanceled, status(x1))
	assert.Equal(t, tasuki.StatusCompleted, status(c1))
	assert.Equal(t, tasuki.StatusRunning, status(r1))
	assert.Equal(t, tasuki.StatusPending, status(p1))
	assert.Equal(t, tasuki.StatusFailed, status(fOther))
	// One wake-up for the queue.
	notifyMarker(t, pool)
	assert.Equal(t, "q", nextNote(t, next)["q"])
	assert.Equal(t, "marker", nextNote(t, next)["q"])

	// Without statuses: failed and canceled; by ids across queues, one
	// wake-up per queue.
	n, err = a.RetryMany(ctx, tasuki.JobFilter{IDs: []int64{x1, c1, r1, fOther, xOther}})
	require.NoError(t, err)
	assert.Equal(t, int64(3), n)
	for _, id := range []int64{x1, fOther, xOther} {
		assert.Equal(t, tasuki.StatusPending, status(id))
	}
	notifyMarker(t, pool)
	woken := map[string]bool{}
	for range 3 {
		woken[nextNote(t, next)["q"].(string)] = true
	}
	assert.Equal(t, map[string]bool{"q": true, "other": true, "third": true}, woken)
	assert.Equal(t, "marker", nextNote(t, next)["q"])

	n, err = a.RetryMany(ctx, tasuki.JobFilter{Queue: "q"})
	require.NoError(t, err)
	assert.Zero(t, n)

	for _, f := range []tasuki.JobFilter{
		{},
		{Queue: "q", Statuses: []tasuki.Status{tasuki.StatusPending}},
		{Queue: "q", Statuses: []tasuki.Status{tasuki.StatusCompleted}},
	} {
		_, err := a.RetryMany(ctx, f)
		var invalid *tasuki.InvalidOptionError
		assert.ErrorAs(t, err, &invalid, "%+v", f)
	}
}

func TestAdminDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	a := newAdmin(t, pool)

	for _, s := range []tasuki.Status{tasuki.StatusCompleted, tasuki.StatusFailed, tasuki.StatusCanceled} {
		id := jobIn(t, pool, "q", s)
		before := adminGet(t, a, id)
		job, err := a.Delete(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, before, job)
		_, err = a.Get(ctx, id)
		assert.ErrorIs(t, err, tasuki.ErrJobNotFound)
		_, err = a.Delete(ctx, id)
		assert.ErrorIs(t, err, tasuki.ErrJobNotFound)
		assert.Contains(t, err.Error(), fmt.Sprintf("job %d not found", id))
	}
	for _, s := range []tasuki.Status{tasuki.StatusPending, tasuki.StatusRunning} {
		id := jobIn(t, pool, "q", s)
		_, err := a.Delete(ctx, id)
		var statusErr *tasuki.JobStatusError
		require.ErrorAs(t, err, &statusErr)
		assert.Equal(t, s, statusErr.Status)
		assert.Equal(t, "delete", statusErr.Op)
		assert.Contains(t, err.Error(), "cancel it first")
		assert.Equal(t, s, adminGet(t, a, id).Status)
	}
}

// finishedAgo moves a finished job's finish time into the past.
func finishedAgo(t *testing.T, pool *pgxpool.Pool, id int64, ago time.Duration) {
	t.Helper()
	_, err := pool.Exec(context.Background(),
		"UPDATE tasuki_job SET finished_at = now() - $2 * interval '1 microsecond' WHERE id = $1", id, ago.Microseconds())
	require.NoError(t, err)
}

func TestAdminClean(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	a := newAdmin(t, pool)

	// 10 old jobs of each finished status in queue "q", 3 old in "other",
	// recent finished ones, and pending and running ones.
	old := map[tasuki.Status][]int64{}
	for _, s := range []tasuki.Status{tasuki.StatusCompleted, tasuki.StatusFailed, tasuki.StatusCanceled} {
		for range 10 {
			id := jobIn(t, pool, "q", s)
			finishedAgo(t, pool, id, 48*time.Hour)
			old[s] = append(old[s], id)
		}
	}
	var otherOld []int64
	for range 3 {
		id := jobIn(t, pool, "other", tasuki.StatusCompleted)
		finishedAgo(t, pool, id, 48*time.Hour)
		otherOld = append(otherOld, id)
	}
	recent := jobIn(t, pool, "q", tasuki.StatusCompleted)
	finishedAgo(t, pool, recent, time.Hour)
	pending := jobIn(t, pool, "q", tasuki.StatusPending)
	running := jobIn(t, pool, "q", tasuki.StatusRunning)
	day := time.Now().Add(-24 * time.Hour)

	// Only the failed ones of "q".
	p := tasuki.CleanParams{Queue: "q", Statuses: []tasuki.Status{tasuki.StatusFailed}, FinishedBefore: day, BatchSize: 3}
	count, err := a.CleanCount(ctx, p)
	require.NoError(t, err)
	assert.Equal(t, int64(10), count)
	var progress []int64
	p.OnBatch = func(deleted int64) { progress = append(progress, deleted) }
	n, err := a.Clean(ctx, p)
	require.NoError(t, err)
	assert.Equal(t, int64(10), n)
	assert.Equal(t, []int64{3, 6, 9, 10}, progress)
	for _, id := range old[tasuki.StatusFailed] {
		_, err := a.Get(ctx, id)
		assert.ErrorIs(t, err, tasuki.ErrJobNotFound)
	}

	// Every finished status of every queue, by default.
	p = tasuki.CleanParams{FinishedBefore: day}
	count, err = a.CleanCount(ctx, p)
	require.NoError(t, err)
	assert.Equal(t, int64(23), count)
	n, err = a.Clean(ctx, p)
	require.NoError(t, err)
	assert.Equal(t, int64(23), n)

	// What is left: the recent, pending and running jobs.
	page, err := a.List(ctx, tasuki.ListParams{})
	require.NoError(t, err)
	var left []int64
	for _, j := range page.Jobs {
		left = append(left, j.ID)
	}
	assert.Equal(t, []int64{running, pending, recent}, left)

	// Nothing more to do: not an error.
	n, err = a.Clean(ctx, p)
	require.NoError(t, err)
	assert.Zero(t, n)

	// Even a cut-off in the future never deletes pending or running jobs.
	n, err = a.Clean(ctx, tasuki.CleanParams{FinishedBefore: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	page, err = a.List(ctx, tasuki.ListParams{})
	require.NoError(t, err)
	assert.Len(t, page.Jobs, 2)

	for _, p := range []tasuki.CleanParams{
		{},
		{FinishedBefore: day, BatchSize: -1},
		{FinishedBefore: day, BatchSize: tasuki.MaxCleanBatchSize + 1},
		{FinishedBefore: day, Statuses: []tasuki.Status{tasuki.StatusPending}},
	} {
		_, err := a.Clean(ctx, p)
		var invalid *tasuki.InvalidOptionError
		assert.ErrorAs(t, err, &invalid, "%+v", p)
	}
}

func TestAdminCleanStopsWithContext(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	a := newAdmin(t, pool)
	for range 5 {
		id := jobIn(t, pool, "q", tasuki.StatusCompleted)
		finishedAgo(t, pool, id, time.Hour)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := a.Clean(ctx, tasuki.CleanParams{FinishedBefore: time.Now(), BatchSize: 2, OnBatch: func(int64) { cancel() }})
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, int64(2), n, "the first batch is kept")
}

func TestAdminPauseResumeLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	a := newAdmin(t, pool)

	running := jobIn(t, pool, "q", tasuki.StatusRunning)
	runningRow, err := db.New(pool).JobGet(ctx, running)
	require.NoError(t, err)
	jobIn(t, pool, "q", tasuki.StatusPending)
	jobIn(t, pool, "other", tasuki.StatusPending)

	changed, err := a.PauseQueue(ctx, "q")
	require.NoError(t, err)
	assert.True(t, changed, "the queue was running")
	stats, err := a.Stats(ctx)
	require.NoError(t, err)
	require.Len(t, stats, 2)
	require.NotNil(t, stats[1].PausedAt)
	pausedAt := *stats[1].PausedAt
	// Pausing again keeps the first pause time and says nothing changed.
	changed, err = a.PauseQueue(ctx, "q")
	require.NoError(t, err)
	assert.False(t, changed, "the queue was already paused")
	stats, err = a.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, pausedAt, *stats[1].PausedAt)

	assert.Empty(t, leaseJobs(t, pool, "q", 10), "a paused queue leases nothing")
	assert.Len(t, leaseJobs(t, pool, "other", 10), 1, "other queues go on")
	// The running job finishes.
	finishJobs(t, pool, []*db.TasukiJob{runningRow}, "completed", "")
	assert.Equal(t, tasuki.StatusCompleted, adminGet(t, a, running).Status)

	next := listen(t, pool)
	resumed, err := a.ResumeQueue(ctx, "q")
	require.NoError(t, err)
	assert.True(t, resumed)
	assert.Equal(t, "q", nextNote(t, next)["q"], "resume wakes the queue's workers")
	assert.Len(t, leaseJobs(t, pool, "q", 10), 1)
	stats, err = a.Stats(ctx)
	require.NoError(t, err)
	assert.False(t, stats[1].Paused)

	// Resuming a known queue that is not paused is not an error, and says
	// nothing changed; a queue tasuki does not know is an error.
	resumed, err = a.ResumeQueue(ctx, "q")
	require.NoError(t, err)
	assert.False(t, resumed)
	resumed, err = a.ResumeQueue(ctx, "other")
	require.NoError(t, err, "a queue with jobs is known")
	assert.False(t, resumed)
	_, err = a.ResumeQueue(ctx, "never-paused")
	assert.ErrorIs(t, err, tasuki.ErrQueueNotFound)
	assert.Contains(t, err.Error(), `"never-paused"`)

	var invalid *tasuki.InvalidOptionError
	_, err = a.PauseQueue(ctx, "")
	assert.ErrorAs(t, err, &invalid)
	_, err = a.ResumeQueue(ctx, string(make([]byte, 200)))
	assert.ErrorAs(t, err, &invalid)
}

// TestAdminPauseResumeWorker pauses the queue of a real worker: it starts
// nothing new while paused, and resume wakes it at once, long before its
// next poll.
func TestAdminPauseResumeWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, waitListening := listenerPool(t)
	a := newAdmin(t, pool)
	c := newClient(t, pool, tasuki.ClientConfig{Queue: "w"})

	started := make(chan int64, 10)
	release := make(chan struct{})
	w, err := worker.New(pool, worker.Config{Queue: "w", PollInterval: 10 * time.Minute, Logger: discardLogger()}, worker.Handle(worker.HandlerFunc[email](func(ctx context.Context, job *tasuki.Job[email]) error {
		started <- job.ID
		if job.Payload.Subject == "slow" {
			<-release
		}
		return nil
	})))
	require.NoError(t, err)
	runWorker(t, w)

	// A job that runs while the queue gets paused.
	slow, err := c.Insert(ctx, email{Subject: "slow"}, nil)
	require.NoError(t, err)
	require.Equal(t, slow.ID, receiveID(t, started))
	_, err = a.PauseQueue(ctx, "w")
	require.NoError(t, err)

	// Inserted while paused: the insert's NOTIFY wakes the worker, which
	// leases nothing; the running job finishes.
	queued, err := c.Insert(ctx, email{Subject: "queued"}, nil)
	require.NoError(t, err)
	close(release)
	waitStatus(t, a, slow.ID, tasuki.StatusCompleted)
	assert.Equal(t, tasuki.StatusPending, adminGet(t, a, queued.ID).Status)
	select {
	case id := <-started:
		t.Fatalf("job %d started in a paused queue", id)
	default:
	}

	// Resume: the worker, polling only every 10 minutes, starts it now.
	waitListening()
	_, err = a.ResumeQueue(ctx, "w")
	require.NoError(t, err)
	assert.Equal(t, queued.ID, receiveID(t, started))
	waitStatus(t, a, queued.ID, tasuki.StatusCompleted)
}

func receiveID(t *testing.T, ch <-chan int64) int64 {
	t.Helper()
	select {
	case id := <-ch:
		return id
	case <-time.After(60 * time.Second):
		t.Fatal("no job started")
		return 0
	}
}

func waitStatus(t *testing.T, a *tasuki.Admin, id int64, want tasuki.Status) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for adminGet(t, a, id).Status != want {
		if time.Now().After(deadline) {
			t.Fatalf("job %d is not %s", id, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAdminCancelRunningJobOfWorker cancels a running job through the
// Admin: its handler's context ends through the NOTIFY (the lease, and
// so the heartbeat fallback, is 10 minutes long), and the job stays
// canceled.
func TestAdminCancelRunningJobOfWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, waitListening := listenerPool(t)
	a := newAdmin(t, pool)
	c := newClient(t, pool, tasuki.ClientConfig{Queue: "w"})

	started := make(chan int64, 1)
	stopped := make(chan error, 1)
	w, err := worker.New(pool, worker.Config{Queue: "w", LeaseDuration: 10 * time.Minute, Logger: discardLogger()}, worker.Handle(worker.HandlerFunc[email](func(ctx context.Context, job *tasuki.Job[email]) error {
		started <- job.ID
		<-ctx.Done()
		stopped <- context.Cause(ctx)
		return ctx.Err()
	})))
	require.NoError(t, err)
	stop := runWorker(t, w)

	job, err := c.Insert(ctx, email{}, nil)
	require.NoError(t, err)
	require.Equal(t, job.ID, receiveID(t, started))
	waitListening()
	n, err := a.CancelMany(ctx, tasuki.JobFilter{Queue: "w", Statuses: []tasuki.Status{tasuki.StatusRunning}})
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	select {
	case <-stopped:
	case <-time.After(60 * time.Second):
		t.Fatal("the handler's context was not canceled")
	}
	stop()
	assert.Equal(t, tasuki.StatusCanceled, adminGet(t, a, job.ID).Status)
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// listenerPool returns a pool on a fresh migrated schema and a function
// that waits until a worker using the pool has its notification listener
// connected and LISTENing, so that a test can count on NOTIFY rather than
// on a poll or a heartbeat.
func listenerPool(t *testing.T) (*pgxpool.Pool, func()) {
	t.Helper()
	_, url := testdb.Schema(t)
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	var mu sync.Mutex
	var pids []uint32
	cfg.ConnConfig.AfterConnect = func(_ context.Context, c *pgconn.PgConn) error {
		if c.ParameterStatus("application_name") == "tasuki-listener" {
			mu.Lock()
			pids = append(pids, c.PID())
			mu.Unlock()
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	testdb.MigrateUp(t, pool)
	return pool, func() {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			mu.Lock()
			listeners := append([]uint32(nil), pids...)
			mu.Unlock()
			if len(listeners) > 0 {
				var ok bool
				require.NoError(t, pool.QueryRow(context.Background(), `
					SELECT EXISTS (SELECT FROM pg_stat_activity
					               WHERE pid = $1 AND state = 'idle' AND query LIKE '%LISTEN tasuki_jobs%')`,
					int32(listeners[len(listeners)-1])).Scan(&ok))
				if ok {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("the worker's listener did not LISTEN")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// runWorker runs w until the test ends or the returned stop is called.
func runWorker(t *testing.T, w *worker.Worker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-time.After(2 * time.Minute):
				t.Error("worker did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestAdminCancelManyRacesCompletion is the other half of the Rust
// original's defect 6: a bulk cancel that waits for a worker's completion
// to commit finds the job finished and leaves it completed.
func TestAdminCancelManyRacesCompletion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	a := newAdmin(t, pool)
	id := jobIn(t, pool, "q", tasuki.StatusRunning)
	row, err := db.New(pool).JobGet(ctx, id)
	require.NoError(t, err)

	// The worker's outcome, written but not yet committed.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	done, err := db.New(tx).JobFinishMany(ctx, db.JobFinishManyParams{
		Ids: []int64{id}, Tokens: []pgtype.UUID{row.LeaseToken}, Statuses: []string{"completed"},
		DelaysUs: []int64{0}, Errors: []string{""}, GiveBack: []bool{false},
	})
	require.NoError(t, err)
	require.Equal(t, []int64{id}, done)

	type result struct {
		n   int64
		err error
	}
	canceled := make(chan result, 1)
	go func() {
		n, err := a.CancelMany(ctx, tasuki.JobFilter{Queue: "q"})
		canceled <- result{n, err}
	}()
	// Wait until the cancel is blocked on the job's row lock.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var waiting bool
		require.NoError(t, pool.QueryRow(ctx, `
			SELECT EXISTS (SELECT FROM pg_stat_activity
			               WHERE wait_event_type = 'Lock' AND query LIKE '-- name: JobCancelMany%'
			                 AND pid <> pg_backend_pid())`).Scan(&waiting))
		if waiting {
			break
		}
		require.True(t, time.Now().Before(deadline), "the cancel never waited for the row")
		time.Sleep(5 * time.Millisecond)
	}
	require.NoError(t, tx.Commit(ctx))

	r := <-canceled
	require.NoError(t, r.err)
	assert.Zero(t, r.n)
	job := adminGet(t, a, id)
	assert.Equal(t, tasuki.StatusCompleted, job.Status)
	assert.Empty(t, job.Errors)
}
