package worker

import (
	"time"

	"context"
	"encoding/json"

	"github.com/tasukiq/tasuki/tasuki"
)

// Handler runs jobs whose payload is a T. What Work returns is the job's
// outcome: nil completes it; an error retries it after the kind's backoff,
// or fails it once its attempts are used up; [tasuki.Cancel] cancels it;
// [tasuki.RetryAfter] retries it after a given delay. A panic is recovered
// and counts as an error.
//
// ctx is canceled when the job is canceled from outside, when the worker
// lost the job's lease, or when a shutdown runs out of time; Work should
// then return soon.
type Handler[T any] interface {
	Work(ctx context.Context, job *tasuki.Job[T]) error
}

// HandlerFunc adapts a function to a Handler, as http.HandlerFunc does.
// Shared state reaches the function through its closure or a method value.
type HandlerFunc[T any] func(ctx context.Context, job *tasuki.Job[T]) error

// Work calls f(ctx, job).
func (f HandlerFunc[T]) Work(ctx context.Context, job *tasuki.Job[T]) error { return f(ctx, job) }

// KindConfig configures the handling of one kind. The zero value is valid.
type KindConfig struct {
	// Kind is the kind the handler runs. Defaults to what the payload
	// type's Kind method returns (see tasuki.Kinder); set it for a type
	// without one. It must be the kind its jobs were inserted with.
	Kind string
	// MaxConcurrency is the most handlers of this kind that run at once
	// in the worker, over all its queues: for work that must not run too
	// many at once (calls to a rate-limited API, say). 0, the default,
	// means no limit beyond the queues' concurrency.
	MaxConcurrency int
	// RetryPolicy chooses the delay before a failed job's next attempt.
	// Defaults to the worker's Config.RetryPolicy.
	RetryPolicy RetryPolicy
	// Timeout is how long one attempt of a job of this kind may run,
	// unless the job's own InsertOpts.Timeout says otherwise: then the
	// handler's context ends with a *TimeoutError as its cause, and an
	// error the handler returns counts as a failed attempt that says it
	// timed out, retried by the retry policy. A handler that goes on past
	// its timeout and TimeoutGrace more has its lease no longer renewed,
	// so that its job is rescued and run again once the lease lapses,
	// instead of being held for as long as the handler hangs. Defaults to
	// 0: no timeout.
	Timeout time.Duration
	// Middleware wraps the handling of this kind's jobs, inside the
	// worker's Config.Middleware: see Middleware. The first is outermost.
	// Defaults to none.
	Middleware []Middleware
}

// TimeoutGrace is how long a handler may run past its timeout before its
// worker stops renewing its lease: the time it has to notice that its
// context ended and return.
const TimeoutGrace = 5 * time.Second

// Registration is a handler registered for its kind, made by Handle or
// HandleFunc and given to New.
type Registration struct {
	cfg KindConfig
	// kindOf resolves the kind from cfg.Kind and the payload type.
	kindOf func(option, given string) (string, error)
	// decode turns a stored job into the handler's *tasuki.Job[T] (boxed),
	// and work calls the handler with it: the only places that know T.
	decode  func(raw *tasuki.Job[json.RawMessage]) (any, error)
	work    func(ctx context.Context, job any) error
	missing bool // a nil handler
}

// Handle registers h for the kind of its payload type T: it runs every job
// of that kind the worker leases, and no other. Jobs of kinds no handler
// of a worker is registered for are never leased by it.
func Handle[T any](h Handler[T]) Registration {
	f, isFunc := h.(HandlerFunc[T])
	return Registration{
		kindOf:  tasuki.KindOf[T],
		decode:  func(raw *tasuki.Job[json.RawMessage]) (any, error) { return tasuki.Decode[T](raw) },
		work:    func(ctx context.Context, job any) error { return h.Work(ctx, job.(*tasuki.Job[T])) },
		missing: h == nil || isFunc && f == nil,
	}
}

// HandleFunc is Handle for a function.
func HandleFunc[T any](f func(ctx context.Context, job *tasuki.Job[T]) error) Registration {
	return Handle[T](HandlerFunc[T](f))
}

// With returns the registration with cfg as its kind's configuration.
func (r Registration) With(cfg KindConfig) Registration {
	r.cfg = cfg
	return r
}
