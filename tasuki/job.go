package tasuki

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"github.com/tasukiq/tasuki/db"
)

// Status is where a job is in its life.
type Status string

// The statuses a job can have.
const (
	// StatusPending: waiting for its scheduled time or for a worker. A job
	// waiting to be retried is pending with a later ScheduledAt.
	StatusPending Status = "pending"
	// StatusRunning: leased by a worker whose handler is running it.
	StatusRunning Status = "running"
	// StatusCompleted: its handler returned nil.
	StatusCompleted Status = "completed"
	// StatusFailed: out of attempts, or its payload could not be decoded.
	StatusFailed Status = "failed"
	// StatusCanceled: canceled by its handler or by an operator.
	StatusCanceled Status = "canceled"
)

// Finished reports whether s is a final status: completed, failed or canceled.
func (s Status) Finished() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCanceled
}

// AttemptError is one failed attempt in a job's error history.
type AttemptError struct {
	// Attempt is the attempt that failed, counting from 1.
	Attempt int `json:"attempt"`
	// At is when the failure was recorded, by the database clock.
	At time.Time `json:"at"`
	// Error is the handler's error text (with the stack, for a panic).
	Error string `json:"error"`
}

// Job is a job with its payload decoded into T, as stored in the database.
type Job[T any] struct {
	// ID identifies the job; ids grow with insertion order.
	ID int64
	// Queue is the queue the job belongs to.
	Queue string
	// Kind names the job's payload type: see Kinder.
	Kind string
	// Status is the job's status when it was read.
	Status Status
	// Priority orders runnable jobs: lower runs first. 0 is the default.
	Priority int
	// Payload is the job's data.
	Payload T
	// Attempt counts the attempts so far: 1 during the first run. A snooze
	// (see [Snooze]) gives its attempt back: the run after it has the same
	// Attempt, and a larger Snoozes.
	Attempt int
	// Snoozes counts how often the job was snoozed: 0 until it is.
	Snoozes int
	// MaxAttempts is how many attempts the job may have before it fails.
	MaxAttempts int
	// ScheduledAt is when the job becomes (or became) runnable.
	ScheduledAt time.Time
	// CreatedAt is when the job was inserted.
	CreatedAt time.Time
	// AttemptedAt is when the latest attempt started; nil before the first.
	AttemptedAt *time.Time
	// FinishedAt is when the job reached a final status; nil before that.
	FinishedAt *time.Time
	// Errors is the history of failed attempts, oldest first.
	Errors []AttemptError
	// Metadata is the JSON object InsertOpts.Metadata gave; "{}" when unset.
	Metadata json.RawMessage
	// UniqueKey is the key of a job inserted as unique (see UniqueOpts):
	// a SHA-256 of what its insert counted. nil otherwise.
	UniqueKey []byte
	// Timeout is the job's own timeout (InsertOpts.Timeout); 0: its
	// kind's.
	Timeout time.Duration
	// Duplicate is set on the job a unique insert returns when it found
	// this job existing instead of inserting one (see UniqueOpts).
	Duplicate bool
}

// LastError is the most recent failed attempt's error text, or "".
func (j *Job[T]) LastError() string {
	if len(j.Errors) == 0 {
		return ""
	}
	return j.Errors[len(j.Errors)-1].Error
}

// PayloadDecodeError says that a stored payload does not decode into the
// payload type. A worker fails such a job at once: retrying cannot help.
type PayloadDecodeError struct {
	// JobID is the job whose payload did not decode.
	JobID int64
	// Type is the Go type the payload was decoded into.
	Type string
	// Err is the JSON decoder's error.
	Err error
}

func (e *PayloadDecodeError) Error() string {
	return fmt.Sprintf("tasuki: payload of job %d does not decode into %s: %v", e.JobID, e.Type, e.Err)
}

func (e *PayloadDecodeError) Unwrap() error { return e.Err }

// LogValue describes the error for log/slog without any of the payload:
// encoding/json's messages quote the values they could not decode.
func (e *PayloadDecodeError) LogValue() slog.Value {
	var cause string
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(e.Err, &typeErr):
		kind, _, _ := strings.Cut(typeErr.Value, " ")
		cause = fmt.Sprintf("a JSON %s cannot decode into %s (field %q)", kind, typeErr.Type, typeErr.Field)
	case errors.As(e.Err, &syntaxErr):
		cause = fmt.Sprintf("invalid JSON at offset %d", syntaxErr.Offset)
	default:
		cause = fmt.Sprintf("%T", e.Err)
	}
	return slog.GroupValue(
		slog.Int64("job_id", e.JobID),
		slog.String("type", e.Type),
		slog.String("cause", cause),
	)
}

// jobFromRow converts a stored row into a Job, decoding its payload into
// T. A payload that does not decode gives a *PayloadDecodeError together
// with the job (its Payload left at the zero value).
func jobFromRow[T any](row *db.TasukiJob) (*Job[T], error) {
	raw := &Job[json.RawMessage]{
		ID: row.ID, Queue: row.Queue, Kind: row.Kind, Status: Status(row.Status), Priority: int(row.Priority),
		Payload: json.RawMessage(row.Payload), Attempt: int(row.Attempts), Snoozes: int(row.Snoozes), MaxAttempts: int(row.MaxAttempts),
		ScheduledAt: row.ScheduledAt, CreatedAt: row.CreatedAt, AttemptedAt: row.AttemptedAt,
		FinishedAt: row.FinishedAt, Metadata: json.RawMessage(row.Metadata),
		UniqueKey: row.UniqueKey, Timeout: time.Duration(row.TimeoutMs.Int64) * time.Millisecond,
	}
	if len(row.Errors) > 2 { // "[]" is the empty history
		if err := json.Unmarshal(row.Errors, &raw.Errors); err != nil {
			job, _ := Decode[T](raw)
			return job, fmt.Errorf("tasuki: error history of job %d: %w", row.ID, err)
		}
	}
	return Decode[T](raw)
}

// Decode returns job with its payload decoded into T; every other field is
// job's own. A job read as raw JSON (by Admin, say) becomes a typed one
// this way. A payload that does not decode gives a *PayloadDecodeError
// together with the job (its Payload left at the zero value).
func Decode[T any](job *Job[json.RawMessage]) (*Job[T], error) {
	out := &Job[T]{
		ID: job.ID, Queue: job.Queue, Kind: job.Kind, Status: job.Status, Priority: job.Priority,
		Attempt: job.Attempt, Snoozes: job.Snoozes, MaxAttempts: job.MaxAttempts, ScheduledAt: job.ScheduledAt,
		CreatedAt: job.CreatedAt, AttemptedAt: job.AttemptedAt, FinishedAt: job.FinishedAt,
		Errors: job.Errors, Metadata: job.Metadata, UniqueKey: job.UniqueKey, Timeout: job.Timeout,
		Duplicate: job.Duplicate,
	}
	if err := json.Unmarshal(job.Payload, &out.Payload); err != nil {
		return out, &PayloadDecodeError{JobID: job.ID, Type: typeName[T](), Err: err}
	}
	return out, nil
}

func typeName[T any]() string {
	return reflect.TypeOf((*T)(nil)).Elem().String()
}
