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

// ErrJobNotFound says that no job has the given id.
var ErrJobNotFound = errors.New("tasuki: job not found")

// ErrQueueNotFound says that tasuki knows no queue of the given name: it
// has no jobs and was never paused.
var ErrQueueNotFound = errors.New("tasuki: queue not found")
