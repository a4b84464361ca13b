package worker

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Retry waits after a failed database statement. The lease loop probes the
// database often, so that work resumes within about half a second of the
// database accepting connections again; the listener and the writer wait
// longer, and are woken when another loop's statement succeeds after
// failing (health.ok: the database is back), so that they do not add load to
// a database that is still down. A loop that succeeds all along wakes
// nobody: a listener whose own connection fails (a wrong ListenURL) keeps
// its backoff while leases go on.
const (
	// probeBackoffMax caps the lease loop's wait between attempts.
	probeBackoffMax = 400 * time.Millisecond
	// backoffMax caps the wait of the other loops.
	backoffMax = 5 * time.Second
)

// backoff grows from 100 ms, doubling, to its cap, with ±20 % of jitter so
// that many workers do not retry in step.
type backoff struct {
	d, max time.Duration
}

func newBackoff(max time.Duration) *backoff { return &backoff{max: max} }

func (b *backoff) next() time.Duration {
	if b.d == 0 {
		b.d = 100 * time.Millisecond
	} else {
		b.d = min(2*b.d, b.max)
	}
	return time.Duration(float64(b.d) * (0.8 + 0.4*rand.Float64()))
}

// reset starts the backoff again and reports whether it was backing off:
// the statement that succeeded follows a failure.
func (b *backoff) reset() (recovered bool) {
	recovered = b.d != 0
	b.d = 0
	return recovered
}

// health tells the worker's loops that the database answers again: a loop
// waiting out a failure returns from its wait as soon as any other loop's
// statement succeeds.
type health struct {
	waiting atomic.Bool // someone may be waiting on back
	mu      sync.Mutex
	back    chan struct{} // closed when a statement succeeds
}

func newHealth() *health { return &health{back: make(chan struct{})} }

// ok records that a statement succeeded after the same loop's previous one
// failed, and wakes every waiting loop. It costs one atomic load when no
// loop waits.
func (h *health) ok() {
	if !h.waiting.Load() {
		return
	}
	h.mu.Lock()
	if h.waiting.Load() {
		close(h.back)
		h.back = make(chan struct{})
		h.waiting.Store(false)
	}
	h.mu.Unlock()
}

// recovered returns a channel that is closed at the next ok.
func (h *health) recovered() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.waiting.Store(true)
	return h.back
}

// sleep waits for d, until ctx ends, or until the database answers again.
func (h *health) sleep(ctx context.Context, d time.Duration) {
	back := h.recovered()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-back:
	}
}
