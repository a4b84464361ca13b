package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/tasuki"
)

// retentionOf reads a queue's retention in effect through the library, to
// check what the command wrote.
func retentionOf(t *testing.T, adm *tasuki.Admin, queue string) tasuki.Retention {
	t.Helper()
	stats, err := adm.Stats(context.Background())
	require.NoError(t, err)
	for _, s := range stats {
		if s.Queue == queue {
			return s.Retention
		}
	}
	t.Fatalf("queue %s not in stats", queue)
	return tasuki.Retention{}
}

func TestRetentionShow(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)
	adm, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)

	// A queue tasuki does not know has the defaults, and the command says
	// it has no jobs: the name may be mistyped.
	r := runCLI(t, url, "retention", "emails")
	requireOK(t, r)
	assert.Equal(t, "queue emails keeps its finished jobs:\n"+
		"  completed  24h (the default)\n"+
		"  canceled   7d (the default)\n"+
		"  failed     7d (the default)\n"+
		"queue emails has no jobs yet (tasuki stats lists the queues)\n", r.stdout)
	assert.Empty(t, r.stderr)

	r = runCLI(t, url, "retention", "emails", "--json")
	requireOK(t, r)
	assert.JSONEq(t, `{"queue": "emails", "jobs": 0, "changed": false,
		"retention_completed_seconds": 86400, "retention_canceled_seconds": 604800, "retention_failed_seconds": 604800}`, r.stdout)

	seed(t, pool, "emails", tasuki.StatusPending, 2, 0)
	seed(t, pool, "emails", tasuki.StatusFailed, 1, time.Hour)
	require.NoError(t, adm.SetRetention(context.Background(), "emails", tasuki.Retention{
		Completed: 36 * time.Hour, Canceled: tasuki.KeepForever, Failed: 90 * time.Minute,
	}))
	r = runCLI(t, url, "retention", "emails")
	requireOK(t, r)
	assert.Equal(t, "queue emails keeps its finished jobs:\n"+
		"  completed  36h\n"+
		"  canceled   forever\n"+
		"  failed     1h30m\n", r.stdout)
	r = runCLI(t, url, "retention", "emails", "--json")
	requireOK(t, r)
	assert.JSONEq(t, `{"queue": "emails", "jobs": 3, "changed": false,
		"retention_completed_seconds": 129600, "retention_canceled_seconds": -1, "retention_failed_seconds": 5400}`, r.stdout)
}

func TestRetentionSet(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)
	adm, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	seed(t, pool, "emails", tasuki.StatusCompleted, 1, time.Hour)

	r := runCLI(t, url, "retention", "emails", "--completed", "48h", "--canceled", "forever", "--failed", "30d")
	requireOK(t, r)
	assert.Equal(t, "queue emails now keeps its finished jobs:\n"+
		"  completed  2d\n"+
		"  canceled   forever\n"+
		"  failed     30d\n", r.stdout)
	assert.Empty(t, r.stderr)
	assert.Equal(t, tasuki.Retention{Completed: 48 * time.Hour, Canceled: tasuki.KeepForever, Failed: 30 * 24 * time.Hour},
		retentionOf(t, adm, "emails"))

	// Flags not given keep the value in effect.
	r = runCLI(t, url, "retention", "emails", "--completed", "1d12h")
	requireOK(t, r)
	assert.Equal(t, tasuki.Retention{Completed: 36 * time.Hour, Canceled: tasuki.KeepForever, Failed: 30 * 24 * time.Hour},
		retentionOf(t, adm, "emails"))

	// "default" goes back to tasuki's default; the others are kept.
	r = runCLI(t, url, "retention", "emails", "--canceled", "default", "--json")
	requireOK(t, r)
	assert.JSONEq(t, `{"queue": "emails", "jobs": 1, "changed": true,
		"retention_completed_seconds": 129600, "retention_canceled_seconds": 604800, "retention_failed_seconds": 2592000}`, r.stdout)
	assert.Equal(t, tasuki.Retention{Completed: 36 * time.Hour, Canceled: tasuki.DefaultCanceledRetention, Failed: 30 * 24 * time.Hour},
		retentionOf(t, adm, "emails"))

	// Setting what is in effect changes nothing, and says so.
	r = runCLI(t, url, "retention", "emails", "--failed", "720h")
	requireOK(t, r)
	assert.Equal(t, "queue emails already kept its finished jobs so; nothing changed:\n"+
		"  completed  36h\n"+
		"  canceled   7d (the default)\n"+
		"  failed     30d\n", r.stdout)

	// Values are case-insensitive; all three at "default" is the zero
	// setting.
	r = runCLI(t, url, "retention", "emails", "--completed", "Default", "--canceled", "FOREVER", "--failed", "default")
	requireOK(t, r)
	assert.Equal(t, tasuki.Retention{Completed: tasuki.DefaultCompletedRetention, Canceled: tasuki.KeepForever, Failed: tasuki.DefaultFailedRetention},
		retentionOf(t, adm, "emails"))
	r = runCLI(t, url, "retention", "emails", "--canceled", "default")
	requireOK(t, r)
	assert.Equal(t, defaultRetention(), retentionOf(t, adm, "emails"))
}

// TestRetentionSetKeepsDefaults: a flag not given keeps a value in effect
// equal to tasuki's default as the default, not as an explicit value, so
// the queue follows tasuki's default; the show output marks it.
func TestRetentionSetKeepsDefaults(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)
	adm, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)

	// A queue without jobs can have a setting; the command says it has no
	// jobs yet, in case the name is mistyped.
	r := runCLI(t, url, "retention", "audit", "--completed", "forever")
	requireOK(t, r)
	assert.Equal(t, "queue audit now keeps its finished jobs:\n"+
		"  completed  forever\n"+
		"  canceled   7d (the default)\n"+
		"  failed     7d (the default)\n"+
		"queue audit has no jobs yet: its jobs will be kept so (tasuki stats lists the queues)\n", r.stdout)
	assert.Equal(t, tasuki.Retention{Completed: tasuki.KeepForever, Canceled: tasuki.DefaultCanceledRetention, Failed: tasuki.DefaultFailedRetention},
		retentionOf(t, adm, "audit"))

	// The stored setting: NULL (the default) where no value was given.
	rows, err := db.New(pool).QueueKindStats(context.Background(), nil)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	assert.Equal(t, pgtype.Int8{Int64: -1, Valid: true}, rows[0].CompletedRetentionUs)
	assert.False(t, rows[0].CanceledRetentionUs.Valid)
	assert.False(t, rows[0].FailedRetentionUs.Valid)

	// Stats shows the retention.
	r = runCLI(t, url, "stats", "--json")
	requireOK(t, r)
	var stats []queueStatsJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &stats))
	require.Len(t, stats, 1)
	assert.Equal(t, "audit", stats[0].Queue)
	assert.Equal(t, -1.0, stats[0].RetentionCompletedSeconds)
	assert.Equal(t, 604800.0, stats[0].RetentionCanceledSeconds)
	assert.Equal(t, 604800.0, stats[0].RetentionFailedSeconds)
}

func TestRetentionInvalid(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)
	adm, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	require.NoError(t, adm.SetRetention(context.Background(), "emails", tasuki.Retention{Completed: time.Hour}))

	const give = `give a duration (48h, 90m, 7d), "forever" or "default"`
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--completed", "abc"}, `tasuki: --completed "abc": ` + give},
		{[]string{"--failed", ""}, `tasuki: --failed "": ` + give},
		{[]string{"--canceled", "48"}, `tasuki: --canceled "48": ` + give},
		{[]string{"--canceled", "-1h"}, `tasuki: --canceled "-1h": ` + give},
		{[]string{"--completed", "0s"}, `tasuki: --completed "0s": a retention is at least 1µs; "default" is tasuki's default (24h)`},
		{[]string{"--failed", "500ns"}, `tasuki: --failed "500ns": a retention is at least 1µs; "default" is tasuki's default (7d)`},
		{[]string{"--completed", "200000d"}, `tasuki: --completed "200000d": the longest retention is 106751d; "forever" keeps the jobs`},
		{[]string{"--keep", "1h"}, `tasuki: unknown flag: --keep (see 'tasuki retention --help')`},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			t.Parallel()
			line := requireOneLineError(t, runCLI(t, url, append([]string{"retention", "emails"}, tc.args...)...))
			assert.Equal(t, tc.want, line)
		})
	}
	// Nothing was changed.
	assert.Equal(t, tasuki.Retention{Completed: time.Hour, Canceled: tasuki.DefaultCanceledRetention, Failed: tasuki.DefaultFailedRetention},
		retentionOf(t, adm, "emails"))

	// Values are checked before the database is asked for.
	line := requireOneLineError(t, runCLI(t, "", "retention", "emails", "--completed", "soon"))
	assert.Equal(t, `tasuki: --completed "soon": `+give, line)
}

func TestRetentionQueueArgument(t *testing.T) {
	t.Parallel()
	url, _ := migrated(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "tasuki: give the queue: tasuki retention <queue> (tasuki stats lists the queues)"},
		{[]string{"a", "b"}, `tasuki: give one queue, not 2 ("a", "b"): tasuki retention <queue>`},
		{[]string{strings.Repeat("q", 129)}, "a queue name has 1 to 128 characters"},
		{[]string{strings.Repeat("q", 129), "--completed", "1h"}, "a queue name has 1 to 128 characters"},
		{[]string{""}, "a queue name has 1 to 128 characters"},
		{[]string{"bad\xffname"}, "a queue name is valid UTF-8 without NUL characters"},
		{[]string{"-emails"}, `a queue name that starts with '-' goes after "--": tasuki retention -- -emails`},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			t.Parallel()
			line := requireOneLineError(t, runCLI(t, url, append([]string{"retention"}, tc.args...)...))
			assert.Contains(t, line, tc.want)
		})
	}

	// A queue named like a flag, after "--".
	r := runCLI(t, url, "retention", "--completed", "2h", "--", "-emails")
	requireOK(t, r)
	assert.True(t, strings.HasPrefix(r.stdout, "queue -emails now keeps its finished jobs:\n"), "stdout: %s", r.stdout)
}

func TestRetentionHelp(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "", "retention", "--help")
	requireOK(t, r)
	// The rule for flags not given is stated.
	assert.Contains(t, r.stdout, "not given keeps")
	for _, flag := range []string{"--completed", "--canceled", "--failed", "--json"} {
		assert.Contains(t, r.stdout, flag)
	}
	r = runCLI(t, "", "--help")
	requireOK(t, r)
	assert.Contains(t, r.stdout, "retention")
}

// --installation shows and sets the default of every queue without a
// setting of its own; a queue's show says which values come from it.
func TestRetentionInstallation(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)
	adm, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)

	r := runCLI(t, url, "retention", "--installation", "--completed", "forever")
	requireOK(t, r)
	assert.Equal(t, "queues without a setting of their own now keep their finished jobs:\n"+
		"  completed  forever\n"+
		"  canceled   7d (the default)\n"+
		"  failed     7d (the default)\n", r.stdout)
	stored, err := adm.DefaultRetention(context.Background())
	require.NoError(t, err)
	assert.Equal(t, tasuki.Retention{Completed: tasuki.KeepForever}, stored)

	seed(t, pool, "emails", tasuki.StatusCompleted, 1, time.Hour)
	r = runCLI(t, url, "retention", "emails", "--failed", "30d")
	requireOK(t, r)
	assert.Equal(t, "queue emails now keeps its finished jobs:\n"+
		"  completed  forever (the default of every queue: tasuki retention --installation)\n"+
		"  canceled   7d (the default)\n"+
		"  failed     30d\n", r.stdout)
	assert.Equal(t, tasuki.Retention{Completed: tasuki.KeepForever, Canceled: tasuki.DefaultCanceledRetention, Failed: 30 * 24 * time.Hour},
		retentionOf(t, adm, "emails"))

	r = runCLI(t, url, "retention", "--installation", "--json")
	requireOK(t, r)
	assert.JSONEq(t, `{"queue": "", "jobs": 0, "changed": false,
		"retention_completed_seconds": -1, "retention_canceled_seconds": 604800, "retention_failed_seconds": 604800}`, r.stdout)

	line := requireOneLineError(t, runCLI(t, url, "retention", "--installation", "emails"))
	assert.Contains(t, line, "give a queue or --installation, not both")
}
