package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
)

// Leasing from where the last lease stopped.
//
// While a transaction holds an old snapshot (a backup, a long report, a
// session left idle in transaction), PostgreSQL can neither remove nor
// mark dead the index entries of the jobs leased since it began: each one
// stays at the head of its queue in the pending index, and a lease that
// reads the queue from its head visits every one of them before it finds a
// runnable job. A lease then costs more with every job worked, and a busy
// queue falls behind within minutes.
//
// So the fetch loop remembers, for each priority, the last job it leased
// (its scheduled time and id) and leases from just after it. Jobs can
// still become runnable behind that point: a transaction that inserted
// them committed after the worker passed their scheduled time, a retry
// with no delay, a job inserted by the application's own SQL. They are
// found three ways:
//   - tasuki's inserts wake the workers with the earliest scheduled time per
//     priority of the jobs they announce, and the worker moves back there;
//   - each lease reads from seekMargin before the remembered point, which
//     covers the commits that lag their insert by less than that;
//   - every PollInterval the sweeper looks for runnable jobs scheduled in
//     the last nearWindow, and for the first runnable job of each priority
//     (that one much less often while it is slow, see sweep), and moves
//     back to any it finds behind.
//
// A wake-up that names no position (a resume, a rescue, a listener that
// reconnected, an older client), and the first lease of a worker, read the
// queue from its head, until such a lease finds fewer jobs than it asked
// for: then every runnable job was leased or locked by another worker.

// seekMargin is how far before its remembered point each lease reads.
const seekMargin = 50 * time.Millisecond

// headOfPriority is a time before every scheduled time PostgreSQL can
// store (4714 BC), where a seek from the head of a priority begins.
var headOfPriority = time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC)

// position is a point in one priority of the pending index. The zero
// position is the head of the priority.
type position struct {
	at time.Time
	id int64
}

func (p position) before(q position) bool {
	return p.at.Before(q.at) || p.at.Equal(q.at) && p.id < q.id
}

// seeker keeps the fetch loop's positions. rewind and rewindAll are safe
// for concurrent use (the listener and the sweeper call them); from and
// leased are called by the fetch loop only.
type seeker struct {
	mu      sync.Mutex
	rewinds map[int16]time.Time // asked, not yet applied
	all     bool                // asked to read from the head

	// priorities are the keys of positions, for the sweeper.
	priorities []int16

	// The fetch loop's own.
	positions map[int16]position
	fromHead  bool
}

// known returns the priorities the fetch loop has positions in.
func (s *seeker) known() []int16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.priorities
}

// add sets the position of a priority the fetch loop had none in.
func (s *seeker) add(p int16, at position) {
	s.positions[p] = at
	s.mu.Lock()
	s.priorities = append(s.priorities[:len(s.priorities):len(s.priorities)], p)
	s.mu.Unlock()
}

func newSeeker() *seeker {
	return &seeker{positions: make(map[int16]position), fromHead: true}
}

// rewind moves the position of priority p back to at, if it is later:
// jobs scheduled at at or after were committed there.
func (s *seeker) rewind(p int16, at time.Time) {
	s.mu.Lock()
	if old, ok := s.rewinds[p]; !ok || at.Before(old) {
		if s.rewinds == nil {
			s.rewinds = make(map[int16]time.Time)
		}
		s.rewinds[p] = at
	}
	s.mu.Unlock()
}

// rewindAll has the next leases read the queue from its head.
func (s *seeker) rewindAll() {
	s.mu.Lock()
	s.all = true
	s.mu.Unlock()
}

// from applies the rewinds asked so far and adds to p the reads of the
// source (queue, kind), each at most lim jobs: from its head, which it
// reports, or from each priority's position.
func (s *seeker) from(p *db.JobLeaseParams, queue, kind string, lim int32) (fromHead bool) {
	s.mu.Lock()
	rewinds, all := s.rewinds, s.all
	s.rewinds, s.all = nil, false
	s.mu.Unlock()
	for pr, at := range rewinds {
		if old, ok := s.positions[pr]; !ok {
			// A priority this worker has not leased from: its jobs may
			// begin anywhere.
			s.add(pr, position{})
		} else if to := (position{at: at}); to.before(old) {
			s.positions[pr] = to
		}
	}
	if all || len(s.positions) == 0 {
		s.fromHead = true
	}
	if s.fromHead {
		p.HeadQueues = append(p.HeadQueues, queue)
		p.HeadKinds = append(p.HeadKinds, kind)
		p.HeadLimits = append(p.HeadLimits, lim)
		return true
	}
	for pr, pos := range s.positions {
		at := pos.at.Add(-seekMargin)
		if pos.at.IsZero() || at.Before(headOfPriority) {
			at = headOfPriority
		}
		p.SeekQueues = append(p.SeekQueues, queue)
		p.SeekKinds = append(p.SeekKinds, kind)
		p.SeekPriorities = append(p.SeekPriorities, pr)
		p.SeekAfter = append(p.SeekAfter, at) // every job at that time
		p.SeekLimits = append(p.SeekLimits, lim)
	}
	return false
}

// leased moves the positions past the jobs a lease took. A lease read from
// the head and found fewer jobs than asked (exhausted): every runnable job
// was leased, here or by another worker, so the next leases may seek.
func (s *seeker) leased(rows []*db.TasukiJob, exhausted bool) {
	for _, r := range rows {
		at := position{at: r.ScheduledAt, id: r.ID}
		if old, ok := s.positions[r.Priority]; !ok {
			s.add(r.Priority, at)
		} else if old.before(at) {
			s.positions[r.Priority] = at
		}
	}
	if exhausted {
		s.fromHead = false
	}
}

// A sweep task that took d waits at least factor·d before it runs again,
// so that it takes at most 1/factor of a connection however slow an old
// snapshot makes it.
const (
	rescueFactor = 20
	nearFactor   = 20
	// The full look behind the positions is only a backstop for jobs the
	// other ways miss; under an old snapshot it reads every dead entry of
	// the queue, so it gives way more.
	headsFactor = 100
	// nearWindow is how far behind the present the near look reads.
	nearWindow = 10 * time.Second
)

// sweepTask is one of the sweeper's periodic statements.
type sweepTask struct {
	what   string
	every  time.Duration
	factor time.Duration
	run    func(context.Context) error
	next   time.Time
	fail   *backoff
}

// sweep runs, apart from the fetch loop and on a connection of its own,
// the statements that read past the dead index entries an old snapshot
// keeps, so that none delays a lease: the rescue of expired leases (in the
// running index, where it cannot seek), every min(LeaseDuration/2, 5s); a
// look for runnable jobs up to nearWindow behind the fetch loop's
// positions, and one for the first runnable job of each priority, every
// PollInterval (at most a day). Each runs less often when it is slow, and
// backs off when it fails. It returns when ctx ends.
//
// Its statements end with ctx: none of them hands this worker jobs, so one
// cut short by a shutdown loses nothing, and shutdown does not wait for it.
func (w *Worker) sweep(ctx context.Context) {
	every := min(w.cfg.PollInterval, 24*time.Hour) // no overflow below
	now := time.Now()
	// The looks behind the positions are for a worker that leases: an idle
	// one reads its sources from their heads at each poll instead.
	var activeNear, activeHeads bool
	ifActive := func(active *bool, look func(context.Context) error) func(context.Context) error {
		return func(ctx context.Context) error {
			if !*active {
				return nil
			}
			*active = false
			return look(ctx)
		}
	}
	tasks := []*sweepTask{
		{what: "rescuing expired jobs", every: w.rescueEvery(), factor: rescueFactor,
			run: w.rescue, next: now},
		{what: "looking for jobs just behind the last lease", every: every, factor: nearFactor,
			run: ifActive(&activeNear, w.findNear), next: now.Add(every)},
		{what: "looking for jobs behind the last lease", every: every, factor: headsFactor,
			run: ifActive(&activeHeads, w.findHeads), next: now.Add(every)},
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		next := tasks[0].next
		for _, t := range tasks[1:] {
			if t.next.Before(next) {
				next = t.next
			}
		}
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if w.activity.Swap(false) {
			activeNear, activeHeads = true, true
		}
		for _, t := range tasks {
			if !time.Now().Before(t.next) {
				w.runSweep(ctx, t)
			}
		}
	}
}

// runSweep runs t and sets when it runs next: after its period, or factor
// times as long as it took, or, after a failure, a backoff.
func (w *Worker) runSweep(ctx context.Context, t *sweepTask) {
	if t.fail == nil {
		t.fail = newBackoff(backoffMax)
	}
	leave, err := w.gate.enterIfIdle(ctx)
	if err != nil {
		return // ctx ended
	}
	start := time.Now()
	err = t.run(ctx)
	leave()
	took := time.Since(start)
	if err == nil {
		t.fail.reset()
		t.next = time.Now().Add(max(t.every, t.factor*took))
		return
	}
	if ctx.Err() != nil {
		return
	}
	if t.fail.d == 0 { // the first failure of a streak
		w.log.Warn("tasuki: "+t.what+" failed; retrying", slog.Any("error", dberr.Wrap(t.what, err)))
	}
	// A statement that failed slowly (a timeout) gives way as one that
	// passed slowly does.
	t.next = time.Now().Add(max(t.every, t.factor*took, t.fail.next()))
}

// sweepTimeout bounds a sweep statement. Generous: while an old snapshot
// is held these reads take long, and cutting them short would find
// nothing at all.
func (w *Worker) sweepTimeout() time.Duration { return max(w.cfg.LeaseDuration/2, time.Minute) }

// findHeads moves the fetch loop's positions back to the first runnable
// job of each priority of each source that lies behind them, and wakes
// the fetch loop when it found any.
func (w *Worker) findHeads(ctx context.Context) error {
	var p db.JobRunnableHeadsParams
	for _, s := range w.sources {
		p.Queues = append(p.Queues, s.queue.name)
		p.Kinds = append(p.Kinds, s.kind.name)
	}
	p.SkipIds = w.refused.Skip(time.Now())
	stmtCtx, cancel := context.WithTimeout(ctx, w.sweepTimeout())
	defer cancel()
	heads, err := w.queries.JobRunnableHeads(stmtCtx, p)
	if err == nil {
		rewindHeads(w, heads)
	}
	return err
}

// findNear is findHeads for the priorities the fetch loop knows, reading
// only the jobs scheduled in the last nearWindow, by the database clock.
func (w *Worker) findNear(ctx context.Context) error {
	p := db.JobRunnableHeadsSinceParams{WindowUs: nearWindow.Microseconds(), SkipIds: w.refused.Skip(time.Now())}
	for _, s := range w.sources {
		for _, pr := range s.seek.known() {
			p.Queues = append(p.Queues, s.queue.name)
			p.Kinds = append(p.Kinds, s.kind.name)
			p.Priorities = append(p.Priorities, pr)
		}
	}
	if len(p.Queues) == 0 {
		return nil
	}
	stmtCtx, cancel := context.WithTimeout(ctx, w.sweepTimeout())
	defer cancel()
	heads, err := w.queries.JobRunnableHeadsSince(stmtCtx, p)
	if err == nil {
		rewindHeads(w, heads)
	}
	return err
}

// rewindHeads moves the positions back to the runnable jobs the sweeper
// found behind them, makes their sources due, and wakes the fetch loop
// when it found any.
func rewindHeads[R db.JobRunnableHeadsRow | db.JobRunnableHeadsSinceRow](w *Worker, heads []*R) {
	for _, r := range heads {
		h := db.JobRunnableHeadsRow(*r)
		if s := w.byPair[pair{h.Queue, h.Kind}]; s != nil {
			s.seek.rewind(h.Priority, h.ScheduledAt)
			w.inbox.add(s)
		}
	}
	if len(heads) > 0 {
		w.signalWake()
	}
}
