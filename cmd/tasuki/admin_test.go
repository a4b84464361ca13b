package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	neturl "net/url"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// migrated returns the URL of a fresh schema with tasuki's tables, and a
// pool on it to set up and check jobs.
func migrated(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	_, url := testdb.Schema(t)
	pool := testdb.Pool(t, url)
	testdb.MigrateUp(t, pool)
	return url, pool
}

type cliPayload struct {
	N int `json:"n"`
}

func (cliPayload) Kind() string { return "cli" }

// seed inserts n jobs into queue, in one transaction (so they share one
// created_at), and sets them to status; finished ones finished ago before
// now, with an error for failed and canceled ones. It returns their ids in
// insertion order.
func seed(t *testing.T, pool *pgxpool.Pool, queue string, status tasuki.Status, n int, ago time.Duration) []int64 {
	t.Helper()
	ctx := context.Background()
	c, err := tasuki.NewClient[cliPayload](pool, tasuki.ClientConfig{Queue: queue})
	require.NoError(t, err)
	var ids []int64
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for i := range n {
			job, err := c.InsertTx(ctx, tx, cliPayload{N: i}, &tasuki.InsertOpts{MaxAttempts: 3})
			if err != nil {
				return err
			}
			ids = append(ids, job.ID)
		}
		return nil
	}))
	switch {
	case status == tasuki.StatusRunning:
		_, err = pool.Exec(ctx, `UPDATE tasuki_job SET status = 'running', attempts = 1, attempted_at = now(),
			lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 hour' WHERE id = ANY($1)`, ids)
	case status == tasuki.StatusCompleted:
		_, err = pool.Exec(ctx, `UPDATE tasuki_job SET status = 'completed', attempts = 1,
			finished_at = now() - $2 * interval '1 microsecond' WHERE id = ANY($1)`, ids, ago.Microseconds())
	case status.Finished():
		_, err = pool.Exec(ctx, `UPDATE tasuki_job SET status = $2::tasuki_job_status, attempts = max_attempts,
			finished_at = now() - $3 * interval '1 microsecond',
			errors = jsonb_build_array(
				jsonb_build_object('attempt', 1, 'at', now(), 'error', 'first failure'),
				jsonb_build_object('attempt', 3, 'at', now(), 'error', E'panic: boom\n\ngoroutine 1 [running]:\nmain.main()'))
			WHERE id = ANY($1)`, ids, string(status), ago.Microseconds())
	}
	require.NoError(t, err)
	return ids
}

func statusOf(t *testing.T, pool *pgxpool.Pool, id int64) tasuki.Status {
	t.Helper()
	row, err := db.New(pool).JobGet(context.Background(), id)
	require.NoError(t, err)
	return tasuki.Status(row.Status)
}

func countJobs(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM tasuki_job").Scan(&n))
	return n
}

// tableRows checks that stdout is an aligned table with the given header
// and returns its rows split into fields.
func tableRows(t *testing.T, stdout string, header ...string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	require.NotEmpty(t, lines)
	require.Equal(t, strings.Join(header, " "), strings.Join(strings.Fields(lines[0]), " "), "stdout:\n%s", stdout)
	// Every column starts where its header does.
	var starts []int
	for _, h := range header {
		i := strings.Index(lines[0], h)
		require.GreaterOrEqual(t, i, 0)
		starts = append(starts, i)
	}
	var rows [][]string
	for _, l := range lines[1:] {
		for _, s := range starts[1:] {
			require.Greater(t, len(l), s, "row %q", l)
			assert.NotEqual(t, byte(' '), l[s], "row %q is not aligned with the header", l)
			assert.Equal(t, byte(' '), l[s-1], "row %q is not aligned with the header", l)
		}
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

func requireOK(t *testing.T, r result) {
	t.Helper()
	require.Zero(t, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
}

func TestStatsCommand(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)

	r := runCLI(t, url, "stats")
	requireOK(t, r)
	assert.Equal(t, "no jobs yet, and no paused queues\n", r.stdout)
	assert.Empty(t, r.stderr)
	r = runCLI(t, url, "stats", "--json")
	requireOK(t, r)
	assert.JSONEq(t, "[]", r.stdout)

	seed(t, pool, "emails", tasuki.StatusPending, 3, 0)
	seed(t, pool, "emails", tasuki.StatusFailed, 2, time.Hour)
	seed(t, pool, "reports", tasuki.StatusCompleted, 1, time.Hour)
	_, err := pool.Exec(context.Background(), "UPDATE tasuki_job SET scheduled_at = now() - interval '90 seconds' WHERE status = 'pending'")
	require.NoError(t, err)
	requireOK(t, runCLI(t, url, "pause", "idle"))

	r = runCLI(t, url, "stats")
	requireOK(t, r)
	rows := tableRows(t, r.stdout, "QUEUE", "KIND", "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELED", "OLDEST RUNNABLE", "PAUSED", "PROCESSES")
	require.Len(t, rows, 5, "a line per queue, and one per kind of its jobs")
	assert.Equal(t, []string{"emails", "(all)", "3", "0", "0", "2", "0"}, rows[0][:7])
	assert.Regexp(t, `^1m3\ds$`, rows[0][7])
	assert.Equal(t, []string{"no", "0"}, rows[0][8:])
	assert.Equal(t, []string{"emails", "cli", "3", "0", "0", "2", "0"}, rows[1][:7])
	assert.Equal(t, []string{"no", "0", "(no", "running", "worker", "handles", "this", "kind)"}, rows[1][8:])
	assert.Equal(t, []string{"idle", "-", "0", "0", "0", "0", "0", "-", "since"}, rows[2][:9])
	assert.Equal(t, "0", rows[2][len(rows[2])-1])
	assert.Equal(t, []string{"reports", "(all)", "0", "0", "1", "0", "0", "-", "no", "0"}, rows[3])
	assert.Equal(t, []string{"reports", "cli", "0", "0", "1", "0", "0", "-", "no", "0"}, rows[4], "no pending job waits for a worker")
	assert.Equal(t, "warning: no running worker handles cli in queue emails: their pending jobs wait until a worker process "+
		"with a handler for the kind works the queue (see 'tasuki processes')\n", r.stderr)

	r = runCLI(t, url, "stats", "--json")
	requireOK(t, r)
	var stats []queueStatsJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &stats))
	require.Len(t, stats, 3)
	assert.Equal(t, "emails", stats[0].Queue)
	assert.Equal(t, int64(3), stats[0].Pending)
	assert.Equal(t, int64(2), stats[0].Failed)
	assert.InDelta(t, 90, stats[0].OldestRunnableSeconds, 30)
	assert.Equal(t, []kindStatsJSON{{Kind: "cli", Pending: 3, Failed: 2, OldestRunnableSeconds: stats[0].OldestRunnableSeconds, Unhandled: true}}, stats[0].Kinds)
	assert.Equal(t, []string{"cli"}, stats[0].UnhandledKinds)
	assert.True(t, stats[1].Paused)
	assert.NotNil(t, stats[1].PausedAt)
	assert.Equal(t, []kindStatsJSON{}, stats[1].Kinds)
	assert.Equal(t, []string{}, stats[1].UnhandledKinds)
	assert.False(t, stats[2].Paused)
	assert.Nil(t, stats[2].PausedAt)
	assert.Empty(t, stats[2].UnhandledKinds)
}

func TestListCommand(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)
	// 25 jobs created at the same instant: pages must neither skip nor
	// repeat any of them.
	pending := seed(t, pool, "emails", tasuki.StatusPending, 25, 0)
	failed := seed(t, pool, "emails", tasuki.StatusFailed, 2, time.Hour)
	other := seed(t, pool, "reports", tasuki.StatusCompleted, 1, time.Hour)
	newest := other[0]

	r := runCLI(t, url, "list", "--limit", "10")
	requireOK(t, r)
	rows := tableRows(t, r.stdout, "ID", "QUEUE", "KIND", "STATUS", "ATTEMPT", "SNOOZED", "UNIQUE", "CREATED", "SCHEDULED", "LAST ERROR")
	require.Len(t, rows, 10)
	assert.Equal(t, strconv.FormatInt(newest, 10), rows[0][0], "the first page starts with the newest job")
	assert.Equal(t, []string{"reports", "cli", "completed", "1/3"}, rows[0][1:5])
	assert.Equal(t, []string{"emails", "cli", "failed", "3/3"}, rows[1][1:5])
	assert.Equal(t, "panic: boom …", strings.Join(rows[1][11:], " "), "the last error's first line")
	assert.Equal(t, "-", rows[3][len(rows[3])-1])
	m := regexp.MustCompile(`^more jobs: add --after (\d+) for the next page\n$`).FindStringSubmatch(r.stderr)
	require.NotNil(t, m, "stderr: %q", r.stderr)
	assert.Equal(t, rows[9][0], m[1])

	// Walk every page of one queue through --json.
	seen := map[int64]int{}
	after := "0"
	for pages := 1; ; pages++ {
		r := runCLI(t, url, "list", "--queue", "emails", "--limit", "4", "--after", after, "--json")
		requireOK(t, r)
		var page listJSON
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &page))
		for _, j := range page.Jobs {
			seen[j.ID]++
			assert.Equal(t, "emails", j.Queue)
			assert.Equal(t, "cli", j.Kind)
		}
		if page.Next == 0 {
			assert.Equal(t, 7, pages)
			break
		}
		after = strconv.FormatInt(page.Next, 10)
		require.Less(t, pages, 20)
	}
	want := map[int64]int{}
	for _, id := range append(append([]int64{}, pending...), failed...) {
		want[id] = 1
	}
	assert.Equal(t, want, seen)

	// Filters.
	r = runCLI(t, url, "list", "--status", "failed,completed", "--json")
	requireOK(t, r)
	var page listJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &page))
	require.Len(t, page.Jobs, 3)
	assert.Zero(t, page.Next)
	assert.Equal(t, []int64{other[0], failed[1], failed[0]}, []int64{page.Jobs[0].ID, page.Jobs[1].ID, page.Jobs[2].ID})
	assert.Len(t, page.Jobs[1].Errors, 2)
	assert.JSONEq(t, `{"n":1}`, string(page.Jobs[1].Payload))

	r = runCLI(t, url, "list", "--status", "pending", "--status", "running", "--queue", "emails", "--since", "1h", "--until", "2099-01-01")
	requireOK(t, r)
	assert.Len(t, tableRows(t, r.stdout, "ID", "QUEUE", "KIND", "STATUS", "ATTEMPT", "SNOOZED", "UNIQUE", "CREATED", "SCHEDULED", "LAST ERROR"), 25)
	assert.Empty(t, r.stderr, "the last page")

	r = runCLI(t, url, "list", "--until", "1h")
	requireOK(t, r)
	assert.Equal(t, "no jobs match\n", r.stdout)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--status", "done"}, `--status "done": use pending, running, completed, failed or canceled`},
		{[]string{"--limit", "0"}, "--limit 0: give 1 to 10000"},
		{[]string{"--limit", "10001"}, "--limit 10001"},
		{[]string{"--after", "-1"}, "--after -1"},
		{[]string{"--since", "yesterday"}, `--since "yesterday": give a time`},
		{[]string{"--since", "1h", "--until", "2h"}, "is not before --until"},
		{[]string{"extra"}, `unknown command "extra" for "tasuki list"`},
	} {
		line := requireOneLineError(t, runCLI(t, url, append([]string{"list"}, tc.args...)...))
		assert.Contains(t, line, tc.want)
	}
}

func TestShowCommand(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)
	id := seed(t, pool, "emails", tasuki.StatusFailed, 1, time.Hour)[0]

	r := runCLI(t, url, "show", strconv.FormatInt(id, 10))
	requireOK(t, r)
	assert.Regexp(t, fmt.Sprintf(`(?m)^id:\s+%d$`, id), r.stdout)
	assert.Regexp(t, `(?m)^queue:\s+emails$`, r.stdout)
	assert.Regexp(t, `(?m)^kind:\s+cli$`, r.stdout)
	assert.Regexp(t, `(?m)^status:\s+failed$`, r.stdout)
	assert.Regexp(t, `(?m)^attempts:\s+3 of 3$`, r.stdout)
	assert.Regexp(t, `(?m)^finished:\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$`, r.stdout)
	assert.Regexp(t, `(?m)^attempted:\s+-$`, r.stdout)
	assert.Contains(t, r.stdout, "payload:\n  {\n    \"n\": 0\n  }\n")
	assert.Contains(t, r.stdout, "errors (2, oldest first):\n  attempt 1 at ")
	assert.Contains(t, r.stdout, "      first failure\n")
	assert.Contains(t, r.stdout, "      panic: boom\n      \n      goroutine 1 [running]:\n      main.main()\n")

	r = runCLI(t, url, "show", strconv.FormatInt(id, 10), "--json")
	requireOK(t, r)
	var job jobJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &job))
	assert.Equal(t, id, job.ID)
	assert.Equal(t, "cli", job.Kind)
	assert.Equal(t, tasuki.StatusFailed, job.Status)
	require.Len(t, job.Errors, 2)
	assert.Equal(t, "first failure", job.Errors[0].Error)
	assert.JSONEq(t, `{}`, string(job.Metadata))

	pendingID := seed(t, pool, "emails", tasuki.StatusPending, 1, 0)[0]
	r = runCLI(t, url, "show", strconv.FormatInt(pendingID, 10), "--json")
	requireOK(t, r)
	assert.Contains(t, r.stdout, `"errors": []`)
	assert.Contains(t, r.stdout, `"finished_at": null`)

	line := requireOneLineError(t, runCLI(t, url, "show", "999999"))
	assert.Equal(t, "tasuki: job 999999 not found", line)
	line = requireOneLineError(t, runCLI(t, url, "show", "abc"))
	assert.Contains(t, line, `"abc" is not a job id`)
	line = requireOneLineError(t, runCLI(t, url, "show"))
	assert.Contains(t, line, "accepts 1 arg(s), received 0")
}

func TestCancelCommand(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)
	pending := seed(t, pool, "emails", tasuki.StatusPending, 3, 0)
	running := seed(t, pool, "emails", tasuki.StatusRunning, 2, 0)
	completed := seed(t, pool, "emails", tasuki.StatusCompleted, 1, time.Hour)
	other := seed(t, pool, "reports", tasuki.StatusPending, 1, 0)

	r := runCLI(t, url, "cancel", strconv.FormatInt(pending[0], 10), strconv.FormatInt(running[0], 10))
	requireOK(t, r)
	assert.Equal(t, fmt.Sprintf("canceled job %d (queue emails)\ncanceled job %d (queue emails)\n", pending[0], running[0]), r.stdout)
	assert.Equal(t, tasuki.StatusCanceled, statusOf(t, pool, pending[0]))
	assert.Equal(t, tasuki.StatusCanceled, statusOf(t, pool, running[0]))

	// A finished job is not changed; one failure is one line.
	line := requireOneLineError(t, runCLI(t, url, "cancel", strconv.FormatInt(completed[0], 10)))
	assert.Equal(t, fmt.Sprintf("tasuki: job %d is already completed; only pending or running jobs can be canceled", completed[0]), line)
	assert.Equal(t, tasuki.StatusCompleted, statusOf(t, pool, completed[0]))
	line = requireOneLineError(t, runCLI(t, url, "cancel", "123456"))
	assert.Equal(t, "tasuki: job 123456 not found", line)

	// Several failures among successes: the successes are printed, the
	// failures summed up in one line, and the exit code says so.
	r = runCLI(t, url, "cancel", strconv.FormatInt(pending[1], 10), "123456", strconv.FormatInt(completed[0], 10))
	assert.Equal(t, 1, r.code)
	assert.Equal(t, fmt.Sprintf("canceled job %d (queue emails)\n", pending[1]), r.stdout)
	assert.Equal(t, fmt.Sprintf("tasuki: 2 of 3 jobs not canceled: job 123456 not found; job %d is already completed; only pending or running jobs can be canceled\n", completed[0]), r.stderr)

	// A whole queue, only its pending jobs.
	r = runCLI(t, url, "cancel", "--queue", "emails", "--status", "pending")
	requireOK(t, r)
	assert.Equal(t, "canceled 1 job in queue emails\n", r.stdout)
	assert.Equal(t, tasuki.StatusCanceled, statusOf(t, pool, pending[2]))
	assert.Equal(t, tasuki.StatusRunning, statusOf(t, pool, running[1]))
	r = runCLI(t, url, "cancel", "--queue", "emails")
	requireOK(t, r)
	assert.Equal(t, "canceled 1 job in queue emails\n", r.stdout)
	assert.Equal(t, tasuki.StatusCanceled, statusOf(t, pool, running[1]))
	assert.Equal(t, tasuki.StatusCompleted, statusOf(t, pool, completed[0]))
	assert.Equal(t, tasuki.StatusPending, statusOf(t, pool, other[0]))
	r = runCLI(t, url, "cancel", "--queue", "emails")
	requireOK(t, r)
	assert.Equal(t, "canceled 0 jobs in queue emails\n", r.stdout)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "give job ids, or --queue or --kind or both (see 'tasuki cancel --help')"},
		{[]string{"1", "--queue", "emails"}, "job ids do not go with --queue or --kind"},
		{[]string{"1", "--kind", "cli"}, "job ids do not go with --queue or --kind"},
		{[]string{"--kind", strings.Repeat("k", 129)}, "a kind has 1 to 128 characters"},
		{[]string{"1", "--status", "pending"}, "--status goes with --queue"},
		{[]string{"--queue", "emails", "--status", "completed"}, `--status "completed": use pending or running`},
		{[]string{"x1"}, `"x1" is not a job id: job ids are positive integers`},
		{[]string{"0"}, `"0" is not a job id`},
	} {
		line := requireOneLineError(t, runCLI(t, url, append([]string{"cancel"}, tc.args...)...))
		assert.Contains(t, line, tc.want)
	}
}

// TestRetryCommand retries failed jobs that used all their attempts: the
// Rust original's "requeue failed" never matched them.
func TestRetryCommand(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)
	failed := seed(t, pool, "emails", tasuki.StatusFailed, 3, time.Hour)
	canceled := seed(t, pool, "emails", tasuki.StatusCanceled, 1, time.Hour)
	completed := seed(t, pool, "emails", tasuki.StatusCompleted, 1, time.Hour)
	otherFailed := seed(t, pool, "reports", tasuki.StatusFailed, 1, time.Hour)

	r := runCLI(t, url, "retry", strconv.FormatInt(failed[0], 10))
	requireOK(t, r)
	assert.Equal(t, fmt.Sprintf("retried job %d (queue emails)\n", failed[0]), r.stdout)
	row, err := db.New(pool).JobGet(context.Background(), failed[0])
	require.NoError(t, err)
	assert.Equal(t, db.TasukiJobStatusPending, row.Status)
	assert.Zero(t, row.Attempts)
	assert.Nil(t, row.FinishedAt)

	line := requireOneLineError(t, runCLI(t, url, "retry", strconv.FormatInt(completed[0], 10)))
	assert.Equal(t, fmt.Sprintf("tasuki: cannot retry job %d: it is completed; only failed or canceled jobs can be retried", completed[0]), line)

	r = runCLI(t, url, "retry", "--queue", "emails", "--status", "failed")
	requireOK(t, r)
	assert.Equal(t, "retried 2 jobs in queue emails\n", r.stdout)
	for _, id := range failed {
		assert.Equal(t, tasuki.StatusPending, statusOf(t, pool, id))
	}
	assert.Equal(t, tasuki.StatusCanceled, statusOf(t, pool, canceled[0]))
	assert.Equal(t, tasuki.StatusFailed, statusOf(t, pool, otherFailed[0]))

	r = runCLI(t, url, "retry", "--queue", "emails")
	requireOK(t, r)
	assert.Equal(t, "retried 1 job in queue emails\n", r.stdout)
	assert.Equal(t, tasuki.StatusPending, statusOf(t, pool, canceled[0]))
	assert.Equal(t, tasuki.StatusCompleted, statusOf(t, pool, completed[0]))

	line = requireOneLineError(t, runCLI(t, url, "retry", "--queue", "emails", "--status", "pending"))
	assert.Contains(t, line, `--status "pending": use failed or canceled`)
}

func TestCleanCommand(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)
	oldCompleted := seed(t, pool, "emails", tasuki.StatusCompleted, 30, 48*time.Hour)
	oldFailed := seed(t, pool, "emails", tasuki.StatusFailed, 5, 48*time.Hour)
	seed(t, pool, "reports", tasuki.StatusCompleted, 4, 48*time.Hour)
	seed(t, pool, "emails", tasuki.StatusCompleted, 3, time.Hour) // young
	pending := seed(t, pool, "emails", tasuki.StatusPending, 2, 0)
	running := seed(t, pool, "emails", tasuki.StatusRunning, 2, 0)
	total := countJobs(t, pool)

	r := runCLI(t, url, "clean", "--older-than", "1d", "--dry-run")
	requireOK(t, r)
	assert.Equal(t, "would delete 39 jobs\n", r.stdout)
	assert.Equal(t, total, countJobs(t, pool))

	r = runCLI(t, url, "clean", "--older-than", "24h", "--queue", "emails", "--status", "failed")
	requireOK(t, r)
	assert.Equal(t, fmt.Sprintf("deleted %d jobs\n", len(oldFailed)), r.stdout)
	assert.Empty(t, r.stderr, "no progress bar outside a terminal")

	r = runCLI(t, url, "clean", "--older-than", "24h", "--queue", "emails", "--batch-size", "7")
	requireOK(t, r)
	assert.Equal(t, fmt.Sprintf("deleted %d jobs\n", len(oldCompleted)), r.stdout)
	assert.Equal(t, total-len(oldFailed)-len(oldCompleted), countJobs(t, pool))

	r = runCLI(t, url, "clean", "--older-than", "24h", "--queue", "emails")
	requireOK(t, r)
	assert.Equal(t, "deleted 0 jobs: none finished that long ago\n", r.stdout)

	// Everything finished, but never a pending or running job.
	r = runCLI(t, url, "clean", "--older-than", "0s")
	requireOK(t, r)
	assert.Equal(t, "deleted 7 jobs\n", r.stdout)
	var left []int64
	rows, err := pool.Query(context.Background(), "SELECT id FROM tasuki_job")
	require.NoError(t, err)
	left, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	sort.Slice(left, func(i, j int) bool { return left[i] < left[j] })
	assert.Equal(t, append(append([]int64{}, pending...), running...), left)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, `required flag(s) "older-than" not set`},
		{[]string{"--older-than", "soon"}, `--older-than "soon": give a duration`},
		{[]string{"--older-than", "-1h"}, `--older-than "-1h"`},
		{[]string{"--older-than", "1h", "--status", "pending"}, `--status "pending": use completed, failed or canceled`},
		{[]string{"--older-than", "1h", "--batch-size", "0"}, "--batch-size 0"},
	} {
		line := requireOneLineError(t, runCLI(t, url, append([]string{"clean"}, tc.args...)...))
		assert.Contains(t, line, tc.want)
	}
}

func TestPauseResumeCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool := migrated(t)
	seed(t, pool, "emails", tasuki.StatusPending, 2, 0)
	lease := func() int {
		rows, err := db.New(pool).JobLease(ctx, testdb.Lease(db.JobLeaseParams{LeaseUs: time.Minute.Microseconds()}, "emails", "cli", 1))
		require.NoError(t, err)
		return len(rows)
	}

	r := runCLI(t, url, "pause", "emails", "reports")
	requireOK(t, r)
	assert.Equal(t, "paused queue emails: its workers start no new jobs until 'tasuki resume emails'\n"+
		"paused queue reports: its workers start no new jobs until 'tasuki resume reports'\n", r.stdout)
	assert.Zero(t, lease(), "a paused queue leases nothing")
	r = runCLI(t, url, "stats", "--json")
	requireOK(t, r)
	var stats []queueStatsJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &stats))
	require.Len(t, stats, 2)
	assert.True(t, stats[0].Paused)
	assert.True(t, stats[1].Paused)

	// Pausing a paused queue changes nothing, and says so.
	r = runCLI(t, url, "pause", "emails")
	requireOK(t, r)
	assert.Equal(t, "queue emails was already paused; nothing changed\n", r.stdout)

	r = runCLI(t, url, "resume", "emails")
	requireOK(t, r)
	assert.Equal(t, "resumed queue emails: its workers start its jobs again\n", r.stdout)
	assert.Equal(t, 1, lease())
	r = runCLI(t, url, "resume", "emails")
	requireOK(t, r)
	assert.Equal(t, "queue emails is not paused; nothing changed\n", r.stdout)

	// A queue tasuki does not know, most often a typo, is an error.
	line := requireOneLineError(t, runCLI(t, url, "resume", "nosuchqueue"))
	assert.Equal(t, `tasuki: no queue named "nosuchqueue": it has no jobs and was never paused (tasuki stats lists the queues)`, line)
	// Among others: they are resumed, the unknown one is reported, and
	// the exit code says so.
	r = runCLI(t, url, "resume", "reports", "nosuchqueue", "emails")
	assert.Equal(t, 1, r.code)
	assert.Equal(t, "resumed queue reports: its workers start its jobs again\nqueue emails is not paused; nothing changed\n", r.stdout)
	assert.Equal(t, "tasuki: 1 of 3 queues not resumed: no queue named \"nosuchqueue\": it has no jobs and was never paused (tasuki stats lists the queues)\n", r.stderr)

	// --json says the same for scripts.
	r = runCLI(t, url, "pause", "emails", "new", "--json")
	requireOK(t, r)
	var out queuesJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	assert.Equal(t, queuesJSON{Queues: []queueChangeJSON{
		{Queue: "emails", Paused: true, Changed: true},
		{Queue: "new", Paused: true, Changed: true},
	}, Failed: []queueFailureJSON{}}, out)
	r = runCLI(t, url, "resume", "emails", "nosuchqueue", "reports", "--json")
	assert.Equal(t, 1, r.code)
	out = queuesJSON{}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	assert.Equal(t, queuesJSON{Queues: []queueChangeJSON{
		{Queue: "emails", Paused: false, Changed: true},
		{Queue: "reports", Paused: false, Changed: false},
	}, Failed: []queueFailureJSON{
		{Queue: "nosuchqueue", Error: `no queue named "nosuchqueue": it has no jobs and was never paused (tasuki stats lists the queues)`},
	}}, out)
	assert.Equal(t, "tasuki: 1 of 3 queues not resumed: no queue named \"nosuchqueue\": it has no jobs and was never paused (tasuki stats lists the queues)\n", r.stderr)

	line = requireOneLineError(t, runCLI(t, url, "pause", strings.Repeat("q", 129)))
	assert.Contains(t, line, "a queue name has 1 to 128 characters")
	line = requireOneLineError(t, runCLI(t, url, "resume"))
	assert.Contains(t, line, "requires at least 1 arg(s)")
}

// adminCommands is one valid invocation of each operating command.
var adminCommands = [][]string{
	{"stats"}, {"stats", "--json"}, {"list"}, {"show", "1"}, {"cancel", "1"}, {"cancel", "--queue", "q"},
	{"retry", "1"}, {"retry", "--queue", "q"}, {"clean", "--older-than", "1h"}, {"pause", "q"}, {"resume", "q"},
	{"retention", "q"}, {"retention", "q", "--completed", "48h"},
}

func TestAdminCommandsSchemaMissing(t *testing.T) {
	t.Parallel()
	_, url := testdb.Schema(t)
	for _, args := range adminCommands {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			t.Parallel()
			line := requireOneLineError(t, runCLI(t, url, args...))
			assert.Contains(t, line, "tasuki: the tasuki schema is missing from ")
			assert.True(t, strings.HasSuffix(line, ": run 'tasuki migrate up' first"), "line: %s", line)
		})
	}
}

func TestAdminCommandsRequireURL(t *testing.T) {
	t.Parallel()
	for _, args := range adminCommands {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			t.Parallel()
			line := requireOneLineError(t, runCLI(t, "", args...))
			assert.Equal(t, "tasuki: set --database-url or DATABASE_URL", line)
		})
	}
}

func TestAdminCommandsHelp(t *testing.T) {
	t.Parallel()
	const secretURL = "postgres://app:hunter2secret@db.example:5432/app"
	for _, name := range []string{"stats", "list", "show", "cancel", "retry", "clean", "pause", "resume", "retention"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := runCLI(t, secretURL, name, "--help")
			requireOK(t, r)
			assert.Contains(t, r.stdout, "Usage:")
			assert.Contains(t, r.stdout, "Examples:\n  tasuki "+name)
			assert.Contains(t, r.stdout, "--database-url")
			assert.NotContains(t, r.stdout+r.stderr, "hunter2secret")
		})
	}
}

// TestCleanProgressOnTerminal runs clean under script(1), which gives it a
// terminal: it draws a progress bar on stderr and clears it at the end.
func TestCleanProgressOnTerminal(t *testing.T) {
	t.Parallel()
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script(1) is not installed; it provides the terminal")
	}
	url, pool := migrated(t)
	seed(t, pool, "emails", tasuki.StatusCompleted, 300, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, "-qec", cliPath+" clean --older-than 1m --batch-size 10", "/dev/null")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+url)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "output: %q", out)
	assert.Contains(t, string(out), "deleting ")
	assert.Contains(t, string(out), "/300)")
	assert.True(t, strings.HasSuffix(string(out), "\rdeleted 300 jobs\r\n"), "output: %q", out)
	assert.Zero(t, countJobs(t, pool))
}

// TestPermissionDeniedOneLine runs commands as a role that may use the
// schema but not tasuki's tables: the library's error, which starts with
// "tasuki: " and wraps another that does, prints as one line with one
// prefix.
func TestPermissionDeniedOneLine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schemaName, schemaURL := testdb.Schema(t)
	pool := testdb.Pool(t, schemaURL)
	testdb.MigrateUp(t, pool)
	role := "noperm_" + schemaName
	_, err := pool.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD 'pw'; GRANT USAGE ON SCHEMA %s TO %s",
		pgx.Identifier{role}.Sanitize(), pgx.Identifier{schemaName}.Sanitize(), pgx.Identifier{role}.Sanitize()))
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := pool.Exec(context.Background(), fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", pgx.Identifier{role}.Sanitize()))
		assert.NoError(t, err)
	})
	u, err := neturl.Parse(schemaURL)
	require.NoError(t, err)
	u.User = neturl.UserPassword(role, "pw")

	for _, args := range [][]string{{"stats"}, {"list"}, {"pause", "q"}, {"cancel", "1"}} {
		line := requireOneLineError(t, runCLI(t, u.String(), args...))
		assert.Contains(t, line, "permission denied", "%v", args)
		assert.Equal(t, 1, strings.Count(line, "tasuki: "), "%v: %s", args, line)
	}
}

// runAt runs the command in this process with its clock stopped at now,
// for what depends on the time a command is run, such as list --since 1h.
func runAt(t *testing.T, now time.Time, databaseURL string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	a := newApp(&stdout, &stderr, func() {})
	a.now = func() time.Time { return now }
	code := a.execute(context.Background(), append(args, "--database-url", databaseURL))
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// TestListRelativeTimePaging pages through jobs near the edge of a --since
// given as a duration, the clock moving on between pages: following each
// page's hint, or its JSON, must show every job exactly once, however late
// the next page is asked for.
func TestListRelativeTimePaging(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool := migrated(t)
	ids := seed(t, pool, "emails", tasuki.StatusPending, 7, 0)
	var start time.Time
	require.NoError(t, pool.QueryRow(ctx, "SELECT now()").Scan(&start))
	// The jobs were created just inside the last hour, as of start.
	_, err := pool.Exec(ctx, "UPDATE tasuki_job SET created_at = $1::timestamptz - interval '1 hour' + id * interval '1 second'", start)
	require.NoError(t, err)
	want := map[int64]int{}
	for _, id := range ids {
		want[id] = 1
	}
	hintRE := regexp.MustCompile(`^more jobs: add (--after \d+(?: --(?:since|until) \S+)*) for the next page`)

	t.Run("table", func(t *testing.T) {
		t.Parallel()
		seen := map[int64]int{}
		args := []string{"list", "--since", "1h", "--until", "0s", "--limit", "3"}
		now := start
		for pages := 1; ; pages++ {
			r := runAt(t, now, url, args...)
			requireOK(t, r)
			for _, row := range tableRows(t, r.stdout, "ID", "QUEUE", "KIND", "STATUS", "ATTEMPT", "SNOOZED", "UNIQUE", "CREATED", "SCHEDULED", "LAST ERROR") {
				id, err := strconv.ParseInt(row[0], 10, 64)
				require.NoError(t, err)
				seen[id]++
			}
			if pages > 1 {
				assert.NotContains(t, r.stderr, "note:", "the hint's absolute times need no note")
			}
			if !strings.HasPrefix(r.stderr, "more jobs") {
				assert.Equal(t, 3, pages)
				break
			}
			m := hintRE.FindStringSubmatch(r.stderr)
			require.NotNil(t, m, "stderr: %q", r.stderr)
			if pages == 1 {
				assert.Contains(t, m[1], " --since "+start.Add(-time.Hour).UTC().Format(time.RFC3339Nano)+" --until ")
				assert.Contains(t, r.stderr, "(this page's --since 1h and --until 0s, fixed)")
			} else {
				assert.NotContains(t, m[1], "--since", "the command line has the fixed times already")
			}
			// The hint is added to the same command line.
			args = append(args, strings.Fields(m[1])...)
			now = now.Add(10 * time.Minute)
			require.Less(t, pages, 10)
		}
		assert.Equal(t, want, seen)
	})

	t.Run("json", func(t *testing.T) {
		t.Parallel()
		seen := map[int64]int{}
		args := []string{"list", "--since", "1h", "--limit", "3", "--json"}
		now := start
		for pages := 1; ; pages++ {
			r := runAt(t, now, url, args...)
			requireOK(t, r)
			var page listJSON
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &page))
			for _, j := range page.Jobs {
				seen[j.ID]++
			}
			require.NotNil(t, page.Since)
			assert.True(t, start.Add(-time.Hour).Equal(*page.Since), "since %s", page.Since)
			assert.Nil(t, page.Until)
			if page.Next == 0 {
				break
			}
			args = []string{"list", "--limit", "3", "--json", "--after", strconv.FormatInt(page.Next, 10),
				"--since", page.Since.Format(time.RFC3339Nano)}
			now = now.Add(10 * time.Minute)
			require.Less(t, pages, 10)
		}
		assert.Equal(t, want, seen)
	})

	t.Run("relative time with --after", func(t *testing.T) {
		t.Parallel()
		// Someone who pages with the relative time again is told why the
		// page may miss jobs.
		r := runAt(t, start, url, "list", "--since", "1h", "--after", strconv.FormatInt(ids[3], 10))
		requireOK(t, r)
		assert.Contains(t, r.stderr, "note: --since 1h is counted from now, not from when the previous page was listed; "+
			"to miss no job, give the --since that page printed\n")
	})
}

// TestChangeCommandsJSON runs cancel, retry and clean with --json, and
// reads their output as a script would.
func TestChangeCommandsJSON(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)
	pending := seed(t, pool, "emails", tasuki.StatusPending, 3, 0)
	failed := seed(t, pool, "emails", tasuki.StatusFailed, 2, 48*time.Hour)
	completed := seed(t, pool, "emails", tasuki.StatusCompleted, 4, 48*time.Hour)

	decode := func(r result) bulkJSON {
		t.Helper()
		var out bulkJSON
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), "stdout: %s", r.stdout)
		return out
	}

	// By id: the changed jobs as stored, and the ids that failed.
	r := runCLI(t, url, "cancel", strconv.FormatInt(pending[0], 10), "123456", strconv.FormatInt(completed[0], 10), "--json")
	assert.Equal(t, 1, r.code)
	out := decode(r)
	assert.Equal(t, int64(1), out.Count)
	assert.Empty(t, out.Queue)
	require.Len(t, out.Jobs, 1)
	assert.Equal(t, pending[0], out.Jobs[0].ID)
	assert.Equal(t, tasuki.StatusCanceled, out.Jobs[0].Status)
	assert.Equal(t, []jobFailureJSON{
		{ID: 123456, Error: "job 123456 not found"},
		{ID: completed[0], Error: fmt.Sprintf("job %d is already completed; only pending or running jobs can be canceled", completed[0])},
	}, out.Failed)
	assert.Equal(t, fmt.Sprintf("tasuki: 2 of 3 jobs not canceled: job 123456 not found; job %d is already completed; only pending or running jobs can be canceled\n", completed[0]), r.stderr)

	// A whole queue: the count only.
	r = runCLI(t, url, "cancel", "--queue", "emails", "--json")
	requireOK(t, r)
	assert.Equal(t, bulkJSON{Count: 2, Queue: "emails", Jobs: []jobJSON{}, Failed: []jobFailureJSON{}}, decode(r))
	assert.Empty(t, r.stderr)

	r = runCLI(t, url, "retry", strconv.FormatInt(failed[0], 10), "--json")
	requireOK(t, r)
	out = decode(r)
	assert.Equal(t, int64(1), out.Count)
	require.Len(t, out.Jobs, 1)
	assert.Equal(t, tasuki.StatusPending, out.Jobs[0].Status)
	assert.Empty(t, out.Failed)
	r = runCLI(t, url, "retry", "--queue", "emails", "--status", "failed", "--json")
	requireOK(t, r)
	assert.Equal(t, bulkJSON{Count: 1, Queue: "emails", Jobs: []jobJSON{}, Failed: []jobFailureJSON{}}, decode(r))

	var clean cleanJSON
	r = runCLI(t, url, "clean", "--older-than", "1d", "--dry-run", "--json")
	requireOK(t, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &clean))
	assert.Equal(t, cleanJSON{DryRun: true, Matched: 4, Deleted: 0}, clean)
	r = runCLI(t, url, "clean", "--older-than", "1d", "--json")
	requireOK(t, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &clean))
	assert.Equal(t, cleanJSON{DryRun: false, Matched: 4, Deleted: 4}, clean)
	r = runCLI(t, url, "clean", "--older-than", "1d", "--json")
	requireOK(t, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &clean))
	assert.Equal(t, cleanJSON{}, clean)
}
