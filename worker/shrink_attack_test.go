package worker

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
)

// Attacks on the shrunk ranges of a lease over several kinds: shrunk peeked ranges (leasePlan.shrink,
// source.share) and JobLease's peek_bounds, kind_binds, peek_by_kind,
// peek_kept and take_peeked.

// saOutOfOrder returns, for each leased row, a description of a runnable
// pending job of the same queue, of a kind the worker handles and not in
// except, that goes before it in priority, scheduled time and id order:
// a job the lease should have taken first.
func saOutOfOrder(t *testing.T, pool *pgxpool.Pool, rows []*db.TasukiJob, kinds []string, except ...int64) []string {
	t.Helper()
	var out []string
	for _, r := range rows {
		var id int64
		var kind string
		var prio int16
		err := pool.QueryRow(context.Background(), `
			SELECT id, kind, priority FROM tasuki_job
			WHERE queue = $1 AND kind = ANY($2) AND status = 'pending' AND scheduled_at <= now()
			  AND NOT (id = ANY($3))
			  AND (priority, scheduled_at, id) < ($4, $5, $6)
			ORDER BY priority, scheduled_at, id LIMIT 1`,
			r.Queue, kinds, append([]int64{}, except...), r.Priority, r.ScheduledAt, r.ID).Scan(&id, &kind, &prio)
		if err == nil {
			out = append(out, fmt.Sprintf("leased %s %d (priority %d) while %s %d (priority %d) stays pending", r.Kind, r.ID, r.Priority, kind, id, prio))
		}
	}
	return out
}

// HELD (it failed before the worker kept full ranges in a queue it reads
// partly with locks, and the bound also cut locked rows). Priority order within a queue when a shrunk peeked range shares
// its queue with a range that locks without peeking (JobLease's "mixed"
// path). A kind with a MaxConcurrency that does not bind (alpha, 1000, in
// a queue of 100 slots) comes back "short" of its limit from every peeked
// lease, so its next lease reads it with locks (take), while beta, the
// other kind of the queue, is still peeked and shrunk to its small share.
// peek_bounds cuts only the peeked rows at beta's last read row; the
// locked alpha rows are not cut, and by_queue fills the queue's slots with
// alpha jobs of priority 1 while beta jobs of priority 0, never read, stay
// pending.
func TestShrinkAttackMixedLockedRangeIsNotBounded(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	w := paWorker(t, pool, map[string]int{"mix": 100}, 1000)
	exec := func(sql string) {
		_, err := pool.Exec(ctx, sql)
		require.NoError(t, err)
	}
	// Lease 1 (locks, as the queue is not saturated yet): 90 alpha, 10
	// beta; beta's share is about a tenth.
	exec(`INSERT INTO tasuki_job (queue, kind, payload, scheduled_at)
		SELECT 'mix', CASE WHEN g % 10 = 0 THEN 'beta' ELSE 'alpha' END, '{}', now() - interval '1 hour' FROM generate_series(1, 100) g`)
	rows, peeked := paLease(t, w)
	require.Len(t, rows, 100)
	require.False(t, peeked)
	require.True(t, w.queues[0].saturated)
	// Lease 2 (peeked): 100 alpha jobs only. The queue stays saturated,
	// alpha comes back short of its limit of 1000, beta's share is ~1%.
	exec(`INSERT INTO tasuki_job (queue, kind, payload, priority, scheduled_at)
		SELECT 'mix', 'alpha', '{}', 2, now() - interval '1 hour' FROM generate_series(1, 100)`)
	rows, peeked = paLease(t, w)
	require.Len(t, rows, 100)
	require.True(t, peeked)
	require.True(t, w.queues[0].saturated)
	// Lease 3: 150 beta jobs of priority 0 and 100 alpha jobs of priority 1.
	exec(`INSERT INTO tasuki_job (queue, kind, payload, priority, scheduled_at)
		SELECT 'mix', 'beta', '{}', 0, now() - interval '1 minute' FROM generate_series(1, 150)`)
	exec(`INSERT INTO tasuki_job (queue, kind, payload, priority, scheduled_at)
		SELECT 'mix', 'alpha', '{}', 1, now() - interval '1 minute' FROM generate_series(1, 100)`)
	for _, s := range w.sources {
		s.due = true
	}
	pl := w.plan(false)
	var peekedKinds, lockedKinds []string
	for i, s := range pl.sources {
		if pl.peeked[i] {
			peekedKinds = append(peekedKinds, fmt.Sprintf("%s(limit %d of %d)", s.kind.name, shrunkLimit(pl, i), pl.limits[i]))
		} else {
			lockedKinds = append(lockedKinds, s.kind.name)
		}
	}
	t.Logf("lease 3: peeked %v, locked %v", peekedKinds, lockedKinds)
	jobs, _, err := w.lease(ctx, pl)
	require.NoError(t, err)
	rows = rows[:0]
	byKind := map[string]int{}
	for _, j := range jobs {
		rows = append(rows, j.row)
		byKind[j.row.Kind]++
	}
	t.Logf("lease 3 leased %v", byKind)
	bad := saOutOfOrder(t, pool, rows, []string{"alpha", "beta"})
	assert.Zero(t, len(bad), "jobs leased out of priority order, e.g. %v", saFirst(bad))
}

func saFirst(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// saPlans opens a connection of its own on pool's schema that has
// auto_explain send the plan of every statement it runs to the client, and
// returns it with the plans collected so far.
func saPlans(t *testing.T, pool *pgxpool.Pool, settings ...string) (*pgx.Conn, func() []string) {
	t.Helper()
	ctx := context.Background()
	cfg := pool.Config().ConnConfig.Copy()
	var mu sync.Mutex
	var plans []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		plans = append(plans, n.Message)
		mu.Unlock()
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, `LOAD 'auto_explain'`); err != nil {
		t.Skipf("auto_explain: %v", err)
	}
	for _, s := range append([]string{
		`SET auto_explain.log_min_duration = 0`,
		`SET auto_explain.log_level = 'notice'`,
		`SET auto_explain.log_nested_statements = on`,
		`SET auto_explain.log_analyze = on`,
		`SET auto_explain.log_buffers = on`,
		`SET auto_explain.log_timing = off`,
	}, settings...) {
		_, err := conn.Exec(ctx, s)
		require.NoError(t, err)
	}
	return conn, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), plans...)
	}
}

// HELD (it failed before take_peeked compared status as text). take_peeked's plan: it must fetch the ids peek_kept chose by the
// primary key, not read the whole pending index (every queue's). Queue
// "big" has 20000 runnable jobs of alpha and beta, each lease peeks both
// kinds and keeps about 60. Three states of the statistics:
//   - none (a fresh table, autovacuum off): the first, custom plan, the
//     plan after 8 runs of the prepared statement (plan_cache_mode auto,
//     when PostgreSQL may switch to a generic plan), and a forced generic
//     plan;
//   - stale: analyzed while the table held 20000 finished jobs and no
//     pending one, as when a queue was idle at the last autoanalyze and a
//     burst then arrives;
//   - fresh (ANALYZE after the inserts): passes.
//
// Without statistics or with stale ones, the planner ANDs the bitmap of
// "id = ANY(ARRAY(...))" with a full scan of the partial pending index
// (Bitmap Index Scan on tasuki_job_pending_kind_idx, no index condition,
// actual rows = every pending job), for "status = 'pending'", which the
// partial index's predicate implies: the cost the comment in take_peeked
// says the array avoids.
func TestShrinkAttackTakePeekedPlanReadsWholePendingIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lease := func(t *testing.T, pool *pgxpool.Pool, runs int, settings ...string) string {
		conn, plans := saPlans(t, pool, settings...)
		q := db.New(conn)
		for i := range runs {
			tx, err := conn.Begin(ctx)
			require.NoError(t, err)
			p := db.JobLeaseParams{LeaseUs: time.Minute.Microseconds(), SkipIds: []int64{}, OnlyIds: []int64{},
				HeadQueues: []string{"big", "big"}, HeadKinds: []string{"alpha", "beta"},
				HeadLimits: []int32{40, 50}, HeadPeek: []bool{true, true},
				QueueNames: []string{"big"}, QueueMax: []int32{int32(60 + i)},
				KindNames: []string{"alpha", "beta"}, KindMax: []int32{math.MaxInt32, math.MaxInt32},
			}
			rows, err := q.WithTx(tx).JobLease(ctx, p)
			require.NoError(t, err)
			require.NotEmpty(t, rows)
			require.NoError(t, tx.Rollback(ctx))
		}
		all := plans()
		require.NotEmpty(t, all, "no plan reported")
		tp := saPlanPart(all[len(all)-1], "CTE take_peeked")
		require.NotEmpty(t, tp, "take_peeked in the plan:\n%s", all[len(all)-1])
		return tp
	}
	check := func(t *testing.T, tp string) {
		t.Helper()
		assert.Empty(t, saFullScans(tp), "take_peeked reads a whole index or the table:\n%s", tp)
	}
	const insertPending = `INSERT INTO tasuki_job (queue, kind, payload, priority, scheduled_at)
		SELECT 'big', CASE WHEN g % 2 = 0 THEN 'alpha' ELSE 'beta' END, '{}', g % 3, now() - interval '1 hour' FROM generate_series(1, 20000) g`
	fresh := func(t *testing.T) *pgxpool.Pool {
		pool := testdb.New(t)
		_, err := pool.Exec(ctx, `ALTER TABLE tasuki_job SET (autovacuum_enabled = false)`)
		require.NoError(t, err)
		return pool
	}
	t.Run("no statistics", func(t *testing.T) {
		pool := fresh(t)
		_, err := pool.Exec(ctx, insertPending)
		require.NoError(t, err)
		t.Run("first run", func(t *testing.T) { check(t, lease(t, pool, 1)) })
		t.Run("eighth run", func(t *testing.T) { check(t, lease(t, pool, 8)) })
		t.Run("generic plan", func(t *testing.T) { check(t, lease(t, pool, 1, `SET plan_cache_mode = force_generic_plan`)) })
	})
	t.Run("stale statistics", func(t *testing.T) {
		pool := fresh(t)
		_, err := pool.Exec(ctx, `INSERT INTO tasuki_job (queue, kind, payload, status, attempts, attempted_at, finished_at)
			SELECT 'big', 'alpha', '{}', 'completed', 1, now(), now() FROM generate_series(1, 20000)`)
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `ANALYZE tasuki_job`)
		require.NoError(t, err)
		_, err = pool.Exec(ctx, insertPending)
		require.NoError(t, err)
		check(t, lease(t, pool, 8))
	})
	t.Run("fresh statistics", func(t *testing.T) {
		pool := fresh(t)
		_, err := pool.Exec(ctx, insertPending)
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `ANALYZE tasuki_job`)
		require.NoError(t, err)
		check(t, lease(t, pool, 8))
	})
}

// saPlanPart returns the lines of plan from the one that contains node to
// the last one indented under it.
func saPlanPart(plan, node string) string {
	lines := strings.Split(plan, "\n")
	for i, l := range lines {
		if !strings.Contains(l, node) {
			continue
		}
		indent := len(l) - len(strings.TrimLeft(l, " "))
		j := i + 1
		for ; j < len(lines); j++ {
			if len(lines[j])-len(strings.TrimLeft(lines[j], " ")) <= indent {
				break
			}
		}
		return strings.Join(lines[i:j], "\n")
	}
	return ""
}

// saFullScans returns the scans of tasuki_job in plan with no index
// condition (a sequential scan, or a scan of a whole index), and those
// whose filter removed more than 1000 rows.
func saFullScans(plan string) []string {
	lines := strings.Split(plan, "\n")
	var out []string
	for i, l := range lines {
		t := strings.TrimLeft(strings.TrimPrefix(strings.TrimSpace(l), "->"), " ")
		if strings.HasPrefix(t, "Rows Removed by") {
			var n int
			if _, err := fmt.Sscanf(t[strings.Index(t, ":")+1:], "%d", &n); err == nil && n > 1000 {
				out = append(out, strings.TrimSpace(lines[i-1])+" / "+t)
			}
			continue
		}
		if !strings.Contains(t, " on tasuki_job") || strings.HasPrefix(t, "Bitmap Heap Scan") {
			continue
		}
		if !strings.HasPrefix(t, "Seq Scan") && !strings.Contains(t, "Index Scan") && !strings.Contains(t, "Index Only Scan") {
			continue
		}
		indent := len(l) - len(strings.TrimLeft(l, " "))
		cond := false
		for _, d := range lines[i+1:] {
			if len(d)-len(strings.TrimLeft(d, " ")) <= indent {
				break
			}
			if strings.Contains(d, "Index Cond:") {
				cond = true
			}
		}
		if !cond {
			out = append(out, t)
		}
	}
	return out
}

// saDrive runs leases of w over random inserts into queue "mix" (alpha and
// beta, priorities 0 to 2) and returns the first lease that leased a job
// while a runnable job of the same queue that goes before it stayed
// pending (none is held, and no kind's limit can cut). Inserts wake the
// worker as tasuki's inserts do (seeker.rewind), so its seeks find them.
// Every job must be leased exactly once by the end.
func saDrive(t *testing.T, pool *pgxpool.Pool, w *Worker, seed uint64) (bad []string) {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 99))
	leased := map[int64]bool{}
	total := 0
	for round := range 40 {
		n := rng.IntN(160)
		if round%4 == 1 {
			n = 100 + rng.IntN(100)
		}
		if round >= 30 {
			n = 0 // drain
		}
		for range n {
			kind := "alpha"
			if rng.IntN(10) == 0 {
				kind = "beta"
			}
			pr := rng.IntN(3)
			ago := rng.IntN(600)
			if round%4 == 1 {
				kind, pr = "beta", 0 // a burst of the small kind, in front
			}
			var id int64
			var at time.Time
			require.NoError(t, pool.QueryRow(ctx,
				`INSERT INTO tasuki_job (queue, kind, priority, payload, scheduled_at) VALUES ('mix', $1, $2, '{}', now() - $3 * interval '1 second') RETURNING id, scheduled_at`,
				kind, pr, ago).Scan(&id, &at))
			w.byPair[pair{"mix", kind}].seek.rewind(int16(pr), at)
			total++
		}
		rows, _ := paLease(t, w)
		for _, r := range rows {
			require.False(t, leased[r.ID], "round %d: job %d leased twice", round, r.ID)
			leased[r.ID] = true
		}
		if b := saOutOfOrder(t, pool, rows, []string{"alpha", "beta"}); len(b) > 0 && bad == nil {
			bad = append(bad, fmt.Sprintf("round %d: %d of %d out of order, e.g. %s", round, len(b), len(rows), b[0]))
		}
		for _, s := range w.sources {
			s.due = true
		}
	}
	var pending int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tasuki_job WHERE status = 'pending'`).Scan(&pending))
	assert.Zero(t, pending, "jobs left pending after the drain")
	assert.Len(t, leased, total, "jobs leased")
	return bad
}

// Random traffic on one queue of 100 slots with two kinds, through the
// worker's own plan, shrink, lease and settle; alpha has no limit of its
// own. Passes: the shrunk ranges keep priority order, and every job is
// leased once.
func TestShrinkAttackRandomTrafficKeepsOrder(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := paWorker(t, pool, map[string]int{"mix": 100}, 0)
	bad := saDrive(t, pool, w, 1)
	assert.Empty(t, bad)
}

// HELD (it failed as the first test above did). The same traffic, with alpha limited to 1000 at once, a limit
// that never binds in a queue of 100 slots. Alpha comes back "short" of
// its limit from every peeked lease, so every other lease reads it with
// locks beside beta's shrunk peeked range: jobs leased out of priority
// order (see TestShrinkAttackMixedLockedRangeIsNotBounded).
func TestShrinkAttackRandomTrafficWithANonBindingKindLimit(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := paWorker(t, pool, map[string]int{"mix": 100}, 1000)
	bad := saDrive(t, pool, w, 1)
	assert.Empty(t, bad)
}

// HELD (it failed as the first test above did). TestShrunkRangesLeaseTheFirstOfWhatFullRangesLease with the peek
// flags the worker really sends: per source, and not for a kind that came
// back short (kindState.short), so some ranges of a queue are peeked and
// shrunk while others lock. Of each queue, the lease must take the first
// of what the lease with full ranges and no peek takes. It does not when
// a locked range shares a queue with a shrunk one: peek_bounds cuts only
// the peeked rows.
func TestShrinkAttackMixedPeekLeasesTheFirstOfWhatFullRangesLease(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 11))
	queues := []string{"q1", "q2"}
	kinds := []string{"k1", "k2", "k3"}
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	type job struct {
		queue, kind string
		priority    int16
		at          time.Time
	}
	var failures []string
	rounds := 0
	for round := range 150 {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback(ctx) })
		jobs := map[int64]job{}
		for range 1 + rng.IntN(120) {
			j := job{queues[rng.IntN(2)], kinds[rng.IntN(3)], int16(rng.IntN(3)), base.Add(time.Duration(rng.IntN(60)) * time.Second)}
			var id int64
			require.NoError(t, tx.QueryRow(ctx, `INSERT INTO tasuki_job (queue, kind, payload, priority, scheduled_at) VALUES ($1, $2, '{}', $3, $4) RETURNING id`,
				j.queue, j.kind, j.priority, j.at).Scan(&id))
			jobs[id] = j
		}
		p := db.JobLeaseParams{LeaseUs: time.Minute.Microseconds(), SkipIds: []int64{}, OnlyIds: []int64{}}
		qf := map[string]int{}
		for _, q := range queues {
			qf[q] = 10 + rng.IntN(40)
		}
		kf := map[string]int{}
		peekKind := map[string]bool{}
		for _, k := range kinds {
			kf[k] = math.MaxInt32
			if rng.IntN(3) == 0 {
				kf[k] = 200 + rng.IntN(1000) // a limit that does not bind
			}
			// A kind with a limit may come back short and be locked.
			peekKind[k] = kf[k] == math.MaxInt32 || rng.IntN(2) == 0
		}
		for _, q := range queues {
			for _, k := range kinds {
				lim := int32(min(qf[q], kf[k]))
				p.HeadQueues = append(p.HeadQueues, q)
				p.HeadKinds = append(p.HeadKinds, k)
				p.HeadLimits = append(p.HeadLimits, lim)
			}
			p.QueueNames, p.QueueMax = append(p.QueueNames, q), append(p.QueueMax, int32(qf[q]))
		}
		for _, k := range kinds {
			p.KindNames, p.KindMax = append(p.KindNames, k), append(p.KindMax, int32(kf[k]))
		}
		lease := func(q db.JobLeaseParams) []int64 {
			sp, err := tx.Begin(ctx)
			require.NoError(t, err)
			defer sp.Rollback(ctx) //nolint:errcheck // only compared
			rows, err := db.New(pool).WithTx(sp).JobLease(ctx, q)
			require.NoError(t, err)
			return paIDs(rows)
		}
		full := p
		full.HeadPeek = make([]bool, len(p.HeadQueues))
		want := lease(full)
		s := p
		s.HeadLimits = append([]int32(nil), p.HeadLimits...)
		s.HeadPeek = make([]bool, len(p.HeadQueues))
		for i := range s.HeadQueues {
			s.HeadPeek[i] = peekKind[s.HeadKinds[i]]
			if s.HeadPeek[i] && s.HeadLimits[i] > 1 && rng.IntN(2) == 0 {
				s.HeadLimits[i] = int32(1 + rng.IntN(int(s.HeadLimits[i])-1))
			}
		}
		got := lease(s)
		rounds++
		before := func(a, b int64) int {
			ja, jb := jobs[a], jobs[b]
			if c := int(ja.priority) - int(jb.priority); c != 0 {
				return c
			}
			if c := ja.at.Compare(jb.at); c != 0 {
				return c
			}
			return int(a - b)
		}
		for _, q := range queues {
			var fq, gq []int64
			for _, id := range want {
				if jobs[id].queue == q {
					fq = append(fq, id)
				}
			}
			for _, id := range got {
				if jobs[id].queue == q {
					gq = append(gq, id)
				}
			}
			slices.SortFunc(fq, before)
			slices.SortFunc(gq, before)
			if len(gq) > len(fq) || !slices.Equal(fq[:len(gq)], gq) {
				failures = append(failures, fmt.Sprintf("round %d, queue %s: leased %d, not the first of the %d full ranges lease", round, q, len(gq), len(fq)))
			}
		}
		require.NoError(t, tx.Rollback(ctx))
	}
	t.Logf("%d rounds, %d failures", rounds, len(failures))
	assert.Zero(t, len(failures), "e.g. %s", saFirst(failures))
}
