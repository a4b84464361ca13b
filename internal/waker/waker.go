// Package waker wakes a queue's workers after the transactions that
// inserted its jobs committed, instead of by a NOTIFY inside them.
//
// PostgreSQL makes the commits of all transactions that sent a NOTIFY wait
// for one another: it takes one lock on its notification queue before such
// a commit and holds it until the commit's WAL flush is done. Inserts that
// notify therefore commit one at a time and lose group commit. A Waker
// sends the notifications itself, in statements of their own that write no
// WAL, and coalesces them: a notification sent after a commit covers every
// job committed before it was sent.
//
// Three ways in: WakeSoon, after a commit the caller made (Insert,
// InsertMany), has a notification sent after that moment, without waiting
// for it; Wake does the same and waits; Watch, for a transaction the
// caller commits later (InsertTx), follows the transaction by its id and
// wakes once it committed, never if it rolled back. Flush waits for all of
// them.
package waker

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/db"
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

// Waker sends the wake-ups of one client. It runs goroutines only while
// it has work: none is left behind when it is idle. Safe for concurrent
// use.
type Waker struct {
	pool    *pgxpool.Pool
	queries *db.Queries

	mu sync.Mutex
	// next is the wake-up that waits to be sent: the queues of the callers
	// that asked since the one being sent started. nil when nobody waits.
	next *round
	// sending: a goroutine is sending a round.
	sending bool
	// watched are the transactions followed for Watch, by id.
	watched map[int64]*watch
	// polling: a goroutine follows watched.
	polling bool
	// idle is closed and replaced whenever the Waker has nothing left to
	// do, for Flush.
	idle chan struct{}
}

// round is one notification statement and the callers it covers.
type round struct {
	queues map[string]struct{}
	done   chan struct{}
	err    error
}

type watch struct {
	queues map[string]struct{}
	since  time.Time
}

// New returns a Waker that sends through pool.
func New(pool *pgxpool.Pool) *Waker {
	return &Waker{pool: pool, queries: db.New(pool), watched: make(map[int64]*watch), idle: make(chan struct{})}
}

// Wake wakes the workers of queue, whose jobs committed before the call,
// and returns once a notification sent after the call began went out, or
// with the error of sending it. Concurrent callers share notifications: a
// busy client sends one statement at a time, for every queue asked since
// the previous one started.
func (w *Waker) Wake(ctx context.Context, queue string) error {
	r := w.enqueue(queue)
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WakeSoon wakes the workers of queue, whose jobs committed before the
// call, as Wake does, without waiting for the notification to go out.
func (w *Waker) WakeSoon(queue string) { w.enqueue(queue) }

// enqueue adds queues to the next round, starting a sender if none runs,
// and returns that round.
func (w *Waker) enqueue(queues ...string) *round {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.next == nil {
		w.next = &round{queues: make(map[string]struct{}), done: make(chan struct{})}
	}
	for _, q := range queues {
		w.next.queues[q] = struct{}{}
	}
	if !w.sending {
		w.sending = true
		go w.send()
	}
	return w.next
}

// send sends rounds until nobody waits.
func (w *Waker) send() {
	for {
		w.mu.Lock()
		r := w.next
		w.next = nil
		if r == nil {
			w.sending = false
			w.signalIdle()
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		queues := make([]string, 0, len(r.queues))
		for q := range r.queues {
			queues = append(queues, q)
		}
		// Not the caller's context: the round serves many callers.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r.err = w.queries.WakeQueues(ctx, queues)
		cancel()
		close(r.done)
	}
}

// Watch wakes the workers of queue once transaction xact commits; nothing
// happens if it rolls back. It returns at once.
func (w *Waker) Watch(xact int64, queue string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wt := w.watched[xact]
	if wt == nil {
		wt = &watch{queues: make(map[string]struct{}), since: time.Now()}
		w.watched[xact] = wt
	}
	wt.queues[queue] = struct{}{}
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
			w.signalIdle()
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

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		rows, err := w.queries.XactStatus(ctx, ids)
		cancel()
		if err == nil {
			var queues []string
			w.mu.Lock()
			for _, r := range rows {
				wt := w.watched[r.XactID]
				switch {
				case wt == nil, r.Status == "in progress":
					continue
				case r.Status == "committed":
					for q := range wt.queues {
						queues = append(queues, q)
					}
				}
				delete(w.watched, r.XactID)
			}
			w.mu.Unlock()
			if len(queues) > 0 {
				// Not waited for: a failed wake-up leaves the jobs to the
				// workers' poll, and this loop has others to follow.
				w.enqueue(queues...)
			}
		} else {
			wait = slowPoll * 5
		}
		time.Sleep(wait)
	}
}

// signalIdle tells Flush that the Waker may be done; w.mu is held.
func (w *Waker) signalIdle() {
	if !w.sending && !w.polling {
		close(w.idle)
		w.idle = make(chan struct{})
	}
}

// Flush returns once every wake-up asked for so far was sent (for Watch:
// once each watched transaction ended), or when ctx ends.
func (w *Waker) Flush(ctx context.Context) error {
	for {
		w.mu.Lock()
		busy := w.sending || w.polling
		idle := w.idle
		w.mu.Unlock()
		if !busy {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
