package worker

import (
	"cmp"
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
)

// A peeked range that asks for less than its queue and kind leave (the
// worker's shrunk ranges, leasePlan.shrink) leases, of each queue, the
// first jobs of what the lease without peeking and with every range at
// its full limit leases: the same jobs, or the first of them in priority,
// scheduled time and id order, never a job that goes after one left
// behind. Random jobs over 2 queues and 3 kinds with priorities, random
// free slots and kind limits, ranges read from their heads or as seeks,
// and random shrunk limits for the ranges of queues where no kind's own
// limit can cut (as the worker shrinks them). Each lease runs in a
// savepoint rolled back, so both see the same rows.
func TestShrunkRangesLeaseTheFirstOfWhatFullRangesLease(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(41, 7))
	queues := []string{"q1", "q2"}
	kinds := []string{"k1", "k2", "k3"}
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var same, fewer, shrunkRounds int
	defer func() {
		assert.Greater(t, shrunkRounds, 50, "rounds with shrunk ranges")
		assert.Greater(t, fewer, 10, "rounds where a shrunk range stopped the queue early")
		assert.Greater(t, same, 10, "rounds where the shrunk ranges leased all the full ones did")
	}()
	type job struct {
		queue, kind string
		priority    int16
		at          time.Time
	}
	for round := range 200 {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		// Rolled back when a check fails too, so that the test reports
		// rather than waits on the cleanup.
		t.Cleanup(func() { _ = tx.Rollback(ctx) })
		jobs := map[int64]job{}
		n := 1 + rng.IntN(80)
		for range n {
			j := job{queues[rng.IntN(2)], kinds[rng.IntN(3)], int16(rng.IntN(3)), base.Add(time.Duration(rng.IntN(60)) * time.Second)}
			var id int64
			require.NoError(t, tx.QueryRow(ctx, `INSERT INTO tasuki_job (queue, kind, payload, priority, scheduled_at) VALUES ($1, $2, '{}', $3, $4) RETURNING id`,
				j.queue, j.kind, j.priority, j.at).Scan(&id))
			jobs[id] = j
		}
		before := func(a, b int64) int {
			ja, jb := jobs[a], jobs[b]
			return cmp.Or(cmp.Compare(ja.priority, jb.priority), ja.at.Compare(jb.at), cmp.Compare(a, b))
		}
		p := db.JobLeaseParams{LeaseUs: time.Minute.Microseconds(), SkipIds: []int64{}, OnlyIds: []int64{}}
		qf, kf := map[string]int{}, map[string]int{}
		for _, q := range queues {
			qf[q] = 2 + rng.IntN(30)
		}
		for _, k := range kinds {
			kf[k] = 1 << 30 // no limit of its own
			if rng.IntN(4) == 0 {
				kf[k] = 1 + rng.IntN(10)
			}
		}
		type rng2 struct {
			queue, kind string
			head        bool
			i           int // index in HeadLimits or SeekLimits
		}
		var ranges []rng2
		asks := map[string]int{}
		for _, q := range queues {
			for _, k := range kinds {
				if rng.IntN(4) == 0 {
					continue
				}
				lim := int32(min(qf[q], kf[k]))
				if rng.IntN(2) == 0 {
					ranges = append(ranges, rng2{q, k, true, len(p.HeadLimits)})
					p.HeadQueues = append(p.HeadQueues, q)
					p.HeadKinds = append(p.HeadKinds, k)
					p.HeadLimits = append(p.HeadLimits, lim)
					asks[k] += int(lim)
					continue
				}
				for pr := range 3 {
					if rng.IntN(3) == 0 {
						continue
					}
					after := headOfPriority
					if rng.IntN(3) == 0 {
						after = base.Add(time.Duration(rng.IntN(60)) * time.Second)
					}
					ranges = append(ranges, rng2{q, k, false, len(p.SeekLimits)})
					p.SeekQueues = append(p.SeekQueues, q)
					p.SeekKinds = append(p.SeekKinds, k)
					p.SeekPriorities = append(p.SeekPriorities, int16(pr))
					p.SeekAfter = append(p.SeekAfter, after)
					p.SeekLimits = append(p.SeekLimits, lim)
					asks[k] += int(lim)
				}
			}
		}
		usedQ, usedK := map[string]bool{}, map[string]bool{}
		for _, r := range ranges {
			usedQ[r.queue], usedK[r.kind] = true, true
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
		// As the worker: no range of a queue where a kind's limit can cut
		// is shrunk.
		bound := map[string]bool{}
		for _, r := range ranges {
			if asks[r.kind] > kf[r.kind] {
				bound[r.queue] = true
			}
		}
		lease := func(q db.JobLeaseParams, peek bool) []int64 {
			sp, err := tx.Begin(ctx)
			require.NoError(t, err)
			defer sp.Rollback(ctx) //nolint:errcheck // only compared
			q.HeadPeek, q.SeekPeek = nil, nil
			for range q.HeadQueues {
				q.HeadPeek = append(q.HeadPeek, peek)
			}
			for range q.SeekQueues {
				q.SeekPeek = append(q.SeekPeek, peek)
			}
			rows, err := db.New(pool).WithTx(sp).JobLease(ctx, q)
			require.NoError(t, err)
			return paIDs(rows)
		}
		full := lease(p, false)
		s := p
		s.HeadLimits, s.SeekLimits = slices.Clone(p.HeadLimits), slices.Clone(p.SeekLimits)
		shrunk := false
		for _, r := range ranges {
			lims := s.SeekLimits
			if r.head {
				lims = s.HeadLimits
			}
			if !bound[r.queue] && lims[r.i] > 1 && rng.IntN(3) > 0 {
				lims[r.i] = int32(1 + rng.IntN(int(lims[r.i])-1))
				shrunk = true
			}
		}
		got := lease(s, true)
		if shrunk {
			shrunkRounds++
		}
		require.Subset(t, full, got, "round %d: shrunk ranges leased a job full ones did not", round)
		for _, q := range queues {
			var fq, gq []int64
			for _, id := range full {
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
			require.Equal(t, fq[:len(gq)], gq, "round %d, queue %s: not the first of what full ranges leased", round, q)
			if len(fq) > 0 {
				require.NotEmpty(t, gq, "round %d, queue %s: shrunk ranges leased nothing", round, q)
			}
		}
		switch {
		case len(got) == len(full) && shrunk:
			same++
		case len(got) < len(full):
			fewer++
		}
		require.NoError(t, tx.Rollback(ctx))
	}
}

// The worker shrinks the ranges of a saturated queue to about each kind's
// share of its last lease, and a kind whose share was small still has its
// jobs leased first when they go first: queue "mix" (100 slots) had 90
// beta jobs to 10 alpha ones; then 150 alpha jobs of priority 0 and 50
// beta jobs of priority 1 arrive. No beta job is leased while an alpha
// one is left, though alpha's first range is shrunk below what it has.
func TestShrunkRangeOfASmallShareKeepsPriorityOrder(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := paWorker(t, pool, map[string]int{"mix": 100}, 0)
	insertMix(t, pool)
	rows, _ := paLease(t, w)
	require.Len(t, rows, 100)
	rows, _ = paLease(t, w) // nothing left; shares from the first lease stay
	require.Empty(t, rows)
	for range 150 {
		paInsert(t, pool, "mix", "alpha", 0, "now() - interval '1 minute'")
	}
	for range 50 {
		paInsert(t, pool, "mix", "beta", 1, "now() - interval '1 minute'")
	}
	// Saturated, as after a lease that filled the queue.
	w.queues[0].saturated = true
	alphaLeft, shrunk := 150, false
	for lease := 0; alphaLeft > 0 || lease == 0; lease++ {
		require.Less(t, lease, 20, "leases")
		pl := w.plan(false)
		for i, s := range pl.sources {
			if s.kind.name == "alpha" && pl.peeked[i] && shrunkLimit(pl, i) < int32(pl.limits[i]) {
				shrunk = true
			}
		}
		jobs, _, err := w.lease(context.Background(), pl)
		require.NoError(t, err)
		for _, j := range jobs {
			if j.row.Kind == "alpha" {
				alphaLeft--
			} else {
				require.Zero(t, alphaLeft, "lease %d: a beta job of priority %d before %d alpha jobs of priority 0", lease, j.row.Priority, alphaLeft)
			}
		}
		for _, s := range w.sources {
			s.due = true
		}
	}
	assert.True(t, shrunk, "alpha's range was shrunk in some lease")
}

// A queue where a kind's own limit can cut keeps full ranges: alpha may
// run 5 at once, fewer than its ranges would ask for.
func TestQueueWithABindingKindLimitIsNotShrunk(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	w := paWorker(t, pool, map[string]int{"mix": 100}, 5)
	insertMix(t, pool)
	paLease(t, w)
	w.queues[0].saturated = true
	for _, s := range w.sources {
		s.due = true
		require.Positive(t, s.share, "%s has a share after a lease", s.kind.name)
	}
	pl := w.plan(false)
	for i := range pl.sources {
		require.True(t, pl.peeked[i])
		require.Equal(t, int32(pl.limits[i]), shrunkLimit(pl, i), "%s's range is not shrunk", pl.sources[i].kind.name)
	}
}

// shrunkLimit is what the first range of source i of pl asks for.
func shrunkLimit(pl *leasePlan, i int) int32 {
	if pl.heads[i] {
		return pl.p.HeadLimits[pl.first[i]]
	}
	return pl.p.SeekLimits[pl.first[i]]
}

// insertMix adds 90 beta jobs and 10 alpha jobs to queue "mix".
func insertMix(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	for i := range 100 {
		kind := "beta"
		if i%10 == 0 {
			kind = "alpha"
		}
		paInsert(t, pool, "mix", kind, 0, "now() - interval '1 hour'")
	}
}
