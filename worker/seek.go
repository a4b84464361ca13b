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
//   - the sweeper looks for the first runnable job of each priority every
//     PollInterval (less often while that read is slow, see sweep) and
//     moves back to any it finds behind.
//
// A wake-up that names no position (a resume, a rescue, a listener that
// reconnected, an older client), and the first lease of a worker, read the
// queue from its head, until such a lease finds fewer jobs than it asked
// for: then every runnable job was leased or locked by another worker.

// seekMargin is how far before its remembered point each lease reads.
const seekMargin = 250 * time.Millisecond

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

	// The fetch loop's own.
	positions map[int16]position
	fromHead  bool
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

// from applies the rewinds asked so far and sets p's seek positions, or
// none when this lease reads from the head, which it reports.
func (s *seeker) from(p *db.JobLeaseParams) (fromHead bool) {
	s.mu.Lock()
	rewinds, all := s.rewinds, s.all
	s.rewinds, s.all = nil, false
	s.mu.Unlock()
	for pr, at := range rewinds {
		if old, ok := s.positions[pr]; !ok {
			// A priority this worker has not leased from: its jobs may
			// begin anywhere.
			s.positions[pr] = position{}
		} else if to := (position{at: at}); to.before(old) {
			s.positions[pr] = to
		}
	}
	if all || len(s.positions) == 0 {
		s.fromHead = true
	}
	if s.fromHead {
		return true
	}
	n := len(s.positions)
	p.SeekPriorities = make([]int16, 0, n)
	p.SeekAfter = make([]time.Time, 0, n)
	p.SeekAfterIds = make([]int64, 0, n)
	for pr, pos := range s.positions {
		at := pos.at.Add(-seekMargin)
		if pos.at.IsZero() || at.Before(headOfPriority) {
			at = headOfPriority
		}
		p.SeekPriorities = append(p.SeekPriorities, pr)
		p.SeekAfter = append(p.SeekAfter, at)
		p.SeekAfterIds = append(p.SeekAfterIds, 0) // every job at that time
	}
	return false
}

// leased moves the positions past the jobs a lease took. A lease read from
// the head and found fewer jobs than asked (exhausted): every runnable job
// was leased, here or by another worker, so the next leases may seek.
func (s *seeker) leased(rows []*db.TasukiJob, exhausted bool) {
	for _, r := range rows {
		at := position{at: r.ScheduledAt, id: r.ID}
		if old, ok := s.positions[r.Priority]; !ok || old.before(at) {
			s.positions[r.Priority] = at
		}
	}
	if exhausted {
		s.fromHead = false
	}
}

// sweepFactor: after a sweep statement that took d, the next waits at least
// sweepFactor·d, so that sweeping takes at most 1/sweepFactor of a
// connection however slow an old snapshot makes it.
const sweepFactor = 20

// sweep rescues expired leases every min(LeaseDuration/2, 5s) and looks
// for runnable jobs behind the fetch loop's positions every PollInterval
// (at most a day),
// each less often when it is slow, until ctx ends. It runs apart from the
// fetch loop, on a connection of its own, so that neither statement delays
// a lease: both read past the dead index entries an old snapshot keeps
// (the rescue in the running index, which it cannot seek in).
func (w *Worker[T]) sweep(ctx, dbCtx context.Context) {
	rescueEvery := min(w.cfg.LeaseDuration/2, 5*time.Second)
	headsEvery := min(w.cfg.PollInterval, 24*time.Hour) // no overflow below
	now := time.Now()
	nextRescue, nextHeads := now, now.Add(headsEvery)
	rescueFail, headsFail := newBackoff(backoffMax), newBackoff(backoffMax)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		next := nextRescue
		if nextHeads.Before(next) {
			next = nextHeads
		}
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if !time.Now().Before(nextRescue) {
			start := time.Now()
			err := w.rescue(dbCtx)
			nextRescue = w.sweepNext(start, rescueEvery, err, rescueFail, "rescuing expired jobs")
		}
		if !time.Now().Before(nextHeads) {
			start := time.Now()
			err := w.findHeads(dbCtx)
			nextHeads = w.sweepNext(start, headsEvery, err, headsFail, "looking for jobs behind the last lease")
		}
	}
}

// sweepNext is when a sweep statement that started at start runs next:
// after every, or sweepFactor times as long as it took, or, after a
// failure, a backoff that the fetch loop's recovery cuts short.
func (w *Worker[T]) sweepNext(start time.Time, every time.Duration, err error, b *backoff, what string) time.Time {
	took := time.Since(start)
	if err == nil {
		b.reset()
		return time.Now().Add(max(every, sweepFactor*took))
	}
	if b.d == 0 { // the first failure of a streak
		w.log.Warn("tasuki: "+what+" failed; retrying", slog.Any("error", dberr.Wrap(what, err)))
	}
	return time.Now().Add(max(every, b.next()))
}

// findHeads moves the fetch loop's positions back to the first runnable
// job of each priority that lies behind them, and wakes the fetch loop
// when it did.
func (w *Worker[T]) findHeads(ctx context.Context) error {
	// Generous: while an old snapshot is held this read takes long, and
	// cutting it short would find nothing at all.
	stmtCtx, cancel := context.WithTimeout(ctx, max(w.cfg.LeaseDuration/2, time.Minute))
	defer cancel()
	heads, err := w.queries.JobRunnableHeads(stmtCtx, db.JobRunnableHeadsParams{
		Queue: w.cfg.Queue, SkipIds: w.refused.Skip(time.Now()),
	})
	if err != nil {
		return err
	}
	for _, h := range heads {
		w.seek.rewind(h.Priority, h.ScheduledAt)
	}
	if len(heads) > 0 {
		w.signalWake()
	}
	return nil
}
