package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
	"github.com/tasukiq/tasuki/internal/setaside"
)

// maxRescue is the most expired jobs one lease statement rescues, and the
// most rescued one statement each in a round after a batch was refused.
const maxRescue = 1000

// leased is a job this worker leased, with when the statement that leased
// it was sent (its lease lapses no earlier than a lease duration after
// that) and the source it came from.
type leased struct {
	row    *db.TasukiJob
	sentAt time.Time
	src    *source
}

// headReadShare: reads from the heads of idle sources are made at each
// poll only while the last one took at most 1/headReadShare of
// PollInterval.
const headReadShare = 20

// minHeadReadBudget is the least a read from the heads may take and still
// count as cheap, whatever the poll interval: a read of many sources takes
// a few milliseconds on an idle database.
const minHeadReadBudget = 20 * time.Millisecond

// rescueInlineBudget is how long a lease statement that also rescued may
// take before the rescue moves to the sweeper; rescueCheap, how long the
// sweeper's rescue may take before it moves back.
const (
	rescueInlineBudget = 50 * time.Millisecond
	rescueCheap        = 10 * time.Millisecond
)

// rescueEvery is how often expired leases are rescued: every half lease
// duration, at most every 5 s.
func (w *Worker) rescueEvery() time.Duration { return min(w.cfg.LeaseDuration/2, 5*time.Second) }

// leasePlan is one lease statement to send, and what it asks of each
// source, queue and kind.
type leasePlan struct {
	p       db.JobLeaseParams
	sources []*source
	limits  []int // per source
	heads   []bool
	ranges  []int  // per source: how many ranges of the statement read it
	peeked  []bool // per source: read without locks first (JobLease's peek)
	first   []int  // per source: its first range in HeadLimits or SeekLimits
	// binding: kinds whose own limit can cut this lease (their ranges ask
	// for more than it leaves).
	binding map[*kindState]bool
	queues  map[*queueState]int
	kinds   map[*kindState]int
	rescue  bool
	// fullRescue: the rescue reads every lease, not only the window since
	// the last rescue.
	fullRescue bool
	// blocked: a due source was not read, as its queue or kind had no
	// free slot.
	blocked bool
}

func (pl *leasePlan) empty() bool { return len(pl.sources) == 0 && !pl.rescue }

// plan chooses the sources to read now: the due ones whose queue and kind
// have free slots, each at most what both leave.
func (w *Worker) plan(rescue bool) *leasePlan {
	pl := &leasePlan{
		p: db.JobLeaseParams{
			LeaseUs: w.cfg.LeaseDuration.Microseconds(),
			SkipIds: w.refused.Skip(time.Now()),
			OnlyIds: []int64{},
		},
		queues: make(map[*queueState]int),
		kinds:  make(map[*kindState]int),
	}
	for _, s := range w.sources {
		if !s.due {
			continue
		}
		// Read once per queue and kind: a range asks for less than both
		// leave only when shrunk (JobLease's shrunk), and handlers that
		// finish meanwhile must not make an earlier range look so.
		qf, ok := pl.queues[s.queue]
		if !ok {
			qf = s.queue.concurrency - int(s.queue.active.Load())
		}
		kf, ok := pl.kinds[s.kind]
		if !ok {
			kf = s.kind.free()
		}
		if qf <= 0 || kf <= 0 {
			pl.blocked = true
			continue
		}
		lim := min(qf, kf)
		pl.sources = append(pl.sources, s)
		pl.limits = append(pl.limits, lim)
		heads, seeks := len(pl.p.HeadQueues), len(pl.p.SeekQueues)
		head := s.seek.from(&pl.p, s.queue.name, s.kind.name, int32(lim))
		pl.heads = append(pl.heads, head)
		pl.ranges = append(pl.ranges, len(pl.p.HeadQueues)+len(pl.p.SeekQueues)-heads-seeks)
		if head {
			pl.first = append(pl.first, heads)
		} else {
			pl.first = append(pl.first, seeks)
		}
		pl.queues[s.queue] = qf
		pl.kinds[s.kind] = kf
	}
	for q, n := range pl.queues {
		pl.p.QueueNames = append(pl.p.QueueNames, q.name)
		pl.p.QueueMax = append(pl.p.QueueMax, int32(n))
	}
	for k, n := range pl.kinds {
		pl.p.KindNames = append(pl.p.KindNames, k.name)
		pl.p.KindMax = append(pl.p.KindMax, int32(min(n, math.MaxInt32)))
	}
	// The ranges of the statement per queue and per kind: a range that
	// shares either with another is read without locks first (JobLease's
	// peek) while its queue is saturated, unless its kind came back short
	// of its limit from such a read.
	perQueue := make(map[*queueState]int, len(pl.queues))
	perKind := make(map[*kindState]int, len(pl.kinds))
	kindAsks := make(map[*kindState]int, len(pl.kinds))
	for i, s := range pl.sources {
		perQueue[s.queue] += pl.ranges[i]
		perKind[s.kind] += pl.ranges[i]
		kindAsks[s.kind] += pl.ranges[i] * pl.limits[i]
	}
	// A queue whose ranges may be cut by a kind's own limit (its ranges
	// ask for more than it leaves) keeps its ranges' full limits: see
	// JobLease's peek_bounds.
	// So does a queue with a range read with locks: the earliest last row
	// of a shrunk range bounds only what was read without locks.
	pl.binding = make(map[*kindState]bool, len(pl.kinds))
	full := make(map[*queueState]bool, len(pl.queues))
	for i, s := range pl.sources {
		shared := perQueue[s.queue] > 1 || perKind[s.kind] > 1
		peek := shared && s.queue.saturated && !s.kind.short
		pl.peeked = append(pl.peeked, peek)
		for range pl.ranges[i] {
			if pl.heads[i] {
				pl.p.HeadPeek = append(pl.p.HeadPeek, peek)
			} else {
				pl.p.SeekPeek = append(pl.p.SeekPeek, peek)
			}
		}
		if kindAsks[s.kind] > pl.kinds[s.kind] {
			pl.binding[s.kind] = true
			full[s.queue] = true
		}
		if !peek {
			full[s.queue] = true
		}
	}
	for i, s := range pl.sources {
		if perQueue[s.queue] > 1 && !full[s.queue] {
			pl.shrink(i, s.share)
		}
	}
	if rescue {
		pl.rescue = true
		// A full pass rides on the lease only while it is cheap; the
		// sweeper runs it otherwise, and this one reads the window.
		pl.fullRescue = w.fullRescueDue(time.Now()) && w.fullRidesLease()
		w.withRescue(&pl.p, pl.fullRescue)
	}
	return pl
}

// shrink has the ranges of source i, read without locks, ask for about
// the source's share of its queue's free slots rather than all of them:
// with several kinds in a queue, each asking for all would read a batch
// per kind for every batch leased. Half as much again and a few more, so
// that a share that grows a little between leases still fits; when it
// grows more, JobLease leases only up to where the range stopped, and the
// next lease goes on from there with the new share.
func (pl *leasePlan) shrink(i int, share float64) {
	if share <= 0 {
		return // not measured yet
	}
	lim := min(pl.limits[i], int(math.Ceil(share*float64(pl.limits[i])*shareSlack))+shareFloor)
	lims := pl.p.SeekLimits
	if pl.heads[i] {
		lims = pl.p.HeadLimits
	}
	for r := range pl.ranges[i] {
		lims[pl.first[i]+r] = int32(lim)
	}
}

// A shrunk range asks for shareSlack times its share of the free slots,
// and shareFloor more.
const (
	shareSlack = 1.5
	shareFloor = 32
)

// rescueMargin is how far before where its last rescue got a rescue reads:
// for a lease renewed by a transaction that committed that much after it
// began.
const rescueMargin = time.Second

// rescueFullEvery is how often a rescue reads every running job's lease
// rather than only those expired since the last rescue: a backstop for a
// lease renewed by a transaction that committed later still, or locked by
// another process's rescue that rolled back.
const rescueFullEvery = 10 * time.Minute

// fullRescueDue reports whether a rescue must read every lease: the
// worker's first, and one rescueFullEvery after the last. (Jobs the
// database refused to rescue are tried again by id when their wait is
// over: see rescue.)
func (w *Worker) fullRescueDue(now time.Time) bool {
	last := w.lastFullRescue.Load()
	return last == 0 || now.UnixNano()-last >= int64(rescueFullEvery)
}

// fullRidesLease reports whether a due full pass rides on the fetch loop's
// next lease rather than running in the sweeper.
func (w *Worker) fullRidesLease() bool {
	return w.rescueInline.Load() && w.fullRescueInline.Load()
}

// rescueLeavesLease moves the rescue that rode on a lease and was slow or
// failed to the sweeper: the full passes only, when it was a full pass.
func (w *Worker) rescueLeavesLease(full bool) {
	if full {
		w.fullRescueInline.Store(false)
	} else {
		w.rescueInline.Store(false)
	}
}

// withRescue has p rescue expired leases of the worker's queues (all of
// them when full, else those expired since its last rescue) and record
// this process.
func (w *Worker) withRescue(p *db.JobLeaseParams, full bool) {
	p.Rescue = true
	p.RescueFull = full
	p.RescueMarginUs = rescueMargin.Microseconds()
	p.RescueMax = int32(w.rescueMax.Load())
	p.RescueQueues = w.process.queues
	p.Beat = true
	p.ProcessID = w.process.id
	p.ProcessHost = w.process.host
	p.ProcessPid = w.process.pid
	p.ProcessQueues = w.process.queues
	p.ProcessKinds = w.process.kinds
	p.ProcessTtlUs = w.processTTL().Microseconds()
}

// lease runs pl: it leases jobs from where each source's last lease
// stopped (seek.go), and marks which sources are due again. Jobs the
// database refused to change before are left out for a while
// (w.refused). When it refuses the batch for a row's data (an
// application's trigger or constraint), the runnable jobs are leased one
// statement each, and the ones it refuses are set aside, so that such a
// row never stops a queue. It also returns how many jobs it set aside:
// the caller leases again at once then, as the jobs behind them wait.
// Used by the fetch loop only.
func (w *Worker) lease(ctx context.Context, pl *leasePlan) (jobs []leased, setAside int, err error) {
	w.refused.ForgetStale(time.Now())
	sentAt := time.Now()
	rows, err := w.queryLease(ctx, pl.p)
	took := time.Since(sentAt)
	if err != nil && pl.rescue && (dberr.RowError(err) || took > rescueInlineBudget) {
		// The rescue may be what failed or was slow: the sweeper takes it
		// over, with its own handling of rows the database refuses.
		w.rescueLeavesLease(pl.fullRescue)
		pl.rescue, pl.fullRescue, pl.p.Rescue, pl.p.Beat = false, false, false, false
		sentAt = time.Now()
		rows, err = w.queryLease(ctx, pl.p)
		took = time.Since(sentAt)
	}
	if err != nil && dberr.RowError(err) {
		return w.leaseEach(ctx, pl)
	}
	if err != nil {
		return nil, 0, err
	}
	if pl.rescue {
		if pl.fullRescue {
			w.lastFullRescue.Store(sentAt.UnixNano())
		}
		if took > rescueInlineBudget {
			w.rescueLeavesLease(pl.fullRescue)
		}
	}
	if slices.Contains(pl.heads, true) {
		w.headReadCost.Store(int64(took))
	}
	jobs = w.sort(rows, sentAt)
	w.settle(pl, jobs)
	return jobs, 0, nil
}

// sort pairs leased rows with their sources. A row of a pair the worker
// does not read cannot come back; one would be given back at once.
func (w *Worker) sort(rows []*db.TasukiJob, sentAt time.Time) []leased {
	out := make([]leased, 0, len(rows))
	for _, r := range rows {
		out = append(out, leased{row: r, sentAt: sentAt, src: w.byPair[pair{r.Queue, r.Kind}]})
	}
	return out
}

// settle moves each read source's position past what it leased, and
// marks it due again when it may have more: it filled what it asked, or
// its queue's or kind's limit cut it.
func (w *Worker) settle(pl *leasePlan, jobs []leased) {
	bySource := make(map[*source][]*db.TasukiJob, len(pl.sources))
	perQueue := make(map[*queueState]int, len(pl.queues))
	perKind := make(map[*kindState]int, len(pl.kinds))
	for _, j := range jobs {
		bySource[j.src] = append(bySource[j.src], j.row)
		perQueue[j.src.queue]++
		perKind[j.src.kind]++
	}
	// A kind's limit and a queue's are applied one after the other, so a
	// row one gave a slot to can be dropped by the other while a row of
	// another source could have used it. Whenever a limit cut this lease,
	// every source read is read again: the limits that cut it now have
	// fewer free slots, so the next lease chooses differently, and the
	// rounds end once nothing is cut.
	anyCut := false
	for q, n := range perQueue {
		anyCut = anyCut || n >= pl.queues[q]
	}
	for k, n := range perKind {
		anyCut = anyCut || n >= pl.kinds[k]
	}
	// A peeked range locks only the rows the read without locks chose.
	// When another transaction held some of them, their slots stay free
	// this time: the queue, or the kind at its limit, comes back short,
	// and its next lease locks without peeking, skipping the held rows.
	for q, n := range pl.queues {
		q.saturated = perQueue[q] >= n
	}
	for k := range pl.kinds {
		k.short = false
	}
	for i, s := range pl.sources {
		// A kind whose limit cannot cut is left to its queue's count.
		if pl.peeked[i] && pl.binding[s.kind] && perKind[s.kind] < pl.kinds[s.kind] {
			s.kind.short = true
		}
	}
	// Each source's share of its queue in this lease, for the next
	// leases' shrunk ranges (plan): smoothed so that a source that got
	// nothing still asks for a little. A lease that found nothing in the
	// queue says nothing of shares.
	sourcesPerQueue := make(map[*queueState]int, len(pl.queues))
	for _, s := range pl.sources {
		sourcesPerQueue[s.queue]++
	}
	for _, s := range pl.sources {
		if n := sourcesPerQueue[s.queue]; n > 1 && perQueue[s.queue] > 0 {
			s.share = float64(len(bySource[s])+1) / float64(perQueue[s.queue]+n)
		}
	}
	for i, s := range pl.sources {
		got := bySource[s]
		cut := perQueue[s.queue] >= pl.queues[s.queue] || perKind[s.kind] >= pl.kinds[s.kind]
		cut = cut || pl.peeked[i]
		s.due = len(got) >= pl.limits[i] || cut || anyCut
		if len(got) > 0 {
			s.leased = true
		}
		// Read from the head, fewer than asked and no limit cut it: every
		// runnable job was leased, here or by another worker.
		s.seek.leased(got, pl.heads[i] && len(got) < pl.limits[i] && !cut)
	}
}

// rescue returns the expired jobs of the worker's queues to pending (or
// fails those out of attempts), and records this process, by a lease of
// no jobs. When the database refuses the batch for a row's data, it
// rescues them one statement each and sets aside the ones it refuses.
// When the rescue fails otherwise (a timeout, with an expensive trigger on
// many expired jobs), later rescues take fewer jobs at a time. Used by the
// sweeper, while the rescue does not ride on the fetch loop's leases.
func (w *Worker) rescue(ctx context.Context) error {
	var err error
	if !w.rescueInline.Load() {
		err = w.rescueOnce(ctx, false)
	}
	// Jobs the database refused to rescue, whose wait is over: a windowed
	// rescue no longer reaches them.
	if due := w.unrescued.Due(time.Now()); len(due) > 0 {
		w.rescueIDs(ctx, due)
	}
	if w.fullRescueDue(time.Now()) && !w.fullRidesLease() {
		// A full pass that fails (it can outlast its timeout while an old
		// snapshot lasts) is tried again a full period later, and holds up
		// neither the windowed rescues nor this task's next round.
		start := time.Now()
		if fullErr := w.rescueOnce(ctx, true); fullErr != nil && ctx.Err() == nil {
			w.lastFullRescue.Store(start.UnixNano())
			w.log.Warn("tasuki: rescuing expired jobs (full pass) failed; retrying in "+rescueFullEvery.String(),
				slog.Any("error", dberr.Wrap("rescue", fullErr)))
		}
	}
	return err
}

// rescueOnce runs one rescue statement for the sweeper: of every lease
// when full, else of the window since the last rescue.
func (w *Worker) rescueOnce(ctx context.Context, full bool) error {
	w.unrescued.ForgetStale(time.Now())
	p := db.JobLeaseParams{LeaseUs: 1, SkipIds: w.unrescued.Skip(time.Now()), OnlyIds: []int64{}}
	w.withRescue(&p, full)
	start := time.Now()
	_, err := w.queryLease(ctx, p)
	switch {
	case err == nil:
		took := time.Since(start)
		w.rescueMax.Store(min(2*w.rescueMax.Load(), maxRescue))
		if full {
			w.lastFullRescue.Store(start.UnixNano())
			if took < rescueCheap {
				w.fullRescueInline.Store(true)
			}
		} else if took < rescueCheap {
			w.rescueInline.Store(true)
		}
	case dberr.RowError(err):
		w.rescueEach(ctx)
		if full {
			w.lastFullRescue.Store(start.UnixNano())
		}
		return nil
	case errors.Is(err, context.DeadlineExceeded) || dberr.Canceled(err):
		if ctx.Err() == nil {
			w.rescueMax.Store(max(w.rescueMax.Load()/2, 1))
			return fmt.Errorf("%w (next rescue takes at most %d jobs)", err, w.rescueMax.Load())
		}
	}
	return err
}

func (w *Worker) queryLease(ctx context.Context, p db.JobLeaseParams) ([]*db.TasukiJob, error) {
	stmtCtx, cancel := context.WithTimeout(ctx, w.cfg.LeaseDuration/2)
	defer cancel()
	// A statement that names one job is left to PostgreSQL's choice of
	// plan: the generic plan reads the job's whole range for it.
	if len(p.OnlyIds) > 0 && w.plainQueries != nil {
		return w.plainQueries.JobLease(stmtCtx, p)
	}
	return w.queries.JobLease(stmtCtx, p)
}

// leaseEach leases the runnable jobs of pl's sources one statement each,
// after the database refused a batch lease. What it leased is returned
// even when a later statement fails: those jobs are this worker's now.
func (w *Worker) leaseEach(ctx context.Context, pl *leasePlan) (out []leased, setAside int, err error) {
	q := db.JobRunnableIDsParams{SkipIds: pl.p.SkipIds, Max: 0}
	for i, s := range pl.sources {
		q.Queues = append(q.Queues, s.queue.name)
		q.Kinds = append(q.Kinds, s.kind.name)
		q.Max = max(q.Max, int32(pl.limits[i]))
	}
	if len(q.Queues) == 0 {
		return nil, 0, nil
	}
	stmtCtx, cancel := context.WithTimeout(ctx, w.cfg.LeaseDuration/2)
	ids, err := w.queries.JobRunnableIDs(stmtCtx, q)
	cancel()
	if err != nil {
		return nil, 0, err
	}
	perQueue := make(map[*queueState]int)
	perKind := make(map[*kindState]int)
	for _, id := range ids {
		s := w.byPair[pair{id.Queue, id.Kind}]
		if s == nil || perQueue[s.queue] >= pl.queues[s.queue] || perKind[s.kind] >= pl.kinds[s.kind] {
			continue
		}
		// One job, named, read from the head of its source.
		p := db.JobLeaseParams{
			LeaseUs: pl.p.LeaseUs, SkipIds: []int64{}, OnlyIds: []int64{id.ID},
			HeadQueues: []string{s.queue.name}, HeadKinds: []string{s.kind.name}, HeadLimits: []int32{1},
			QueueNames: []string{s.queue.name}, QueueMax: []int32{1},
			KindNames: []string{s.kind.name}, KindMax: []int32{1},
		}
		sentAt := time.Now()
		rows, err := w.queryLease(ctx, p)
		switch {
		case err == nil:
			w.refused.Accepted(id.ID)
			for _, j := range w.sort(rows, sentAt) {
				out = append(out, j)
				perQueue[s.queue]++
				perKind[s.kind]++
			}
		case dberr.RowError(err):
			w.setAside(w.refused, id.ID, "lease", err)
			setAside++
		default:
			if len(out) > 0 {
				w.log.Warn("tasuki: leasing jobs one by one failed; retrying", slog.Any("error", dberr.Wrap("lease", err)))
				return out, setAside, nil
			}
			return nil, setAside, err
		}
	}
	return out, setAside, nil
}

// rescueEach rescues the queue's expired jobs one statement each, after the
// database refused the rescue of a batch.
func (w *Worker) rescueEach(ctx context.Context) {
	stmtCtx, cancel := context.WithTimeout(ctx, w.cfg.LeaseDuration/2)
	expired, err := w.queries.JobExpiredIDs(stmtCtx, db.JobExpiredIDsParams{Queues: w.process.queues, SkipIds: w.unrescued.Skip(time.Now()), Max: maxRescue})
	cancel()
	if err != nil {
		w.log.Warn("tasuki: rescuing expired jobs failed; retrying at the next rescue", slog.Any("error", dberr.Wrap("rescue", err)))
		return
	}
	w.rescueIDs(ctx, expired)
}

// rescueIDs rescues the given jobs, if their lease expired, one statement
// each, and sets aside the ones the database refuses.
func (w *Worker) rescueIDs(ctx context.Context, ids []int64) {
	for _, id := range ids {
		// A lease of no jobs that rescues only this one, wherever its
		// expiry lies (a set-aside job's is behind the window).
		_, err := w.queryLease(ctx, db.JobLeaseParams{
			LeaseUs: 1, Rescue: true, RescueFull: true, RescueMax: 1, RescueQueues: w.process.queues,
			SkipIds: []int64{}, OnlyIds: []int64{id},
		})
		switch {
		case err == nil:
			w.unrescued.Accepted(id)
		case dberr.RowError(err):
			w.setAside(w.unrescued, id, "rescue", err)
		default:
			w.log.Warn("tasuki: rescuing expired jobs failed; retrying at the next rescue", slog.Any("error", dberr.Wrap("rescue", err)))
			return
		}
	}
}

// setAside records that the database refused to lease or rescue a job,
// and logs it once for this try.
func (w *Worker) setAside(set *setaside.Set, id int64, op string, err error) {
	wait := set.Refuse(id, time.Now())
	w.log.Error("tasuki: the database refused to "+op+" a job; the queue's other jobs go on, and this one is tried again later",
		slog.Int64("job_id", id), slog.Any("error", dberr.Wrap(op, err)), slog.Duration("retry_in", wait))
}
