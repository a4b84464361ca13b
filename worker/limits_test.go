package worker

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

type limitAlpha struct{}

func (limitAlpha) Kind() string { return "alpha" }

type limitBeta struct{}

func (limitBeta) Kind() string { return "beta" }

// A kind's limit and a queue's are applied one after the other in one
// lease statement, so a kind's slot can go to a row that the queue's limit
// then drops. Queue a has one slot, b five; kind alpha is limited to 1.
// The first lease reads a-beta (first in a's order), a-alpha and b-alpha:
// alpha's slot goes to a-alpha, a's slot to a-beta, and no alpha job is
// leased although b-alpha could run. The sources it read must be read
// again at once, and the next lease takes b-alpha, instead of leaving it
// to the next poll.
func TestLimitCutBySomeoneElsesLimitIsReadAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	w, err := New(pool, Config{
		Queues: map[string]QueueConfig{"a": {Concurrency: 1}, "b": {Concurrency: 5}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	},
		HandleFunc(func(context.Context, *tasuki.Job[limitAlpha]) error { return nil }).With(KindConfig{MaxConcurrency: 1}),
		HandleFunc(func(context.Context, *tasuki.Job[limitBeta]) error { return nil }),
	)
	require.NoError(t, err)
	w.queries = db.New(pool)
	_, err = pool.Exec(ctx, `INSERT INTO tasuki_job (queue, kind, payload, priority, scheduled_at) VALUES
		('a', 'beta', '{}', 0, now() - interval '3 seconds'),
		('a', 'alpha', '{}', 0, now() - interval '2 seconds'),
		('b', 'alpha', '{}', 1, now() - interval '1 second')`)
	require.NoError(t, err)

	lease := func() []string {
		t.Helper()
		for s := range w.inbox.take() {
			s.due = true
		}
		jobs, _, err := w.lease(ctx, w.plan(false))
		require.NoError(t, err)
		var got []string
		for _, j := range jobs {
			w.startJob(ctx, j) // counts the job against its queue and kind
			got = append(got, j.row.Queue+"-"+j.row.Kind)
		}
		return got
	}
	for _, s := range w.sources {
		s.due = true
	}
	assert.Equal(t, []string{"a-beta"}, lease())
	assert.True(t, w.byPair[pair{"b", "alpha"}].due, "b's alpha source is read again at once")
	assert.Equal(t, []string{"b-alpha"}, lease(), "the next lease takes b's alpha job")
}

// A lease over several ranges of a saturated queue (two kinds here, or
// several priorities of one kind) locks only the rows it leases: locking
// each range up to the queue's free slots and keeping the first ones would
// lock, and write, one batch per range for every batch leased. Counted
// from a second connection while the lease's transaction is open: the
// rows it cannot lock are the lease's.
func TestLeaseOverSeveralRangesLocksOnlyWhatItTakes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	_, err := pool.Exec(ctx, `INSERT INTO tasuki_job (queue, kind, payload, priority, scheduled_at)
		SELECT 'share', CASE WHEN i % 2 = 0 THEN 'alpha' ELSE 'beta' END, '{}', i % 3, now() - (100 - i) * interval '1 second'
		FROM generate_series(1, 60) AS i`)
	require.NoError(t, err)

	for _, tc := range []struct {
		name string
		p    db.JobLeaseParams
	}{
		{"two kinds from their heads", db.JobLeaseParams{
			HeadQueues: []string{"share", "share"}, HeadKinds: []string{"alpha", "beta"}, HeadLimits: []int32{10, 10},
		}},
		{"three priorities of one kind", db.JobLeaseParams{
			SeekQueues: []string{"share", "share", "share"}, SeekKinds: []string{"alpha", "alpha", "alpha"},
			SeekPriorities: []int16{0, 1, 2}, SeekAfter: []time.Time{headOfPriority, headOfPriority, headOfPriority},
			SeekLimits: []int32{10, 10, 10},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			p.LeaseUs = time.Minute.Microseconds()
			p.SkipIds, p.OnlyIds = []int64{}, []int64{}
			p.QueueNames, p.QueueMax = []string{"share"}, []int32{10}
			// The queue was saturated at the last lease.
			p.HeadPeek = make([]bool, len(p.HeadQueues))
			p.SeekPeek = make([]bool, len(p.SeekQueues))
			for i := range p.HeadPeek {
				p.HeadPeek[i] = true
			}
			for i := range p.SeekPeek {
				p.SeekPeek[i] = true
			}
			p.KindNames, p.KindMax = []string{"alpha", "beta"}, []int32{10, 10}
			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			defer tx.Rollback(ctx) //nolint:errcheck // the lease is not kept
			rows, err := db.New(pool).WithTx(tx).JobLease(ctx, p)
			require.NoError(t, err)
			var got []int64
			for _, r := range rows {
				got = append(got, r.ID)
			}

			other, err := pool.Begin(ctx)
			require.NoError(t, err)
			defer other.Rollback(ctx) //nolint:errcheck // it only counts
			// What the lease's transaction has not committed, other
			// connections still see as pending.
			kinds := append(p.HeadKinds, p.SeekKinds...)
			var first []int64
			r, err := other.Query(ctx, `SELECT id FROM tasuki_job WHERE queue = 'share' AND kind = ANY($1) AND status = 'pending'
				ORDER BY priority, scheduled_at, id LIMIT 10`, kinds)
			require.NoError(t, err)
			for r.Next() {
				var id int64
				require.NoError(t, r.Scan(&id))
				first = append(first, id)
			}
			require.NoError(t, r.Err())
			assert.ElementsMatch(t, first, got, "the first 10 of the ranges in the queue's order")
			var pending, lockable int
			require.NoError(t, other.QueryRow(ctx, `SELECT count(*) FROM tasuki_job WHERE queue = 'share' AND status = 'pending'`).Scan(&pending))
			require.NoError(t, other.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM tasuki_job WHERE queue = 'share' AND status = 'pending' FOR UPDATE SKIP LOCKED) AS x`).Scan(&lockable))
			assert.Equal(t, 10, pending-lockable, "rows the lease locked")
		})
	}
}

// A range's share of a lease is counted before it locks, once the queue
// is saturated: when another transaction holds the rows of that share,
// the range takes fewer, and the slots it leaves may have been another
// range's. Here every alpha job is held by another transaction. The first
// lease locks without peeking and fills the queue with beta jobs; the
// second peeks, counts the held alpha jobs into alpha's share and takes
// fewer than the queue's free slots. Beta's source must be read again at
// once, and locked without peeking, not left to the next poll with
// runnable jobs.
func TestLeaseShareLostToAnotherWorkerIsReadAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	w, err := New(pool, Config{
		Queue: "share", Concurrency: 10,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	},
		HandleFunc(func(context.Context, *tasuki.Job[limitAlpha]) error { return nil }),
		HandleFunc(func(context.Context, *tasuki.Job[limitBeta]) error { return nil }),
	)
	require.NoError(t, err)
	w.queries = db.New(pool)
	_, err = pool.Exec(ctx, `INSERT INTO tasuki_job (queue, kind, payload, scheduled_at)
		SELECT 'share', CASE WHEN i <= 5 THEN 'alpha' ELSE 'beta' END, '{}', now() - (100 - i) * interval '1 second'
		FROM generate_series(1, 25) AS i`)
	require.NoError(t, err)
	other, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer other.Rollback(ctx) //nolint:errcheck // it only holds rows
	_, err = other.Exec(ctx, `SELECT id FROM tasuki_job WHERE kind = 'alpha' FOR UPDATE`)
	require.NoError(t, err)

	beta := w.byPair[pair{"share", "beta"}]
	// The jobs are not started: the queue keeps its 10 free slots.
	lease := func() int {
		t.Helper()
		jobs, _, err := w.lease(ctx, w.plan(false))
		require.NoError(t, err)
		return len(jobs)
	}
	for _, s := range w.sources {
		s.due = true
	}
	assert.Equal(t, 10, lease(), "locked without peeking: 10 beta jobs")
	require.True(t, beta.queue.saturated)
	assert.Equal(t, 5, lease(), "peeked: the 5 held alpha jobs come first in the queue's order, beta has the rest")
	assert.True(t, beta.due, "beta has more runnable jobs")
	assert.False(t, beta.queue.saturated)
	assert.Equal(t, 5, lease(), "locked without peeking again: the last 5 beta jobs")
}
