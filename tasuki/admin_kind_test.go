package tasuki_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// Payload types of two kinds, for the tests of kinds.
type (
	sendEmail struct {
		To string `json:"to"`
	}
	sendSMS struct {
		Number string `json:"number"`
	}
)

func (sendEmail) Kind() string { return "send_email" }
func (*sendSMS) Kind() string  { return "send_sms" }

// insertKinds inserts n jobs of each of sendEmail and sendSMS into queue,
// through clients of their own, and returns their ids by kind.
func insertKinds(t *testing.T, pool *pgxpool.Pool, queue string, n int) map[string][]int64 {
	t.Helper()
	ctx := context.Background()
	emails, err := tasuki.NewClient[sendEmail](pool, tasuki.ClientConfig{Queue: queue})
	require.NoError(t, err)
	sms, err := tasuki.NewClient[sendSMS](pool, tasuki.ClientConfig{Queue: queue})
	require.NoError(t, err)
	ids := map[string][]int64{}
	for range n {
		e, err := emails.Insert(ctx, sendEmail{To: "a@example.com"}, nil)
		require.NoError(t, err)
		s, err := sms.Insert(ctx, sendSMS{Number: "+100"}, nil)
		require.NoError(t, err)
		ids[e.Kind] = append(ids[e.Kind], e.ID)
		ids[s.Kind] = append(ids[s.Kind], s.ID)
	}
	require.NoError(t, emails.Flush(ctx))
	require.NoError(t, sms.Flush(ctx))
	return ids
}

// setStatus brings jobs to a finished status directly, as a worker's
// outcome would.
func setStatus(t *testing.T, pool *pgxpool.Pool, status tasuki.Status, ids ...int64) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `UPDATE tasuki_job
		SET status = $2::tasuki_job_status, attempts = 1, finished_at = now() - interval '1 hour'
		WHERE id = ANY($1)`, ids, string(status))
	require.NoError(t, err)
}

// recordProcess records a worker process as the worker does while it
// runs, expiring in expiresIn (negative: a process that died).
func recordProcess(t *testing.T, pool *pgxpool.Pool, host string, pid int, queues, kinds []string, expiresIn time.Duration) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `INSERT INTO tasuki_process (id, host, pid, queues, kinds, started_at, expires_at)
		VALUES (gen_random_uuid(), $1, $2, $3, $4, now() - interval '1 hour', now() + $5 * interval '1 microsecond')`,
		host, pid, queues, kinds, expiresIn.Microseconds())
	require.NoError(t, err)
}

func TestAdminStatsByKind(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	adm, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)

	ids := insertKinds(t, pool, "notify", 3)
	setStatus(t, pool, tasuki.StatusFailed, ids["send_sms"][0])
	// A queue whose only kind has no pending jobs: nothing waits on it.
	done := insertKinds(t, pool, "archive", 1)
	setStatus(t, pool, tasuki.StatusCompleted, done["send_email"][0], done["send_sms"][0])
	// A paused queue without jobs.
	_, err = adm.PauseQueue(ctx, "idle")
	require.NoError(t, err)

	// A live process handles send_email in notify; another handles
	// send_sms, but in another queue; one that handled both died.
	recordProcess(t, pool, "host-a", 101, []string{"notify", "archive"}, []string{"send_email"}, time.Hour)
	recordProcess(t, pool, "host-b", 202, []string{"elsewhere"}, []string{"send_sms", "send_email"}, time.Hour)
	recordProcess(t, pool, "host-c", 303, []string{"notify"}, []string{"send_email", "send_sms"}, -time.Minute)

	stats, err := adm.Stats(ctx)
	require.NoError(t, err)
	require.Len(t, stats, 3)
	archive, idle, notify := stats[0], stats[1], stats[2]

	assert.Equal(t, "notify", notify.Queue)
	assert.Equal(t, int64(5), notify.Pending)
	assert.Equal(t, int64(1), notify.Failed)
	assert.Equal(t, int64(6), notify.Total())
	assert.Equal(t, 1, notify.Processes, "host-a; host-c is dead, host-b works another queue")
	require.Len(t, notify.Kinds, 2)
	assert.Equal(t, tasuki.KindStats{Kind: "send_email", Pending: 3, Processes: 1,
		OldestRunnableAge: notify.Kinds[0].OldestRunnableAge}, notify.Kinds[0])
	assert.Equal(t, tasuki.KindStats{Kind: "send_sms", Pending: 2, Failed: 1, Processes: 0, Unhandled: true,
		OldestRunnableAge: notify.Kinds[1].OldestRunnableAge}, notify.Kinds[1])
	assert.Equal(t, []string{"send_sms"}, notify.UnhandledKinds(), "only the kind no live process lists with the queue")
	assert.Equal(t, max(notify.Kinds[0].OldestRunnableAge, notify.Kinds[1].OldestRunnableAge), notify.OldestRunnableAge)

	assert.Equal(t, "archive", archive.Queue)
	require.Len(t, archive.Kinds, 2)
	assert.Equal(t, int64(1), archive.Kinds[1].Completed)
	assert.Equal(t, 0, archive.Kinds[1].Processes)
	assert.False(t, archive.Kinds[1].Unhandled, "no pending job waits for a worker")
	assert.Empty(t, archive.UnhandledKinds())

	assert.Equal(t, "idle", idle.Queue)
	assert.True(t, idle.Paused)
	assert.Empty(t, idle.Kinds)
	assert.Zero(t, idle.Processes)

	// Once a process handles send_sms in notify, no kind is unhandled.
	recordProcess(t, pool, "host-d", 404, []string{"notify"}, []string{"send_sms"}, time.Hour)
	stats, err = adm.Stats(ctx)
	require.NoError(t, err)
	assert.Empty(t, stats[2].UnhandledKinds())
	assert.Equal(t, 2, stats[2].Processes)
	assert.Equal(t, 1, stats[2].Kinds[1].Processes)
}

func TestAdminProcesses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	adm, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)

	procs, err := adm.Processes(ctx)
	require.NoError(t, err)
	assert.Empty(t, procs)
	assert.NotNil(t, procs)

	recordProcess(t, pool, "host-b", 7, []string{"notify"}, []string{"send_sms"}, time.Hour)
	recordProcess(t, pool, "host-a", 9, []string{"notify", "archive"}, []string{"send_email", "send_sms"}, time.Hour)
	recordProcess(t, pool, "host-a", 8, []string{"notify"}, []string{"send_email"}, -time.Second)

	procs, err = adm.Processes(ctx)
	require.NoError(t, err)
	require.Len(t, procs, 2, "the expired process is not live")
	assert.Equal(t, "host-a", procs[0].Host)
	assert.Equal(t, 9, procs[0].PID)
	assert.Equal(t, []string{"notify", "archive"}, procs[0].Queues)
	assert.Equal(t, []string{"send_email", "send_sms"}, procs[0].Kinds)
	assert.Len(t, procs[0].ID, 36, "a UUID")
	assert.True(t, procs[0].StartedAt.Before(procs[0].ExpiresAt))
	assert.True(t, procs[0].Handles("archive", "send_sms"))
	assert.False(t, procs[0].Handles("other", "send_sms"))
	assert.Equal(t, "host-b", procs[1].Host)
	assert.False(t, procs[1].Handles("notify", "send_email"))
}

func TestAdminListByKind(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	adm, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	ids := insertKinds(t, pool, "notify", 3)
	other := insertKinds(t, pool, "other", 1)

	page, err := adm.List(ctx, tasuki.ListParams{Kind: "send_sms"})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 4)
	for _, j := range page.Jobs {
		assert.Equal(t, "send_sms", j.Kind)
	}
	page, err = adm.List(ctx, tasuki.ListParams{Queue: "notify", Kind: "send_email"})
	require.NoError(t, err)
	got := []int64{}
	for _, j := range page.Jobs {
		got = append(got, j.ID)
	}
	assert.ElementsMatch(t, ids["send_email"], got)

	// Get and Decode keep the kind.
	job, err := adm.Get(ctx, other["send_sms"][0])
	require.NoError(t, err)
	assert.Equal(t, "send_sms", job.Kind)
	typed, err := tasuki.Decode[sendSMS](job)
	require.NoError(t, err)
	assert.Equal(t, "+100", typed.Payload.Number)

	page, err = adm.List(ctx, tasuki.ListParams{Kind: "nobody"})
	require.NoError(t, err)
	assert.Empty(t, page.Jobs)
}

func TestAdminManyByKind(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	adm, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	ids := insertKinds(t, pool, "notify", 2)
	other := insertKinds(t, pool, "other", 1)

	// A kind alone is a filter: across queues.
	n, err := adm.CancelMany(ctx, tasuki.JobFilter{Kind: "send_sms"})
	require.NoError(t, err)
	assert.Equal(t, int64(3), n)
	n, err = adm.CancelMany(ctx, tasuki.JobFilter{Kind: "send_sms"})
	require.NoError(t, err)
	assert.Zero(t, n)
	for _, id := range append(ids["send_email"], other["send_email"]...) {
		assert.Equal(t, tasuki.StatusPending, adminGetStatus(t, adm, id))
	}

	// Queue and kind together.
	n, err = adm.RetryMany(ctx, tasuki.JobFilter{Queue: "notify", Kind: "send_sms"})
	require.NoError(t, err)
	assert.Equal(t, int64(2), n)
	assert.Equal(t, tasuki.StatusCanceled, adminGetStatus(t, adm, other["send_sms"][0]))
	for _, id := range ids["send_sms"] {
		assert.Equal(t, tasuki.StatusPending, adminGetStatus(t, adm, id))
	}

	// Clean by kind.
	setStatus(t, pool, tasuki.StatusCompleted, append(ids["send_email"], ids["send_sms"]...)...)
	p := tasuki.CleanParams{Kind: "send_email", FinishedBefore: time.Now().Add(time.Hour)}
	count, err := adm.CleanCount(ctx, p)
	require.NoError(t, err)
	assert.Equal(t, int64(2), count)
	deleted, err := adm.Clean(ctx, p)
	require.NoError(t, err)
	assert.Equal(t, int64(2), deleted)
	assert.Equal(t, tasuki.StatusCompleted, adminGetStatus(t, adm, ids["send_sms"][0]))
}

func adminGetStatus(t *testing.T, adm *tasuki.Admin, id int64) tasuki.Status {
	t.Helper()
	job, err := adm.Get(context.Background(), id)
	require.NoError(t, err)
	return job.Status
}

func TestAdminKindFilterValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	adm, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	tooLong := strings.Repeat("k", tasuki.MaxKindLength+1)
	check := func(option string, err error) {
		t.Helper()
		var opt *tasuki.InvalidOptionError
		require.ErrorAs(t, err, &opt)
		assert.Equal(t, option, opt.Option)
	}
	_, err = adm.List(ctx, tasuki.ListParams{Kind: tooLong})
	check("ListParams.Kind", err)
	_, err = adm.CancelMany(ctx, tasuki.JobFilter{Kind: "a\x00b"})
	check("JobFilter.Kind", err)
	_, err = adm.RetryMany(ctx, tasuki.JobFilter{Queue: "q", Kind: string([]byte{0xff})})
	check("JobFilter.Kind", err)
	_, err = adm.CleanCount(ctx, tasuki.CleanParams{Kind: tooLong, FinishedBefore: time.Now()})
	check("CleanParams.Kind", err)
	// Still no empty filter.
	_, err = adm.CancelMany(ctx, tasuki.JobFilter{})
	check("JobFilter", err)
	assert.Contains(t, err.Error(), "set Queue, Kind or IDs")
}
