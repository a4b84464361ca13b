package tasuki

import (
	"fmt"

	"github.com/tasukiq/tasuki/internal/dberr"
)

// ErrSchemaMissing is wrapped by every error that comes from a database
// without tasuki's schema, or with the schema of an older version of
// tasuki (a migration not applied). Its text says how to apply the
// migrations; test for it with errors.Is.
var ErrSchemaMissing = dberr.ErrSchemaMissing

// ErrPermissionDenied is wrapped by every error that comes from the
// connecting role lacking a privilege tasuki needs; test for it with
// errors.Is. A worker does not start without the privileges it needs.
var ErrPermissionDenied = dberr.ErrPermissionDenied

// InvalidOptionError says that an option or configuration field holds a
// value tasuki cannot use. Nothing was written to the database.
type InvalidOptionError struct {
	// Option names the field, e.g. "InsertOpts.MaxAttempts".
	Option string
	// Value is the rejected value.
	Value any
	// Reason says what is allowed.
	Reason string
}

func (e *InvalidOptionError) Error() string {
	return fmt.Sprintf("tasuki: invalid %s %#v: %s", e.Option, e.Value, e.Reason)
}

// InvalidPayloadError says that a payload cannot be stored: it does not
// encode to JSON, it is larger than the client's limit, or it holds a NUL
// character, which PostgreSQL's jsonb cannot store. Nothing was written.
type InvalidPayloadError struct {
	// Type is the payload's Go type.
	Type string
	// Reason says what is wrong.
	Reason string
	// Err is the underlying error, if any.
	Err error
}

func (e *InvalidPayloadError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("tasuki: cannot store payload of type %s: %s: %v", e.Type, e.Reason, e.Err)
	}
	return fmt.Sprintf("tasuki: cannot store payload of type %s: %s", e.Type, e.Reason)
}

func (e *InvalidPayloadError) Unwrap() error { return e.Err }

// UniqueConflictError says that a unique job cannot be put back to wait
// (Admin.Retry) while another job holds its unique key: the two would run
// as duplicates.
type UniqueConflictError struct {
	// JobID is the job that was to be retried.
	JobID int64
	// HolderID is the job that holds the key; 0 when it was not found
	// (it changed meanwhile: try again).
	HolderID int64
	// HolderStatus is the holder's status.
	HolderStatus Status
}

func (e *UniqueConflictError) Error() string {
	if e.HolderID == 0 {
		return fmt.Sprintf("tasuki: job %d was not retried: another job took its unique key meanwhile; try again", e.JobID)
	}
	return fmt.Sprintf("tasuki: job %d was not retried: job %d (%s) holds its unique key; retry that one, or cancel or delete it first", e.JobID, e.HolderID, e.HolderStatus)
}
