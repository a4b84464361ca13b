package worker

import (
	"context"
	"sync/atomic"
	"time"
)

// idleAfter is how long a worker leases no jobs, with no handler running,
// before it counts as idle: as long as its pool keeps a connection it did
// not use, so that by the time the background statements queue behind
// the polls, the connections the last burst opened are closing.
const idleAfter = ownIdleTimeout

// idleGate keeps an idle worker to one statement at a time, so that it
// needs one connection of its pool: the fetch loop's statements always
// pass through it, and the sweeper's and the cleaner's pass through it
// while the worker is idle, waiting for a poll to end rather than opening
// a connection beside it. While jobs flow they do not wait: there a slow
// sweep under an old snapshot must not delay a lease, and the pool has
// the connections open anyway.
type idleGate struct {
	sem chan struct{}
	// lastWork is when the fetch loop last leased a job (UnixNano), 0
	// before the first.
	lastWork atomic.Int64
	active   *atomic.Int64 // handlers running
	leave    func()
}

func newIdleGate(active *atomic.Int64) *idleGate {
	g := &idleGate{sem: make(chan struct{}, 1), active: active}
	g.leave = func() { <-g.sem }
	return g
}

// worked records that the fetch loop leased jobs at now.
func (g *idleGate) worked(now time.Time) { g.lastWork.Store(now.UnixNano()) }

// idle reports whether no job was leased in the last idleAfter and no
// handler runs.
func (g *idleGate) idle(now time.Time) bool {
	return g.active.Load() == 0 && now.UnixNano()-g.lastWork.Load() >= int64(idleAfter)
}

// enter waits for the gate, until ctx ends, and returns the function that
// leaves it. The fetch loop's statements enter always.
func (g *idleGate) enter(ctx context.Context) (leave func(), err error) {
	select {
	case g.sem <- struct{}{}:
		return g.leave, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// enterIfIdle is enter for a background statement: while the worker is not
// idle it passes at once, without the gate.
func (g *idleGate) enterIfIdle(ctx context.Context) (leave func(), err error) {
	if !g.idle(time.Now()) {
		return noLeave, nil
	}
	return g.enter(ctx)
}

func noLeave() {}
