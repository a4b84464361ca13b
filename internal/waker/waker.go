// Package waker wakes a queue's workers after the transactions that
// inserted its jobs committed, instead of by a NOTIFY inside them.
//
// PostgreSQL makes the commits of all transactions that sent a NOTIFY wait
// for one another: it takes one lock on its notification queue before such
// a commit and holds it until the commit's WAL flush is done. Inserts that
// notify therefore commit one at a time and lose group commit. A Waker
// sends the notifications itself, in statements of their own, and
// coalesces them: a notification sent after a commit covers every job
// committed before it was sent.
//
// Two ways in: WakeSoon, after a commit the caller made (Insert,
// InsertMany), has a notification sent after that moment, without waiting
// for it; Watch, for a transaction the caller commits later (InsertTx),
// follows the transaction by its id and wakes once it committed, never if
// it rolled back. Flush waits for what was asked before it, and reports a
// wake-up that could not be sent.
package waker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
)

// Watch intervals: a transaction is checked every fastPoll while it is
// young, as most commit within milliseconds of their insert, and every
// slowPoll once it has been open a while.
const (
	fastPoll   = 2 * time.Millisecond
	slowPoll   = 20 * time.Millisecond
	youngWatch = 100 * time.Millisecond
	// maxWatched bounds the transactions checked by one statement.
	maxWatched = 10_000
)

// Target is a queue to wake, with the schema that holds its jobs: the
// inserting transaction's, which need not be the pool's.
type Target struct {
	Schema, Queue string
}

// Head is where the jobs a wake-up announces begin in their queue: their
// kind, their priority and the earliest of their scheduled times. A
// wake-up carries, per kind and priority, the earliest head asked for it,
// so that a worker that leases from where it stopped last moves back for
// jobs whose transaction committed after it passed that point, and a
// worker that handles none of the kinds is not woken.
type Head struct {
	Kind        string
	Priority    int16
	ScheduledAt time.Time
}

// headKey is what heads are merged by.
type headKey struct {
	kind     string
	priority int16
}

// heads is the earliest scheduled time per kind and priority of a
// target's jobs.
type heads map[headKey]time.Time

func (h heads) add(hd Head) {
	k := headKey{hd.Kind, hd.Priority}
	if at, ok := h[k]; !ok || hd.ScheduledAt.Before(at) {
		h[k] = hd.ScheduledAt
	}
}

// merge adds target t, whose jobs begin at hs, to dst.
func merge(dst map[Target]heads, t Target, hs heads) {
	merged := dst[t]
	if merged == nil {
		merged = make(heads, len(hs))
		dst[t] = merged
	}
	for k, at := range hs {
		merged.add(Head{Kind: k.kind, Priority: k.priority, ScheduledAt: at})
	}
}

// maxHeadsBytes bounds the "r" field of one queue's wake-up: PostgreSQL
// caps a notification at 8000 bytes, and one wake-up names several
// queues. A wake-up whose heads take more names none, and the workers
// read the queue from its head.
const maxHeadsBytes = 2000

// json is the payload's "r" field: [[priority, microseconds since the
// Unix epoch, kind], ...], or "" (none) when it would take more than
// maxHeadsBytes.
func (h heads) json() string {
	var b strings.Builder
	b.WriteByte('[')
	for k, at := range h {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		kind, _ := json.Marshal(k.kind) // a string always encodes
		fmt.Fprintf(&b, "[%d,%d,%s]", k.priority, at.UnixMicro(), kind)
		if b.Len() > maxHeadsBytes {
			return ""
		}
	}
	b.WriteByte(']')
	return b.String()
}

// Waker sends the wake-ups of one client. It runs goroutines only while
// it has work: none is left behind when it is idle. Safe for concurrent
// use.
type Waker struct {
	pool    *pgxpool.Pool
	queries *db.Queries

	mu sync.Mutex
	// next collects the targets asked since the round being sent began;
	// current is that round. nil when there is none.
	next, current *round
	// watched are the transactions followed for Watch, by id.
	watched map[int64]*watch
	polling bool
	// polled is closed and replaced after each pass of the poller, and
	// when it stops: Flush waits on it for watched transactions to end.
	polled chan struct{}
}

// round is one notification statement and the callers it covers.
type round struct {
	targets map[Target]heads
	done    chan struct{}
	err     error
}

type watch struct {
	targets map[Target]heads
	since   time.Time
}

// New returns a Waker that sends through pool.
func New(pool *pgxpool.Pool) *Waker {
	return &Waker{pool: pool, queries: db.New(pool), watched: make(map[int64]*watch), polled: make(chan struct{})}
}

// WakeSoon wakes the workers of t, whose jobs (beginning at h) committed
// before the call, by a notification sent after it, without waiting for
// it: Flush reports how it went. Concurrent callers share notifications.
func (w *Waker) WakeSoon(t Target, h Head) {
	w.mu.Lock()
	w.enqueueLocked(map[Target]heads{t: {headKey{h.Kind, h.Priority}: h.ScheduledAt}})
	w.mu.Unlock()
}

// enqueueLocked adds targets to the next round, starting a sender if none
// runs, and returns that round. w.mu is held.
func (w *Waker) enqueueLocked(targets map[Target]heads) *round {
	if w.next == nil {
		w.next = &round{targets: make(map[Target]heads), done: make(chan struct{})}
		if w.current == nil {
			go w.send()
		}
	}
	for t, hs := range targets {
		merge(w.next.targets, t, hs)
	}
	return w.next
}

// send sends rounds until nobody waits. Concurrent callers share rounds: a
// busy client sends one statement at a time, for every target asked since
// the previous one began.
func (w *Waker) send() {
	for {
		w.mu.Lock()
		r := w.next
		w.next, w.current = nil, r
		w.mu.Unlock()
		if r == nil {
			return
		}
		p := db.WakeQueuesParams{}
		for t, hs := range r.targets {
			p.Schemas = append(p.Schemas, t.Schema)
			p.Queues = append(p.Queues, t.Queue)
			p.Heads = append(p.Heads, hs.json())
		}
		// Not a caller's context: the round serves many callers.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := w.queries.WakeQueues(ctx, p); err != nil {
			r.err = fmt.Errorf("tasuki: wake workers (they will find the jobs at their next poll): %w", err)
		}
		cancel()
		w.mu.Lock()
		w.current = nil
		close(r.done)
		if w.next == nil {
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
	}
}

// Watch wakes the workers of t, whose jobs begin at h, once transaction
// xact commits; nothing happens if it rolls back. It returns at once.
func (w *Waker) Watch(xact int64, t Target, h Head) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wt := w.watched[xact]
	if wt == nil {
		wt = &watch{targets: make(map[Target]heads), since: time.Now()}
		w.watched[xact] = wt
	}
	merge(wt.targets, t, heads{headKey{h.Kind, h.Priority}: h.ScheduledAt})
	if !w.polling {
		w.polling = true
		go w.poll()
	}
}

// poll follows the watched transactions until none is left.
func (w *Waker) poll() {
	for {
		w.mu.Lock()
		if len(w.watched) == 0 {
			w.polling = false
			w.passedLocked()
			w.mu.Unlock()
			return
		}
		ids := make([]int64, 0, min(len(w.watched), maxWatched))
		wait := slowPoll
		now := time.Now()
		for id, wt := range w.watched {
			if len(ids) == maxWatched {
				break
			}
			ids = append(ids, id)
			if now.Sub(wt.since) < youngWatch {
				wait = fastPoll
			}
		}
		w.mu.Unlock()

		rows, err := w.statuses(ids)
		w.mu.Lock()
		if err == nil {
			targets := make(map[Target]heads)
			for _, r := range rows {
				wt := w.watched[r.XactID]
				switch {
				case wt == nil, r.Status == "in progress":
					continue
				case r.Status != "aborted": // committed, or unknown to this server
					for t, hs := range wt.targets {
						merge(targets, t, hs)
					}
				}
				delete(w.watched, r.XactID)
			}
			if len(targets) > 0 {
				// Under the lock that removed the watches, so that Flush,
				// once it sees them gone, finds their round.
				w.enqueueLocked(targets)
			}
		} else {
			wait = 5 * slowPoll
		}
		w.passedLocked()
		w.mu.Unlock()
		time.Sleep(wait)
	}
}

// statuses asks whether the transactions ids committed. When the database
// refuses one id (one it has not reached: a transaction of another server,
// or one lost in a failover to a replica that was behind), which fails the
// statement for all, it asks about each alone, and answers "unknown" for
// the ids it refuses: their queues are woken, and they are no longer
// followed.
func (w *Waker) statuses(ids []int64) ([]*db.XactStatusRow, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := w.queries.XactStatus(ctx, ids)
	if err == nil || !dberr.RowError(err) {
		return rows, err
	}
	rows = rows[:0]
	for _, id := range ids {
		one, err := w.queries.XactStatus(ctx, []int64{id})
		switch {
		case err == nil:
			rows = append(rows, one...)
		case dberr.RowError(err):
			rows = append(rows, &db.XactStatusRow{XactID: id, Status: "unknown"})
		default:
			return nil, err
		}
	}
	return rows, nil
}

// passedLocked tells Flush that a pass ended. w.mu is held.
func (w *Waker) passedLocked() {
	close(w.polled)
	w.polled = make(chan struct{})
}

// Flush returns once the wake-ups asked before it was called went out
// (for Watch: once each transaction watched then ended, and its wake-up
// went out), or when ctx ends. It returns the first error of sending one
// of them: those jobs wait for the workers' next poll. It does not wait
// for what is asked after it was called.
func (w *Waker) Flush(ctx context.Context) error {
	w.mu.Lock()
	rounds := w.roundsLocked()
	var ids []int64
	for id := range w.watched {
		ids = append(ids, id)
	}
	w.mu.Unlock()

	var errs []error
	wait := func(rs []*round) error {
		for _, r := range rs {
			select {
			case <-r.done:
				errs = append(errs, r.err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	if err := wait(rounds); err != nil {
		return err
	}
	for len(ids) > 0 {
		w.mu.Lock()
		left := ids[:0]
		for _, id := range ids {
			if _, ok := w.watched[id]; ok {
				left = append(left, id)
			}
		}
		ids = left
		polled := w.polled
		if len(ids) == 0 {
			// Their wake-ups were enqueued with their removal: they are in
			// one of these rounds, or already sent.
			rounds = w.roundsLocked()
		}
		w.mu.Unlock()
		if len(ids) == 0 {
			if err := wait(rounds); err != nil {
				return err
			}
			break
		}
		select {
		case <-polled:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errors.Join(errs...)
}

// roundsLocked is the rounds being sent or waiting to be. w.mu is held.
func (w *Waker) roundsLocked() []*round {
	var rs []*round
	for _, r := range []*round{w.current, w.next} {
		if r != nil {
			rs = append(rs, r)
		}
	}
	return rs
}
