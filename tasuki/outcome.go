package tasuki

import (
	"errors"
	"fmt"
	"time"
)

// CancelError is returned by [Cancel]. A worker that receives it from a
// handler cancels the job at once, without further attempts.
type CancelError struct {
	// Err is why the job was canceled; it is recorded in the job's history.
	Err error
}

func (e *CancelError) Error() string {
	if e.Err == nil {
		return "job canceled by its handler"
	}
	return "job canceled by its handler: " + e.Err.Error()
}

func (e *CancelError) Unwrap() error { return e.Err }

// Cancel wraps err so that a handler returning it cancels its job for good.
// err may be nil.
func Cancel(err error) error { return &CancelError{Err: err} }

// RetryAfterError is returned by [RetryAfter]. A worker that receives it
// from a handler retries the job after Delay instead of its usual backoff.
type RetryAfterError struct {
	// Delay is how long to wait before the next attempt.
	Delay time.Duration
	// Err is why; it is recorded in the job's history.
	Err error
}

func (e *RetryAfterError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("retry after %s", e.Delay)
	}
	return fmt.Sprintf("retry after %s: %s", e.Delay, e.Err)
}

func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter wraps err so that a handler returning it has its job retried
// after delay (negative counts as 0), still within the job's max attempts.
// err may be nil.
func RetryAfter(delay time.Duration, err error) error {
	if delay < 0 {
		delay = 0
	}
	return &RetryAfterError{Delay: delay, Err: err}
}

// SnoozeError is returned by [Snooze]. A worker that receives it from a
// handler puts the job back to pending for Delay: the attempt is not
// counted against the job's max attempts and records no error, and the
// job's Snoozes count grows by one.
type SnoozeError struct {
	// Delay is how long the job waits before it runs again.
	Delay time.Duration
}

func (e *SnoozeError) Error() string { return fmt.Sprintf("job snoozed for %s", e.Delay) }

// Snooze returns an error that has its job wait delay (negative counts as
// 0) and run again, as if this attempt had not happened: for a job that
// finds it cannot run yet (a resource is busy, an upstream is not ready)
// and is not failing. The handler tells a snoozed run from a first one by
// [Job.Snoozes]; [Job.Attempt] stays as it was. Use [RetryAfter] instead
// when the attempt failed. A job can be snoozed any number of times.
func Snooze(delay time.Duration) error {
	if delay < 0 {
		delay = 0
	}
	return &SnoozeError{Delay: delay}
}

// ErrJobNotFound says that no job has the given id.
var ErrJobNotFound = errors.New("tasuki: job not found")

// ErrQueueNotFound says that tasuki knows no queue of the given name: it
// has no jobs and was never paused.
var ErrQueueNotFound = errors.New("tasuki: queue not found")
