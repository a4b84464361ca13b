package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// Attacks on the peeked lease (commit e4b8ab1): JobLease with peek reads
// the ranges that share a queue or kind without locks, counts each one's
// share of the queue's first rows, and then locks each range up to its
// share only, keeping what it locked without the final limits.

// paWorker is a worker over queues (name -> concurrency) handling alpha
// and beta (limitAlpha, limitBeta), driven by hand: a poll interval of an
// hour, so nothing but the leases below reads the sources.
func paWorker(t *testing.T, pool *pgxpool.Pool, queues map[string]int, alphaMax int) *Worker {
	t.Helper()
	qs := make(map[string]QueueConfig, len(queues))
	for q, n := range queues {
		qs[q] = QueueConfig{Concurrency: n}
	}
	w, err := New(pool, Config{
		Queues: qs, PollInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	},
		HandleFunc(func(context.Context, *tasuki.Job[limitAlpha]) error { return nil }).With(KindConfig{MaxConcurrency: alphaMax}),
		HandleFunc(func(context.Context, *tasuki.Job[limitBeta]) error { return nil }),
	)
	require.NoError(t, err)
	w.queries = db.New(pool)
	for _, s := range w.sources {
		s.due = true
	}
	return w
}

// paInsert adds a job by SQL and returns its id.
func paInsert(t *testing.T, pool *pgxpool.Pool, queue, kind string, priority int, scheduledAt string) int64 {
	t.Helper()
	var id int64
	require.NoError(t, pool.QueryRow(context.Background(),
		`INSERT INTO tasuki_job (queue, kind, priority, payload, scheduled_at) VALUES ($1, $2, $3, '{}', `+scheduledAt+`) RETURNING id`,
		queue, kind, priority).Scan(&id))
	return id
}

// paHold locks rows in a transaction of its own, as another worker's
// lease in flight or an application's transaction that updates jobs does,
// until the test ends.
func paHold(t *testing.T, pool *pgxpool.Pool, ids ...int64) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	_, err = tx.Exec(ctx, `SELECT id FROM tasuki_job WHERE id = ANY($1) FOR UPDATE`, ids)
	require.NoError(t, err)
}

// paLease runs one lease of the fetch loop over the due sources and
// returns the jobs by queue and kind. The jobs are not started: each
// finishes at once, and the queues keep their free slots.
func paLease(t *testing.T, w *Worker) (rows []*db.TasukiJob, peeked bool) {
	t.Helper()
	for s := range w.inbox.take() {
		s.due = true
	}
	pl := w.plan(false)
	jobs, _, err := w.lease(context.Background(), pl)
	require.NoError(t, err)
	for _, j := range jobs {
		rows = append(rows, j.row)
	}
	return rows, slices.Contains(pl.peeked, true)
}

func paIDs(rows []*db.TasukiJob) []int64 {
	out := make([]int64, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.ID)
	}
	return out
}

// Priority order within one lease. A peeked range's share can include a
// row another transaction holds; the lease must not fill that slot with a
// later row of the same range, of a lower priority than rows of the other
// range. Queue "prio" has 2 slots; alpha has a0 (priority 0, held by
// another worker's lease in flight) and a3 (priority 3), beta b1
// (priority 1) and b2 (priority 2). The peek ranks a0 and b1 first; the
// lease takes b1 only, and the next, which locks without peeking, takes
// b2 and a3.
func TestPeekHeldRowLetsLowerPriorityJumpAhead(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := paWorker(t, pool, map[string]int{"prio": 2}, 0)
	// A first lease that fills the queue: the next one peeks.
	paInsert(t, pool, "prio", "beta", 0, "now() - interval '1 hour'")
	paInsert(t, pool, "prio", "beta", 0, "now() - interval '1 hour'")
	rows, peeked := paLease(t, w)
	require.Len(t, rows, 2)
	require.False(t, peeked)
	require.True(t, w.queues[0].saturated)

	a0 := paInsert(t, pool, "prio", "alpha", 0, "now() - interval '1 minute'")
	a3 := paInsert(t, pool, "prio", "alpha", 3, "now() - interval '1 minute'")
	b1 := paInsert(t, pool, "prio", "beta", 1, "now() - interval '1 minute'")
	b2 := paInsert(t, pool, "prio", "beta", 2, "now() - interval '1 minute'")
	// Another worker, handling alpha only, leases a0 and has not
	// committed yet when this worker's lease runs.
	ctx := context.Background()
	other, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer other.Rollback(ctx) //nolint:errcheck // committed below
	theirs, err := db.New(pool).WithTx(other).JobLease(ctx, testdb.Lease(db.JobLeaseParams{
		LeaseUs: time.Minute.Microseconds(), SkipIds: []int64{}, OnlyIds: []int64{},
	}, "prio", "alpha", 1))
	require.NoError(t, err)
	require.Equal(t, []int64{a0}, paIDs(theirs))

	rows, peeked = paLease(t, w)
	require.True(t, peeked)
	// The slot a0 had in the peek stays free in this lease rather than go
	// to a3 out of order; the queue came back short, so the next lease
	// locks without peeking and takes b2 before a3.
	assert.Equal(t, []int64{b1}, paIDs(rows), "b1 (p1), and not a3 (p3): a3=%d", a3)
	assert.False(t, w.queues[0].saturated)
	rows, peeked = paLease(t, w)
	require.False(t, peeked)
	assert.ElementsMatch(t, []int64{b2, a3}, paIDs(rows), "the next lease, in priority order past the held a0")
	require.NoError(t, other.Commit(ctx))
}

// No starvation. A queue whose first rows another transaction holds gives
// them its share in a peeked lease, and its other kind gets nothing in
// that lease; another queue that stays saturated must not keep this one
// peeking, lease after lease, though it has free slots and runnable jobs.
// Queue "busy" always fills its 2 slots with beta jobs; queue "idle" has 2
// slots, its 2 oldest jobs (alpha) are held, and 5 beta jobs are runnable.
func TestPeekHeldRowsStarveAQueueWhileAnotherIsBusy(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := paWorker(t, pool, map[string]int{"busy": 2, "idle": 2}, 0)
	_, err := pool.Exec(context.Background(), `INSERT INTO tasuki_job (queue, kind, payload, scheduled_at)
		SELECT 'busy', 'beta', '{}', now() - interval '1 hour' FROM generate_series(1, 40)`)
	require.NoError(t, err)
	held := []int64{
		paInsert(t, pool, "idle", "alpha", 0, "now() - interval '2 hours'"),
		paInsert(t, pool, "idle", "alpha", 0, "now() - interval '2 hours'"),
	}
	var beta []int64
	for range 5 {
		beta = append(beta, paInsert(t, pool, "idle", "beta", 0, "now() - interval '1 hour'"))
	}
	paHold(t, pool, held...)

	var idle []int64
	for i := range 6 {
		rows, peeked := paLease(t, w)
		n := 0
		for _, r := range rows {
			switch r.Queue {
			case "idle":
				idle = append(idle, r.ID)
			case "busy":
				n++
			}
		}
		require.Equal(t, 2, n, "lease %d (peeked %v): the busy queue fills its slots", i, peeked)
		require.True(t, w.byPair[pair{"idle", "beta"}].due, "lease %d: idle's beta source stays due", i)
	}
	assert.ElementsMatch(t, beta, idle,
		"6 leases with 2 free slots in idle each: its 5 runnable beta jobs are leased")
}

// No starvation through a kind's limit: a row another transaction holds
// takes its kind's share in a peek although the lease cannot lock it.
// Kind alpha may run 1 at a time; queue "x" has a held alpha job first,
// queue "y" a runnable alpha job; queue "busy" stays saturated. The alpha
// job of y must be leased: alpha came back short of its limit, so its next
// lease locks without peeking.
func TestPeekHeldRowTakesAKindsSlotFromAnotherQueue(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := paWorker(t, pool, map[string]int{"busy": 2, "x": 2, "y": 2}, 1)
	_, err := pool.Exec(context.Background(), `INSERT INTO tasuki_job (queue, kind, payload, scheduled_at)
		SELECT 'busy', 'beta', '{}', now() - interval '1 hour' FROM generate_series(1, 40)`)
	require.NoError(t, err)
	// The first lease fills busy: the next ones peek.
	rows, peeked := paLease(t, w)
	require.Len(t, rows, 2)
	require.False(t, peeked)
	held := paInsert(t, pool, "x", "alpha", 0, "now() - interval '2 hours'")
	want := paInsert(t, pool, "y", "alpha", 0, "now() - interval '1 hour'")
	paHold(t, pool, held)

	var got []int64
	for i := range 6 {
		rows, peeked := paLease(t, w)
		for _, r := range rows {
			if r.Kind == "alpha" {
				got = append(got, r.ID)
			}
		}
		require.True(t, w.byPair[pair{"y", "alpha"}].due || len(got) > 0, "lease %d (peeked %v): y's alpha source stays due", i, peeked)
	}
	assert.Equal(t, []int64{want}, got, "alpha's free slot goes to y's runnable alpha job within 6 leases")
}

// HELD: two worker processes handle overlapping queues and kinds and
// drain them concurrently, with kind limits, priorities, and jobs
// inserted while they run (with wake-ups): every job runs exactly once,
// none is left pending or running, and no worker runs more of a queue or a
// kind at once than its limits allow. The poll interval is an hour; the
// rescue round (every 5 s) still polls, so a source left stuck shows only
// as a slower test, not a failure.
func TestPeekTwoWorkersDrainOverlappingKindsExactlyOnce(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()

	var mu sync.Mutex
	runs := map[int64]int{}
	type gauge struct{ cur, max int }
	type limits struct {
		queues map[string]int
		alpha  int
	}
	newW := func(name string, l limits) (*Worker, map[string]*gauge) {
		gs := map[string]*gauge{}
		for q := range l.queues {
			gs["q:"+q] = &gauge{}
		}
		gs["k:alpha"], gs["k:beta"] = &gauge{}, &gauge{}
		enter := func(queue, kind string, id int64) func() {
			mu.Lock()
			runs[id]++
			for _, k := range []string{"q:" + queue, "k:" + kind} {
				g := gs[k]
				g.cur++
				g.max = max(g.max, g.cur)
			}
			mu.Unlock()
			return func() {
				mu.Lock()
				gs["q:"+queue].cur--
				gs["k:"+kind].cur--
				mu.Unlock()
			}
		}
		qs := map[string]QueueConfig{}
		for q, n := range l.queues {
			qs[q] = QueueConfig{Concurrency: n}
		}
		w, err := New(pool, Config{Queues: qs, PollInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
			HandleFunc(func(_ context.Context, j *tasuki.Job[limitAlpha]) error {
				defer enter(j.Queue, j.Kind, j.ID)()
				time.Sleep(time.Millisecond) // overlap, not measured
				return nil
			}).With(KindConfig{MaxConcurrency: l.alpha}),
			HandleFunc(func(_ context.Context, j *tasuki.Job[limitBeta]) error {
				defer enter(j.Queue, j.Kind, j.ID)()
				time.Sleep(time.Millisecond)
				return nil
			}),
		)
		require.NoError(t, err)
		_ = name
		return w, gs
	}
	l1 := limits{queues: map[string]int{"q1": 3, "q2": 2}, alpha: 2}
	l2 := limits{queues: map[string]int{"q2": 3, "q3": 2}, alpha: 1}
	w1, g1 := newW("w1", l1)
	w2, g2 := newW("w2", l2)

	_, err := pool.Exec(ctx, `INSERT INTO tasuki_job (queue, kind, payload, priority, scheduled_at)
		SELECT (ARRAY['q1','q2','q3'])[1 + i % 3], CASE WHEN i % 5 < 2 THEN 'alpha' ELSE 'beta' END, '{}', i % 4,
		       now() - (1000 - i) * interval '1 millisecond'
		FROM generate_series(1, 600) AS i`)
	require.NoError(t, err)

	runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute) // a bound only
	defer cancel()
	var wg sync.WaitGroup
	for _, w := range []*Worker{w1, w2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, w.Run(runCtx))
		}()
	}
	ca, err := tasuki.NewClient[limitAlpha](pool, tasuki.ClientConfig{Queue: "q2"})
	require.NoError(t, err)
	cb, err := tasuki.NewClient[limitBeta](pool, tasuki.ClientConfig{Queue: "q1"})
	require.NoError(t, err)
	for i := range 200 {
		q := []string{"q1", "q2", "q3"}[i%3]
		if i%2 == 0 {
			_, err = ca.Insert(ctx, limitAlpha{}, &tasuki.InsertOpts{Queue: q, Priority: i % 3})
		} else {
			_, err = cb.Insert(ctx, limitBeta{}, &tasuki.InsertOpts{Queue: q, Priority: i % 3})
		}
		require.NoError(t, err)
	}
	const total = 800
	var left int
	for runCtx.Err() == nil {
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tasuki_job WHERE status <> 'completed'`).Scan(&left))
		if left == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	assert.Zero(t, left, "jobs left not completed")
	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, runs, total)
	for id, n := range runs {
		assert.Equal(t, 1, n, "job %d ran %d times", id, n)
	}
	for _, c := range []struct {
		gs map[string]*gauge
		l  limits
	}{{g1, l1}, {g2, l2}} {
		for q, n := range c.l.queues {
			assert.LessOrEqual(t, c.gs["q:"+q].max, n, "queue %s", q)
		}
		assert.LessOrEqual(t, c.gs["k:alpha"].max, c.l.alpha, "kind alpha")
	}
	var attempts int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tasuki_job WHERE attempts <> 1`).Scan(&attempts))
	assert.Zero(t, attempts, "jobs leased more than once")
	_ = fmt.Sprint
}

// HELD: with no rows held by other transactions, a peeked lease leases
// exactly the jobs the lease without peeking leases (lock every range up
// to its limit, then the kind's and the queue's windows): random jobs over
// 3 queues and 3 kinds with priorities, random free slots and kind
// limits, random sources read from their heads or as seeks of some
// priorities from some time on. Each lease runs in a savepoint rolled
// back, so both see the same rows.
func TestPeekLeasesWhatTheWindowsLease(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(27, 1))
	queues := []string{"q1", "q2", "q3"}
	kinds := []string{"k1", "k2", "k3"}
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	total, shared := 0, 0
	defer func() {
		assert.Greater(t, total, 500, "jobs leased over all rounds")
		assert.Greater(t, shared, 50, "rounds over several ranges that leased")
	}()
	for round := range 150 {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		n := 1 + rng.IntN(60)
		for range n {
			_, err := tx.Exec(ctx, `INSERT INTO tasuki_job (queue, kind, payload, priority, scheduled_at) VALUES ($1, $2, '{}', $3, $4)`,
				queues[rng.IntN(3)], kinds[rng.IntN(3)], rng.IntN(4), base.Add(time.Duration(rng.IntN(60))*time.Second))
			require.NoError(t, err)
		}
		p := db.JobLeaseParams{LeaseUs: time.Minute.Microseconds(), SkipIds: []int64{}, OnlyIds: []int64{}}
		qf := map[string]int{}
		kf := map[string]int{}
		for _, q := range queues {
			qf[q] = 1 + rng.IntN(8)
		}
		for _, k := range kinds {
			kf[k] = 1 + rng.IntN(8)
			if rng.IntN(3) == 0 {
				kf[k] = 1 << 30 // no limit of its own
			}
		}
		usedQ, usedK := map[string]bool{}, map[string]bool{}
		for _, q := range queues {
			for _, k := range kinds {
				if rng.IntN(3) == 0 {
					continue
				}
				usedQ[q], usedK[k] = true, true
				lim := int32(min(qf[q], kf[k]))
				if rng.IntN(2) == 0 {
					p.HeadQueues = append(p.HeadQueues, q)
					p.HeadKinds = append(p.HeadKinds, k)
					p.HeadLimits = append(p.HeadLimits, lim)
					continue
				}
				for pr := range 4 {
					if rng.IntN(3) == 0 {
						continue
					}
					after := headOfPriority
					if rng.IntN(2) == 0 {
						after = base.Add(time.Duration(rng.IntN(60)) * time.Second)
					}
					p.SeekQueues = append(p.SeekQueues, q)
					p.SeekKinds = append(p.SeekKinds, k)
					p.SeekPriorities = append(p.SeekPriorities, int16(pr))
					p.SeekAfter = append(p.SeekAfter, after)
					p.SeekLimits = append(p.SeekLimits, lim)
				}
			}
		}
		for _, q := range queues {
			if usedQ[q] {
				p.QueueNames, p.QueueMax = append(p.QueueNames, q), append(p.QueueMax, int32(qf[q]))
			}
		}
		for _, k := range kinds {
			if usedK[k] {
				p.KindNames, p.KindMax = append(p.KindNames, k), append(p.KindMax, int32(kf[k]))
			}
		}
		lease := func(peek bool) []int64 {
			sp, err := tx.Begin(ctx)
			require.NoError(t, err)
			defer sp.Rollback(ctx) //nolint:errcheck // only compared
			q := p
			q.HeadPeek, q.SeekPeek = nil, nil
			for range q.HeadQueues {
				q.HeadPeek = append(q.HeadPeek, peek)
			}
			for range q.SeekQueues {
				q.SeekPeek = append(q.SeekPeek, peek)
			}
			rows, err := db.New(pool).WithTx(sp).JobLease(ctx, q)
			require.NoError(t, err)
			ids := paIDs(rows)
			slices.Sort(ids)
			return ids
		}
		locked, peeked := lease(false), lease(true)
		require.Equal(t, locked, peeked, "round %d: %+v", round, p)
		total += len(locked)
		if len(locked) > 0 && len(p.HeadQueues)+len(p.SeekQueues) > 1 {
			shared++
		}
		require.NoError(t, tx.Rollback(ctx))
	}
}

// HELD: a paused queue that shares its kinds with a saturated one leases
// nothing under peek, the other queue leases its slots in priority order
// across kinds, and once resumed (a wake-up without positions) the paused
// queue's jobs are leased at once: its sources stayed due.
func TestPeekPausedQueueSharingKinds(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	w := paWorker(t, pool, map[string]int{"run": 3, "stop": 3}, 0)
	_, err := pool.Exec(ctx, `INSERT INTO tasuki_queue (name, paused_at) VALUES ('stop', now())`)
	require.NoError(t, err)
	var stop []int64
	for i := range 4 {
		stop = append(stop, paInsert(t, pool, "stop", []string{"alpha", "beta"}[i%2], 0, "now() - interval '1 day'"))
	}
	var want []int64
	for i := range 12 {
		// Priorities 3, 2, 1, 0, 3, ... with alpha and beta interleaved.
		id := paInsert(t, pool, "run", []string{"alpha", "beta"}[i%2], 3-i%4, fmt.Sprintf("now() - interval '%d minutes'", 60-i))
		want = append(want, id)
	}
	// In the queue's order: priority, then time.
	order := []int{3, 7, 11, 2, 6, 10, 1, 5, 9, 0, 4, 8}
	var got []int64
	for i := range 4 {
		rows, peeked := paLease(t, w)
		require.Equal(t, i > 0, peeked, "lease %d", i)
		for _, r := range rows {
			require.Equal(t, "run", r.Queue, "lease %d: nothing of the paused queue", i)
			got = append(got, r.ID)
		}
		require.Len(t, rows, 3, "lease %d", i)
	}
	for i, j := range order {
		assert.Equal(t, want[j], got[i], "job %d in the queue's order", i)
	}
	_, err = pool.Exec(ctx, `UPDATE tasuki_queue SET paused_at = NULL WHERE name = 'stop'`)
	require.NoError(t, err)
	w.rewind("stop", nil)
	rows, _ := paLease(t, w)
	assert.Len(t, rows, 3, "the resumed queue fills its slots")
	rows2, _ := paLease(t, w)
	assert.ElementsMatch(t, stop, append(paIDs(rows), paIDs(rows2)...))
}
