package worker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"runtime/debug"
	"sync/atomic"

	"github.com/tasukiq/tasuki/tasuki"
)

// Middleware wraps the handling of a job: it runs in the handler's
// goroutine, sees the job (its kind, queue, attempt, metadata; the payload
// as stored), calls next to decode the payload and run the handler, and
// returns the attempt's outcome, as a handler does: what next returned, or
// an outcome of its own (nil to complete the job, an error to fail the
// attempt, tasuki.Cancel, tasuki.Snooze, tasuki.RetryAfter). Time next to
// learn how long the handler ran. next gives a payload that does not
// decode as an error wrapping a *tasuki.PayloadDecodeError, which fails
// the job at once unless the middleware returns something else (Outcome
// says what the worker records for an error); a panic in the handler as a
// *PanicError. ctx is the handler's; the context given
// to next becomes the handler's (add values to it, a span say, but derive
// it from ctx).
//
// Config.Middleware wraps every kind; KindConfig.Middleware one kind,
// inside those of Config. The first of each list is outermost. A panic in
// middleware is recovered and counts as the attempt's error, as a panic
// in a handler does. With no middleware, none of this costs anything.
type Middleware func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(ctx context.Context) error) error

// ErrorHandler is told of every failed attempt: an error returned by a
// handler (through its middleware), a panic (err is a *PanicError), a
// timeout, a payload that does not decode. It is called in the handler's
// goroutine after the outcome is decided, before it is recorded, with a
// context that carries the handler context's values but is never canceled,
// and the job as its handler saw it. For reporting (Sentry and the like):
// it cannot change the outcome. A panic in it is recovered and logged.
type ErrorHandler func(ctx context.Context, job *tasuki.Job[json.RawMessage], err error)

// errNextTooLate is what next returns once the middleware that got it
// returned: the attempt's outcome is decided, and its handler must not
// run outside the worker's slots and shutdown.
var errNextTooLate = errors.New("tasuki: middleware called next after it returned; the handler did not run")

// callChain calls the handler of kind k for job through k's middleware,
// decoding the payload innermost. It returns the outcome and the context
// the handler got (ctx if the middleware never called next).
func (w *Worker) callChain(ctx context.Context, k *kindState, job *tasuki.Job[json.RawMessage]) (err error, handlerCtx context.Context) {
	c := &chain{w: w, k: k, job: job, handlerCtx: ctx}
	defer c.over.Store(true)
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: string(debug.Stack())}
			w.log.Error("tasuki: middleware panicked", slog.Int64("job_id", job.ID), slog.String("kind", k.name), slog.Any("panic", v))
		}
	}()
	err = c.call(0, ctx)
	return err, c.handlerCtx
}

// chain is one attempt's pass through its kind's middleware: one
// allocation for the attempt, and a closure per middleware.
type chain struct {
	w          *Worker
	k          *kindState
	job        *tasuki.Job[json.RawMessage]
	handlerCtx context.Context
	// over: the attempt's outcome is decided; a late next must not run
	// the handler.
	over atomic.Bool
}

// call runs middleware i, or the handler after the last.
func (c *chain) call(i int, ctx context.Context) error {
	if c.over.Load() {
		return errNextTooLate
	}
	if i == len(c.k.mws) {
		c.handlerCtx = ctx
		typed, err := c.k.reg.decode(c.job)
		if err != nil {
			return err
		}
		return c.w.call(ctx, c.k, c.job, typed)
	}
	return c.k.mws[i](ctx, c.job, func(ctx context.Context) error { return c.call(i+1, ctx) })
}

// reportError calls the worker's ErrorHandler for a failed attempt.
func (w *Worker) reportError(ctx context.Context, job *tasuki.Job[json.RawMessage], err error) {
	defer func() {
		if v := recover(); v != nil {
			w.log.Error("tasuki: ErrorHandler panicked", slog.Int64("job_id", job.ID), slog.Any("panic", v))
		}
	}()
	w.cfg.ErrorHandler(context.WithoutCancel(ctx), job, err)
}
