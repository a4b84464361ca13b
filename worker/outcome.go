package worker

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/tasukiq/tasuki/tasuki"
)

// Outcome says what a worker records for an attempt of job that ended
// with err, ctx being the handler's context: what a middleware's next
// returned, or the middleware's own result. In order:
//
//   - nil: tasuki.EventCompleted;
//   - an error wrapping a *tasuki.CancelError: EventCanceled;
//   - one wrapping a *tasuki.SnoozeError: EventSnoozed;
//   - one wrapping a *tasuki.PayloadDecodeError (and no
//     *tasuki.RetryAfterError): EventFailed, whatever attempts are left;
//   - any error once ctx ended by shutdown (ErrShutdown): EventGivenBack;
//   - any other error: EventFailed on the job's last attempt, else
//     EventRetried.
//
// Middleware that reports outcomes (metrics, spans) calls it rather than
// deciding again.
func Outcome(ctx context.Context, job *tasuki.Job[json.RawMessage], err error) tasuki.EventType {
	if err == nil {
		return tasuki.EventCompleted
	}
	// What the handler chose says more than what ended its context: a
	// cancel over a snooze it wraps, either over a shutdown.
	var c *tasuki.CancelError
	if errors.As(err, &c) {
		return tasuki.EventCanceled
	}
	var s *tasuki.SnoozeError
	if errors.As(err, &s) {
		return tasuki.EventSnoozed
	}
	// Retrying cannot make a payload decode, unless a middleware chose to
	// retry it later.
	var d *tasuki.PayloadDecodeError
	var ra *tasuki.RetryAfterError
	if errors.As(err, &d) && !errors.As(err, &ra) {
		return tasuki.EventFailed
	}
	if errors.Is(context.Cause(ctx), ErrShutdown) {
		return tasuki.EventGivenBack
	}
	if job.Attempt >= job.MaxAttempts {
		return tasuki.EventFailed
	}
	return tasuki.EventRetried
}
