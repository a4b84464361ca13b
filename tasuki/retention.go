package tasuki

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
)

// Retention defaults: how long finished jobs of a queue without a
// retention setting of its own are kept.
const (
	// DefaultCompletedRetention is how long completed jobs are kept.
	DefaultCompletedRetention = 24 * time.Hour
	// DefaultCanceledRetention is how long canceled jobs are kept.
	DefaultCanceledRetention = 7 * 24 * time.Hour
	// DefaultFailedRetention is how long failed jobs are kept.
	DefaultFailedRetention = 7 * 24 * time.Hour
	// KeepForever, as a retention, keeps the finished jobs of that status
	// forever.
	KeepForever time.Duration = -1
)

// Retention is how long a queue's finished jobs are kept after they
// finished, by status, before the workers' retention cleaner deletes them.
// It is a setting of the queue, stored in the database (Admin.SetRetention),
// so that every worker process cleans the queue by the same rule. For each
// field, 0 means tasuki's default (24 h for completed jobs, 7 days for
// canceled and failed ones) and KeepForever (-1) keeps the jobs; any other
// value must be positive.
type Retention struct {
	// Completed is how long completed jobs are kept. Defaults to 24 h.
	Completed time.Duration
	// Canceled is how long canceled jobs are kept. Defaults to 7 days.
	Canceled time.Duration
	// Failed is how long failed jobs are kept. Defaults to 7 days.
	Failed time.Duration
}

// retentionColumn turns a Retention field into its database value: NULL
// for the default, -1 for forever, else microseconds (at least 1).
func retentionColumn(option string, d time.Duration) (pgtype.Int8, error) {
	switch {
	case d == 0:
		return pgtype.Int8{}, nil
	case d == KeepForever:
		return pgtype.Int8{Int64: -1, Valid: true}, nil
	case d < time.Microsecond:
		return pgtype.Int8{}, &InvalidOptionError{Option: option, Value: d,
			Reason: "must be at least 1µs, 0 for the default or -1 (KeepForever) to keep such jobs forever"}
	}
	return pgtype.Int8{Int64: d.Microseconds(), Valid: true}, nil
}

// retentionFromColumn is the inverse of retentionColumn, with the
// default filled in for NULL.
func retentionFromColumn(v pgtype.Int8, def time.Duration) time.Duration {
	switch {
	case !v.Valid:
		return def
	case v.Int64 == -1:
		return KeepForever
	}
	return time.Duration(v.Int64) * time.Microsecond
}

// SetRetention sets how long the finished jobs of a queue are kept, for
// every worker process at once: the retention cleaner of any worker, of
// any queue, deletes this queue's jobs only by this setting. It replaces
// the queue's previous setting whole; a zero Retention goes back to the
// defaults. A queue needs no jobs to have a setting. Admin.Stats shows
// each queue's retention in effect.
func (a *Admin) SetRetention(ctx context.Context, queue string, r Retention) error {
	if err := ValidateQueue("queue", queue); err != nil {
		return err
	}
	p := db.QueueSetRetentionParams{Name: queue}
	var err error
	if p.CompletedUs, err = retentionColumn("Retention.Completed", r.Completed); err != nil {
		return err
	}
	if p.CanceledUs, err = retentionColumn("Retention.Canceled", r.Canceled); err != nil {
		return err
	}
	if p.FailedUs, err = retentionColumn("Retention.Failed", r.Failed); err != nil {
		return err
	}
	if err := a.queries.QueueSetRetention(ctx, p); err != nil {
		return dberr.Wrap(fmt.Sprintf("tasuki: set retention of queue %q", queue), err)
	}
	return nil
}
