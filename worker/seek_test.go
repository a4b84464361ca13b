package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// These tests drive the fetch loop's lease by hand, statement by
// statement, on a real database.

type seekPayload struct {
	N int `json:"n"`
}

func (seekPayload) Kind() string { return "seek" }

func seekWorker(t *testing.T, pool *pgxpool.Pool, queue string) *Worker {
	t.Helper()
	w, err := New(pool, Config{Queue: queue, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, Handle(HandlerFunc[seekPayload](func(context.Context, *tasuki.Job[seekPayload]) error { return nil })))
	require.NoError(t, err)
	w.queries = db.New(pool)
	return w
}

// rawInsert adds a job with SQL of its own, as an application may: no
// wake-up names it.
func rawInsert(t *testing.T, pool *pgxpool.Pool, queue string, priority int, scheduledAt string) int64 {
	t.Helper()
	var id int64
	require.NoError(t, pool.QueryRow(context.Background(),
		`INSERT INTO tasuki_job (queue, kind, priority, payload, scheduled_at) VALUES ($1, 'seek', $2, '{"n":0}', `+scheduledAt+`) RETURNING id`,
		queue, priority).Scan(&id))
	return id
}

func leaseIDs(t *testing.T, w *Worker, n int) []int64 {
	t.Helper()
	for _, s := range w.sources {
		s.due = true
	}
	pl := w.plan(false)
	for i := range pl.limits {
		pl.limits[i] = n
	}
	for _, l := range [][]int32{pl.p.HeadLimits, pl.p.SeekLimits, pl.p.QueueMax, pl.p.KindMax} {
		for i := range l {
			l[i] = int32(n)
		}
	}
	for q := range pl.queues {
		pl.queues[q] = n
	}
	for k := range pl.kinds {
		pl.kinds[k] = n
	}
	jobs, _, err := w.lease(context.Background(), pl)
	require.NoError(t, err)
	ids := make([]int64, len(jobs))
	for i, j := range jobs {
		ids[i] = j.row.ID
	}
	return ids
}

// Leasing from remembered positions still takes every runnable job in
// priority, then scheduled time, then id order, one at a time, across
// priorities the worker knows.
func TestSeekLeasesInPriorityOrder(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := seekWorker(t, pool, "seek-order")
	for _, p := range []int{0, 1, 2} {
		rawInsert(t, pool, "seek-order", p, "now() - interval '1 hour'")
	}
	require.Len(t, leaseIDs(t, w, 10), 3, "the first lease reads from the head")
	require.False(t, w.sources[0].seek.fromHead, "a lease from the head that found fewer jobs than asked ends reading from the head")

	var want []int64
	for _, p := range []int{2, 0, 1, 0, 2, 1} {
		want = append(want, rawInsert(t, pool, "seek-order", p, "clock_timestamp()"))
	}
	// Order by (priority, scheduled_at, id): ids rise with clock_timestamp.
	order := []int{1, 3, 2, 5, 0, 4}
	var got []int64
	for range want {
		ids := leaseIDs(t, w, 1)
		require.Len(t, ids, 1)
		got = append(got, ids...)
	}
	for i, j := range order {
		assert.Equal(t, want[j], got[i], "lease %d", i)
	}
	assert.Empty(t, leaseIDs(t, w, 10))
}

// A job that became runnable behind where the last lease stopped (here:
// inserted by the application's own SQL with an earlier scheduled time, and
// at a priority the worker has not seen) is found by the sweeper's look
// for the first runnable job of each priority, and then leased in priority
// order.
func TestSeekFindsJobsBehindItsPositions(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := seekWorker(t, pool, "seek-behind")
	rawInsert(t, pool, "seek-behind", 1, "clock_timestamp()")
	require.Len(t, leaseIDs(t, w, 10), 1)
	require.False(t, w.sources[0].seek.fromHead)

	behind := rawInsert(t, pool, "seek-behind", 1, "now() - interval '1 hour'")
	urgent := rawInsert(t, pool, "seek-behind", 0, "now() - interval '1 hour'")
	ahead := rawInsert(t, pool, "seek-behind", 1, "clock_timestamp()")
	assert.Equal(t, []int64{ahead}, leaseIDs(t, w, 10), "a lease reads only from after its positions")

	require.NoError(t, w.findHeads(context.Background()))
	assert.Equal(t, []int64{urgent}, leaseIDs(t, w, 1), "the more urgent job first")
	assert.Equal(t, []int64{behind}, leaseIDs(t, w, 10))
	assert.Empty(t, leaseIDs(t, w, 10))
}

// A wake-up that names where its jobs begin moves the positions back
// there; one that names nothing has the next leases read from the head.
func TestSeekRewinds(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := seekWorker(t, pool, "seek-rewind")
	rawInsert(t, pool, "seek-rewind", 3, "clock_timestamp()")
	require.Len(t, leaseIDs(t, w, 10), 1)

	var at time.Time
	late := rawInsert(t, pool, "seek-rewind", 3, "now() - interval '1 hour'")
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT scheduled_at FROM tasuki_job WHERE id = $1", late).Scan(&at))
	assert.Empty(t, leaseIDs(t, w, 10))
	w.rewind(w.sources[0].queue.name, []head{{priority: 3, at: at.UnixMicro(), kind: "seek"}})
	assert.Equal(t, []int64{late}, leaseIDs(t, w, 10), "moved back to the announced head")

	lost := rawInsert(t, pool, "seek-rewind", 3, "now() - interval '2 hours'")
	other := rawInsert(t, pool, "seek-rewind", 9, "now() - interval '2 hours'")
	assert.Empty(t, leaseIDs(t, w, 10))
	w.rewind(w.sources[0].queue.name, nil)
	assert.ElementsMatch(t, []int64{lost, other}, leaseIDs(t, w, 10), "a wake-up without heads reads from the head")

	// A head at a priority not seen yet reads that priority from its head:
	// its jobs may begin anywhere.
	first := rawInsert(t, pool, "seek-rewind", 5, "now() - interval '3 hours'")
	second := rawInsert(t, pool, "seek-rewind", 5, "clock_timestamp()")
	w.rewind(w.sources[0].queue.name, []head{{priority: 5, at: time.Now().UnixMicro(), kind: "seek"}, {priority: -1, kind: "seek"}, {priority: 1 << 20, kind: "seek"}})
	assert.ElementsMatch(t, []int64{first, second}, leaseIDs(t, w, 10))
}

// A job scheduled at the earliest time PostgreSQL stores is leased, and
// the positions after it stay within range.
func TestSeekAtTheBeginningOfTime(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := seekWorker(t, pool, "seek-bc")
	early := rawInsert(t, pool, "seek-bc", 0, "'4714-11-24 00:00:00+00 BC'")
	assert.Equal(t, []int64{early}, leaseIDs(t, w, 10))
	next := rawInsert(t, pool, "seek-bc", 0, "'4714-11-24 00:00:00+00 BC'")
	assert.Equal(t, []int64{next}, leaseIDs(t, w, 10), "seeks from the earliest time")
}

// A full batch read from the head keeps the next leases reading from the
// head, as the jobs of priorities it did not reach may begin anywhere.
func TestSeekStaysAtHeadWhileBatchesAreFull(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := seekWorker(t, pool, "seek-full")
	for i := range 4 {
		rawInsert(t, pool, "seek-full", i%2, fmt.Sprintf("now() - interval '%d minutes'", 10-i))
	}
	late := rawInsert(t, pool, "seek-full", 7, "now() - interval '1 day'")
	assert.Len(t, leaseIDs(t, w, 2), 2)
	assert.True(t, w.sources[0].seek.fromHead)
	assert.Len(t, leaseIDs(t, w, 2), 2)
	assert.Equal(t, []int64{late}, leaseIDs(t, w, 2))
	assert.False(t, w.sources[0].seek.fromHead)
}

// The near look finds jobs a little behind the positions (scheduled in
// the last nearWindow) of the priorities the worker knows; what lies
// further behind is left to the full look.
func TestSeekNearLookFindsRecentJobsBehind(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := seekWorker(t, pool, "seek-near")
	rawInsert(t, pool, "seek-near", 2, "clock_timestamp()")
	require.Len(t, leaseIDs(t, w, 10), 1)

	recent := rawInsert(t, pool, "seek-near", 2, "now() - interval '2 seconds'")
	old := rawInsert(t, pool, "seek-near", 2, "now() - interval '1 hour'")
	unknown := rawInsert(t, pool, "seek-near", 8, "now() - interval '1 second'")
	assert.Empty(t, leaseIDs(t, w, 10))

	require.NoError(t, w.findNear(context.Background()))
	assert.Equal(t, []int64{recent}, leaseIDs(t, w, 10), "only the recent job of a known priority")
	require.NoError(t, w.findHeads(context.Background()))
	assert.ElementsMatch(t, []int64{old, unknown}, leaseIDs(t, w, 10))
}

// A wake-up that names only kinds the worker does not handle, or another
// queue, makes no source due; one that names a kind it handles, or no
// kinds, does.
func TestSeekIgnoresWakeUpsOfOtherKinds(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := seekWorker(t, pool, "seek-kinds")
	at := time.Now().UnixMicro()
	assert.False(t, w.rewind("seek-kinds", []head{{priority: 0, at: at, kind: "other"}}), "another kind")
	assert.False(t, w.rewind("elsewhere", []head{{priority: 0, at: at, kind: "seek"}}), "another queue")
	assert.Empty(t, w.inbox.take())
	assert.True(t, w.rewind("seek-kinds", []head{{priority: 0, at: at, kind: "other"}, {priority: 2, at: at, kind: "seek"}}))
	assert.Len(t, w.inbox.take(), 1)
	assert.True(t, w.rewind("seek-kinds", []head{{priority: 0, at: at, anyKind: true}}), "an older client's head names no kind")
	assert.Len(t, w.inbox.take(), 1)
	assert.True(t, w.rewind("seek-kinds", nil), "a wake-up without heads")
	assert.Len(t, w.inbox.take(), 1)
}

// The sweeper's looks read past a job scheduled at -infinity (SQL of the
// application's own): the row is reported at the earliest time Go holds,
// and the look still finds the jobs behind the positions. An idle worker
// finds such jobs by its reads from the heads, so the looks are driven by
// hand here.
func TestSeekLooksReadPastMinusInfinity(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := seekWorker(t, pool, "seek-inf")
	rawInsert(t, pool, "seek-inf", 0, "clock_timestamp()")
	require.Len(t, leaseIDs(t, w, 10), 1)
	require.False(t, w.sources[0].seek.fromHead)

	inf := rawInsert(t, pool, "seek-inf", 9, "'-infinity'")
	behind := rawInsert(t, pool, "seek-inf", 0, "now() - interval '1 day'")
	assert.Empty(t, leaseIDs(t, w, 10), "both lie behind the positions")
	require.NoError(t, w.findNear(context.Background()))
	require.NoError(t, w.findHeads(context.Background()))
	assert.ElementsMatch(t, []int64{behind, inf}, leaseIDs(t, w, 10), "both found")
}
