package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// seedKind is seed for jobs of the given kind.
func seedKind(t *testing.T, pool *pgxpool.Pool, queue, kind string, status tasuki.Status, n int, ago time.Duration) []int64 {
	t.Helper()
	ids := seed(t, pool, queue, status, n, ago)
	_, err := pool.Exec(context.Background(), "UPDATE tasuki_job SET kind = $2 WHERE id = ANY($1)", ids, kind)
	require.NoError(t, err)
	return ids
}

// recordProcess records a worker process as the worker does while it
// runs, expiring in expiresIn (negative: a process that died).
func recordProcess(t *testing.T, pool *pgxpool.Pool, host string, pid int, queues, kinds []string, expiresIn time.Duration) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `INSERT INTO tasuki_process (id, host, pid, queues, kinds, expires_at)
		VALUES (gen_random_uuid(), $1, $2, $3, $4, now() + $5 * interval '1 microsecond')`,
		host, pid, queues, kinds, expiresIn.Microseconds())
	require.NoError(t, err)
}

func kindOf(t *testing.T, pool *pgxpool.Pool, id int64) string {
	t.Helper()
	var kind string
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT kind FROM tasuki_job WHERE id = $1", id).Scan(&kind))
	return kind
}

func TestStatsCommandKinds(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)
	seedKind(t, pool, "notify", "send_email", tasuki.StatusPending, 3, 0)
	seedKind(t, pool, "notify", "send_sms", tasuki.StatusPending, 2, 0)
	seedKind(t, pool, "notify", "send_sms", tasuki.StatusFailed, 1, time.Hour)
	recordProcess(t, pool, "host-a", 11, []string{"notify"}, []string{"send_email"}, time.Hour)
	recordProcess(t, pool, "host-b", 22, []string{"notify"}, []string{"send_sms"}, -time.Hour) // died

	r := runCLI(t, url, "stats")
	requireOK(t, r)
	rows := tableRows(t, r.stdout, "QUEUE", "KIND", "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELED", "OLDEST RUNNABLE", "PAUSED", "PROCESSES")
	require.Len(t, rows, 3)
	assert.Equal(t, []string{"notify", "(all)", "5", "0", "0", "1", "0"}, rows[0][:7])
	assert.Equal(t, "1", rows[0][len(rows[0])-1], "host-a works the queue; host-b died")
	assert.Equal(t, []string{"notify", "send_email", "3", "0", "0", "0", "0"}, rows[1][:7])
	assert.Equal(t, "1", rows[1][len(rows[1])-1])
	assert.Equal(t, []string{"notify", "send_sms", "2", "0", "0", "1", "0"}, rows[2][:7])
	assert.Equal(t, "0 (no running worker handles this kind)", strings.Join(rows[2][len(rows[2])-7:], " "))
	assert.Equal(t, "warning: no running worker handles send_sms in queue notify: their pending jobs wait until a worker process "+
		"with a handler for the kind works the queue (see 'tasuki processes')\n", r.stderr)

	r = runCLI(t, url, "stats", "--json")
	requireOK(t, r)
	var stats []queueStatsJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &stats))
	require.Len(t, stats, 1)
	assert.Equal(t, 1, stats[0].Processes)
	assert.Equal(t, []string{"send_sms"}, stats[0].UnhandledKinds)
	require.Len(t, stats[0].Kinds, 2)
	assert.Equal(t, "send_email", stats[0].Kinds[0].Kind)
	assert.Equal(t, 1, stats[0].Kinds[0].Processes)
	assert.False(t, stats[0].Kinds[0].Unhandled)
	assert.Equal(t, "send_sms", stats[0].Kinds[1].Kind)
	assert.True(t, stats[0].Kinds[1].Unhandled)
	assert.Empty(t, r.stderr, "JSON output says it in unhandled_kinds")

	// Once a live process handles it, the warning goes.
	recordProcess(t, pool, "host-b", 23, []string{"notify"}, []string{"send_sms", "send_email"}, time.Hour)
	r = runCLI(t, url, "stats")
	requireOK(t, r)
	assert.NotContains(t, r.stdout, "no running worker")
	assert.Empty(t, r.stderr)
}

func TestKindFilterCommands(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)
	emails := seedKind(t, pool, "notify", "send_email", tasuki.StatusPending, 2, 0)
	sms := seedKind(t, pool, "notify", "send_sms", tasuki.StatusPending, 2, 0)
	otherSMS := seedKind(t, pool, "other", "send_sms", tasuki.StatusPending, 1, 0)

	// list --kind, with the kind in the table and the JSON.
	r := runCLI(t, url, "list", "--kind", "send_sms")
	requireOK(t, r)
	rows := tableRows(t, r.stdout, "ID", "QUEUE", "KIND", "STATUS", "ATTEMPT", "SNOOZED", "UNIQUE", "CREATED", "SCHEDULED", "LAST ERROR")
	require.Len(t, rows, 3)
	for _, row := range rows {
		assert.Equal(t, "send_sms", row[2])
	}
	r = runCLI(t, url, "list", "--kind", "send_sms", "--queue", "notify", "--json")
	requireOK(t, r)
	var page listJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &page))
	require.Len(t, page.Jobs, 2)
	assert.Equal(t, []int64{sms[1], sms[0]}, []int64{page.Jobs[0].ID, page.Jobs[1].ID})
	assert.Equal(t, "send_sms", page.Jobs[0].Kind)

	// cancel --kind, in one queue, then in every queue.
	r = runCLI(t, url, "cancel", "--kind", "send_sms", "--queue", "notify")
	requireOK(t, r)
	assert.Equal(t, "canceled 2 jobs of kind send_sms in queue notify\n", r.stdout)
	assert.Equal(t, tasuki.StatusPending, statusOf(t, pool, otherSMS[0]))
	r = runCLI(t, url, "cancel", "--kind", "send_sms", "--json")
	requireOK(t, r)
	var bulk bulkJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &bulk))
	assert.Equal(t, bulkJSON{Count: 1, Kind: "send_sms", Jobs: []jobJSON{}, Failed: []jobFailureJSON{}}, bulk)
	for _, id := range emails {
		assert.Equal(t, tasuki.StatusPending, statusOf(t, pool, id))
	}

	// retry --kind.
	r = runCLI(t, url, "retry", "--kind", "send_sms", "--status", "canceled")
	requireOK(t, r)
	assert.Equal(t, "retried 3 jobs of kind send_sms\n", r.stdout)

	// clean --kind.
	_, err := pool.Exec(context.Background(), `UPDATE tasuki_job SET status = 'completed', attempts = 1,
		finished_at = now() - interval '2 days'`)
	require.NoError(t, err)
	r = runCLI(t, url, "clean", "--older-than", "1d", "--kind", "send_email")
	requireOK(t, r)
	assert.Equal(t, "deleted 2 jobs\n", r.stdout)
	assert.Equal(t, 3, countJobs(t, pool))
	assert.Equal(t, "send_sms", kindOf(t, pool, otherSMS[0]))

	for _, args := range [][]string{
		{"list", "--kind", strings.Repeat("k", 129)},
		{"cancel", "--kind", strings.Repeat("k", 129)},
		{"retry", "--kind", strings.Repeat("k", 129)},
		{"clean", "--older-than", "1d", "--kind", strings.Repeat("k", 129)},
	} {
		line := requireOneLineError(t, runCLI(t, url, args...))
		assert.Equal(t, `tasuki: --kind "`+strings.Repeat("k", 129)+`": a kind has 1 to 128 characters`, line, args[0])
	}
}

func TestProcessesCommand(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)

	r := runCLI(t, url, "processes")
	requireOK(t, r)
	assert.Equal(t, "no worker process is running\n", r.stdout)
	r = runCLI(t, url, "processes", "--json")
	requireOK(t, r)
	assert.JSONEq(t, "[]", r.stdout)

	recordProcess(t, pool, "host-b", 22, []string{"notify"}, []string{"send_sms"}, time.Hour)
	recordProcess(t, pool, "host-a", 11, []string{"notify", "reports"}, []string{"send_email", "report"}, time.Hour)
	recordProcess(t, pool, "host-c", 33, []string{"notify"}, []string{"send_sms"}, -time.Second) // died

	r = runCLI(t, url, "processes")
	requireOK(t, r)
	rows := tableRows(t, r.stdout, "ID", "HOST", "PID", "QUEUES", "KINDS", "STARTED", "EXPIRES")
	require.Len(t, rows, 2)
	assert.Equal(t, []string{"host-a", "11", "notify,reports", "send_email,report"}, rows[0][1:5])
	assert.Equal(t, []string{"host-b", "22", "notify", "send_sms"}, rows[1][1:5])

	r = runCLI(t, url, "processes", "--json")
	requireOK(t, r)
	var procs []processJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &procs))
	require.Len(t, procs, 2)
	assert.Equal(t, "host-a", procs[0].Host)
	assert.Equal(t, 11, procs[0].PID)
	assert.Equal(t, []string{"notify", "reports"}, procs[0].Queues)
	assert.Equal(t, []string{"send_email", "report"}, procs[0].Kinds)
	assert.Equal(t, rows[0][0], procs[0].ID)
	assert.True(t, procs[0].ExpiresAt.After(procs[0].StartedAt))

	// As the other operating commands: one line for a missing schema or
	// URL, and help with an example.
	_, empty := testdb.Schema(t)
	line := requireOneLineError(t, runCLI(t, empty, "processes"))
	assert.Contains(t, line, "tasuki: the tasuki schema is missing from ")
	line = requireOneLineError(t, runCLI(t, "", "processes"))
	assert.Equal(t, "tasuki: set --database-url or DATABASE_URL", line)
	r = runCLI(t, url, "processes", "--help")
	requireOK(t, r)
	assert.Contains(t, r.stdout, "Examples:\n  tasuki processes")
}

// The ids printed by show and list carry the kind into JSON for scripts.
func TestShowCommandKind(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)
	id := seedKind(t, pool, "notify", "send_email", tasuki.StatusPending, 1, 0)[0]
	r := runCLI(t, url, "show", strconv.FormatInt(id, 10), "--json")
	requireOK(t, r)
	assert.Contains(t, r.stdout, `"kind": "send_email"`)
	r = runCLI(t, url, "show", strconv.FormatInt(id, 10))
	requireOK(t, r)
	assert.Regexp(t, `(?m)^queue:\s+notify\nkind:\s+send_email$`, r.stdout)
}
