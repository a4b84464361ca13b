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

// gateWait is the longest the fetch loop of an idle worker waits for a
// background statement to end before it sends its own beside it: a
// cleaner's statement can wait on an application's lock, and a look
// behind the positions can take seconds under an old snapshot, and
// neither may hold up a lease for that long.
const gateWait = 250 * time.Millisecond

// idleGate keeps an idle worker to one statement at a time, so that it
// needs one connection of its pool: while the worker is idle, the fetch
// loop's statements and the sweeper's and the cleaner's pass through it,
// one at a time, waiting for each other rather than opening a second
// connection. The fetch loop waits at most gateWait, and then goes ahead
// without it. While jobs flow nothing waits: there a slow sweep under an
// old snapshot must not delay a lease, and the pool has the connections
// open anyway.
type idleGate struct {
	sem chan struct{}
	// lastWork is when the worker last leased a job or recorded an
	// outcome (UnixNano), 0 before the first.
	lastWork atomic.Int64
	active   *atomic.Int64 // handlers running
	leave    func()
}

func newIdleGate(active *atomic.Int64) *idleGate {
	g := &idleGate{sem: make(chan struct{}, 1), active: active}
	g.leave = func() { <-g.sem }
	return g
}

// worked records that the worker leased jobs or recorded outcomes at now.
func (g *idleGate) worked(now time.Time) { g.lastWork.Store(now.UnixNano()) }

// idle reports whether no handler runs and no job was leased and no
// outcome recorded in the last idleAfter. A busy worker, on the fetch
// loop's every lease, pays one atomic load here, not a clock read.
func (g *idleGate) idle() bool {
	return g.active.Load() == 0 && time.Now().UnixNano()-g.lastWork.Load() >= int64(idleAfter)
}

// enterIfIdle waits for the gate while the worker is idle, until ctx ends,
// and returns the function that leaves it; while it is not idle it passes
// at once. For the sweeper's and the cleaner's statements.
func (g *idleGate) enterIfIdle(ctx context.Context) (leave func(), err error) {
	if !g.idle() {
		return noLeave, nil
	}
	select {
	case g.sem <- struct{}{}:
		return g.leave, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// enterToLease is enterIfIdle for the fetch loop: it waits at most
// gateWait, and then passes without the gate.
func (g *idleGate) enterToLease(ctx context.Context) (leave func(), err error) {
	if !g.idle() {
		return noLeave, nil
	}
	select {
	case g.sem <- struct{}{}:
		return g.leave, nil
	default:
	}
	t := time.NewTimer(gateWait)
	defer t.Stop()
	select {
	case g.sem <- struct{}{}:
		return g.leave, nil
	case <-t.C:
		return noLeave, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func noLeave() {}
