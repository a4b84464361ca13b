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
	// MaxRetention is the longest retention other than KeepForever: 100
	// years.
	MaxRetention = 100 * 365 * 24 * time.Hour
)

// Retention is how long finished jobs are kept after they finished, by
// status, before the workers' retention cleaner deletes them. It is a
// setting stored in the database, of a queue (Admin.SetRetention) or of
// the whole installation (Admin.SetDefaultRetention), so that every worker
// process cleans a queue by the same rule. For each field, KeepForever (-1)
// keeps the jobs, and a positive value up to MaxRetention keeps them that
// long. 0 means "not set": a queue's field then follows the installation's
// setting, and an installation's field tasuki's built-in default (24 h for
// completed jobs, 7 days for canceled and failed ones).
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
	case d < time.Microsecond || d > MaxRetention:
		return pgtype.Int8{}, &InvalidOptionError{Option: option, Value: d,
			Reason: "must be between 1µs and 100 years, 0 for the default or -1 (KeepForever) to keep such jobs forever"}
	}
	return pgtype.Int8{Int64: d.Microseconds(), Valid: true}, nil
}

// retentionFromColumn is the inverse of retentionColumn, with def for
// NULL.
func retentionFromColumn(v pgtype.Int8, def time.Duration) time.Duration {
	switch {
	case !v.Valid:
		return def
	case v.Int64 == -1:
		return KeepForever
	}
	return time.Duration(v.Int64) * time.Microsecond
}

// retentionFromColumns turns stored columns into a Retention, with def for
// the columns not set.
func retentionFromColumns(completed, canceled, failed pgtype.Int8, def Retention) Retention {
	return Retention{
		Completed: retentionFromColumn(completed, def.Completed),
		Canceled:  retentionFromColumn(canceled, def.Canceled),
		Failed:    retentionFromColumn(failed, def.Failed),
	}
}

// builtinRetention is tasuki's built-in default retention.
var builtinRetention = Retention{
	Completed: DefaultCompletedRetention,
	Canceled:  DefaultCanceledRetention,
	Failed:    DefaultFailedRetention,
}

// SetRetention sets how long the finished jobs of a queue are kept, for
// every worker process at once: the retention cleaner of any worker, of
// any queue, deletes this queue's jobs only by this setting. It replaces
// the queue's previous setting whole; a field left at 0 follows the
// installation's default (SetDefaultRetention), and a zero Retention
// removes the queue's own setting. A queue needs no jobs to have a setting
// (so a mistyped name is not an error). Admin.Stats shows each queue's
// retention in effect.
func (a *Admin) SetRetention(ctx context.Context, queue string, r Retention) error {
	_, _, err := a.changeRetention(ctx, queue, r.change(), "Retention")
	return err
}

// QueueRetention returns a queue's own retention setting as stored: a
// field not set is 0 (the installation's default applies). Admin.Stats
// gives the retention in effect instead.
func (a *Admin) QueueRetention(ctx context.Context, queue string) (Retention, error) {
	if err := ValidateQueue("queue", queue); err != nil {
		return Retention{}, err
	}
	r, err := a.queries.QueueRetention(ctx, queue)
	if err != nil {
		return Retention{}, dberr.Wrap(fmt.Sprintf("tasuki: read retention of queue %q", queue), err)
	}
	return retentionFromColumns(r.CompletedRetentionUs, r.CanceledRetentionUs, r.FailedRetentionUs, Retention{}), nil
}

// SetDefaultRetention sets how long finished jobs of the queues without a
// setting of their own (for that status) are kept, for every worker
// process at once. A field left at 0 follows tasuki's built-in default (24
// h for completed jobs, 7 days for canceled and failed ones); KeepForever
// everywhere turns cleaning off for every queue that does not ask for it.
func (a *Admin) SetDefaultRetention(ctx context.Context, r Retention) error {
	_, _, err := a.changeDefaultRetention(ctx, r.change(), "Retention")
	return err
}

// DefaultRetention returns the installation's default retention as stored:
// a field not set is 0 (tasuki's built-in default applies).
func (a *Admin) DefaultRetention(ctx context.Context) (Retention, error) {
	r, err := a.queries.SettingsRetention(ctx)
	if err != nil {
		return Retention{}, dberr.Wrap("tasuki: read the default retention", err)
	}
	return retentionFromColumns(r.CompletedRetentionUs, r.CanceledRetentionUs, r.FailedRetentionUs, Retention{}), nil
}

// RetentionChange changes some fields of a retention setting and keeps the
// others: a nil field is kept; a field pointing to 0 removes the setting
// of that status (it follows the default again), to KeepForever keeps such
// jobs forever, and to a positive duration up to MaxRetention keeps them
// that long.
type RetentionChange struct {
	// Completed is the new retention of completed jobs; nil keeps it.
	Completed *time.Duration
	// Canceled is the new retention of canceled jobs; nil keeps it.
	Canceled *time.Duration
	// Failed is the new retention of failed jobs; nil keeps it.
	Failed *time.Duration
}

// change is the RetentionChange that sets every field to r's.
func (r Retention) change() RetentionChange {
	return RetentionChange{Completed: &r.Completed, Canceled: &r.Canceled, Failed: &r.Failed}
}

// retentionColumns is a RetentionChange checked and turned into columns:
// set says which fields change.
type retentionColumns struct {
	completed, canceled, failed          pgtype.Int8
	setCompleted, setCanceled, setFailed bool
}

// columns checks c; prefix names its type in an *InvalidOptionError.
func (c RetentionChange) columns(prefix string) (cols retentionColumns, err error) {
	if cols.completed, cols.setCompleted, err = changeColumn(prefix+".Completed", c.Completed); err != nil {
		return cols, err
	}
	if cols.canceled, cols.setCanceled, err = changeColumn(prefix+".Canceled", c.Canceled); err != nil {
		return cols, err
	}
	cols.failed, cols.setFailed, err = changeColumn(prefix+".Failed", c.Failed)
	return cols, err
}

// changeColumn checks one field of a RetentionChange.
func changeColumn(option string, d *time.Duration) (col pgtype.Int8, set bool, err error) {
	if d == nil {
		return pgtype.Int8{}, false, nil
	}
	col, err = retentionColumn(option, *d)
	return col, true, err
}

// ChangeRetention changes the fields of a queue's retention setting that c
// sets, keeping the others, in one statement: two changes of different
// fields at once both take effect. It returns the queue's setting after
// the change, as stored (0: not set), and whether it changed.
func (a *Admin) ChangeRetention(ctx context.Context, queue string, c RetentionChange) (Retention, bool, error) {
	return a.changeRetention(ctx, queue, c, "RetentionChange")
}

func (a *Admin) changeRetention(ctx context.Context, queue string, c RetentionChange, prefix string) (Retention, bool, error) {
	if err := ValidateQueue("queue", queue); err != nil {
		return Retention{}, false, err
	}
	cols, err := c.columns(prefix)
	if err != nil {
		return Retention{}, false, err
	}
	r, err := a.queries.QueueChangeRetention(ctx, db.QueueChangeRetentionParams{
		Name: queue, CompletedUs: cols.completed, CanceledUs: cols.canceled, FailedUs: cols.failed,
		SetCompleted: cols.setCompleted, SetCanceled: cols.setCanceled, SetFailed: cols.setFailed,
	})
	if err != nil {
		return Retention{}, false, dberr.Wrap(fmt.Sprintf("tasuki: change retention of queue %q", queue), err)
	}
	return retentionFromColumns(r.CompletedRetentionUs, r.CanceledRetentionUs, r.FailedRetentionUs, Retention{}), r.Changed, nil
}

// ChangeDefaultRetention is ChangeRetention for the installation's default
// retention (SetDefaultRetention).
func (a *Admin) ChangeDefaultRetention(ctx context.Context, c RetentionChange) (Retention, bool, error) {
	return a.changeDefaultRetention(ctx, c, "RetentionChange")
}

func (a *Admin) changeDefaultRetention(ctx context.Context, c RetentionChange, prefix string) (Retention, bool, error) {
	cols, err := c.columns(prefix)
	if err != nil {
		return Retention{}, false, err
	}
	r, err := a.queries.SettingsChangeRetention(ctx, db.SettingsChangeRetentionParams{
		CompletedUs: cols.completed, CanceledUs: cols.canceled, FailedUs: cols.failed,
		SetCompleted: cols.setCompleted, SetCanceled: cols.setCanceled, SetFailed: cols.setFailed,
	})
	if err != nil {
		return Retention{}, false, dberr.Wrap("tasuki: change the default retention", err)
	}
	return retentionFromColumns(r.CompletedRetentionUs, r.CanceledRetentionUs, r.FailedRetentionUs, Retention{}), r.Changed, nil
}
