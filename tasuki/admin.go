package tasuki

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
)

// Defaults and limits of the Admin's parameters.
const (
	// DefaultListLimit is how many jobs List returns per page by default.
	DefaultListLimit = 100
	// MaxListLimit is the most jobs List returns per page.
	MaxListLimit = 10_000
	// DefaultCleanBatchSize is how many jobs Clean deletes per statement by
	// default.
	DefaultCleanBatchSize = 1000
	// MaxCleanBatchSize is the most jobs Clean deletes per statement.
	MaxCleanBatchSize = 100_000
)

// adminReason is recorded in the history of a job canceled through the API.
const adminReason = "by request"

// Admin reads and manages the jobs of every queue and kind, whatever their
// payload type: statistics, listing, cancel, retry, deletion, cleaning,
// pausing queues and the live worker processes. Payloads are returned
// undecoded, as json.RawMessage (Decode makes a typed job of one). It is
// what the tasuki command's stats, list, show, cancel, retry, clean, pause,
// resume and processes use. It is safe for concurrent use.
type Admin struct {
	pool    *pgxpool.Pool
	queries *db.Queries
}

// NewAdmin returns an Admin that uses pool. It does not touch the database.
func NewAdmin(pool *pgxpool.Pool) (*Admin, error) {
	if pool == nil {
		return nil, &InvalidOptionError{Option: "pool", Value: nil, Reason: "a *pgxpool.Pool is required"}
	}
	return &Admin{pool: pool, queries: db.New(pool)}, nil
}

// JobStatusError says that an operation does not apply to a job in its
// current status: retrying a job that is not failed or canceled, or
// deleting one that is not finished. Nothing was changed. Canceling a
// finished job gives a *JobFinishedError instead.
type JobStatusError struct {
	// JobID is the job.
	JobID int64
	// Status is its status when the operation was refused.
	Status Status
	// Op is the refused operation: "retry" or "delete".
	Op string
}

func (e *JobStatusError) Error() string {
	switch e.Op {
	case "retry":
		return fmt.Sprintf("tasuki: cannot retry job %d: it is %s; only failed or canceled jobs can be retried", e.JobID, e.Status)
	case "delete":
		return fmt.Sprintf("tasuki: cannot delete job %d: it is %s; only finished (completed, failed or canceled) jobs can be deleted; cancel it first", e.JobID, e.Status)
	}
	return fmt.Sprintf("tasuki: cannot %s job %d: it is %s", e.Op, e.JobID, e.Status)
}

// jobNotFoundError names the job that was not found; it matches
// ErrJobNotFound with errors.Is.
type jobNotFoundError struct{ id int64 }

func (e *jobNotFoundError) Error() string        { return fmt.Sprintf("tasuki: job %d not found", e.id) }
func (e *jobNotFoundError) Is(target error) bool { return target == ErrJobNotFound }

// QueueStats describes one queue at one moment.
type QueueStats struct {
	// Queue is the queue's name.
	Queue string
	// Pending, Running, Completed, Failed and Canceled count the queue's
	// jobs in each status, of every kind; 0 when there are none.
	Pending, Running, Completed, Failed, Canceled int64
	// OldestRunnableAge is how long the runnable job that has waited
	// longest (pending, with its scheduled time passed) has been waiting
	// since its scheduled time, by the database clock; 0 when no job is
	// runnable. A growing value means the queue's workers fall behind, or
	// that there are none, or that the queue is paused.
	OldestRunnableAge time.Duration
	// Paused reports whether the queue is paused: its workers lease nothing
	// new.
	Paused bool
	// PausedAt is when the queue was paused; nil when it is not.
	PausedAt *time.Time
	// Retention is how long the queue's finished jobs are kept: its own
	// setting (Admin.SetRetention), else the installation's
	// (Admin.SetDefaultRetention), else tasuki's built-in default;
	// KeepForever for a status kept forever.
	Retention Retention
	// Processes is how many live worker processes work the queue (for
	// some of its kinds at least); see Admin.Processes.
	Processes int
	// Kinds are the kinds of the queue's jobs, ordered by name, each with
	// its own figures; empty when the queue has no jobs.
	Kinds []KindStats
}

// Total is the number of the queue's jobs in any status.
func (s QueueStats) Total() int64 {
	return s.Pending + s.Running + s.Completed + s.Failed + s.Canceled
}

// UnhandledKinds are the kinds of the queue's Kinds that are Unhandled:
// they have pending jobs that no live worker process handles. Empty when
// every kind with pending jobs has a worker.
func (s QueueStats) UnhandledKinds() []string {
	var kinds []string
	for _, k := range s.Kinds {
		if k.Unhandled {
			kinds = append(kinds, k.Kind)
		}
	}
	return kinds
}

// KindStats describes the jobs of one kind in one queue at one moment.
type KindStats struct {
	// Kind is the jobs' kind.
	Kind string
	// Pending, Running, Completed, Failed and Canceled count the jobs of
	// the kind in the queue in each status; 0 when there are none.
	Pending, Running, Completed, Failed, Canceled int64
	// OldestRunnableAge is QueueStats.OldestRunnableAge for the jobs of
	// this kind alone.
	OldestRunnableAge time.Duration
	// Processes is how many live worker processes handle this kind in
	// this queue: they list both (see Admin.Processes).
	Processes int
	// Unhandled reports that the kind has pending jobs in the queue and
	// no live worker process handles it (Processes is 0): those jobs wait
	// until a worker process with a handler for the kind works the queue.
	// Either no such process runs (not deployed, crashed, or registered
	// under another kind name), or the jobs were inserted under a kind
	// nobody handles (a misspelt or renamed kind).
	Unhandled bool
}

// Total is the number of the kind's jobs in the queue in any status.
func (s KindStats) Total() int64 {
	return s.Pending + s.Running + s.Completed + s.Failed + s.Canceled
}

// Stats returns every queue that has jobs or has been paused (or has a
// retention setting), ordered by name, with its jobs counted by status, in
// all and per kind, and which of its kinds no live worker process handles
// (KindStats.Unhandled, QueueStats.UnhandledKinds). An empty database
// gives an empty slice. It reads every job once, in one statement, so on a
// table of many millions it takes a while; it takes no locks that would
// hold up workers.
func (a *Admin) Stats(ctx context.Context) ([]QueueStats, error) {
	rows, err := a.queries.QueueKindStats(ctx, nil)
	if err != nil {
		return nil, dberr.Wrap("tasuki: read queue statistics", err)
	}
	// One row per queue and kind, ordered by queue: a queue's counts are
	// the sums of its rows.
	out := []QueueStats{}
	for _, r := range rows {
		if len(out) == 0 || out[len(out)-1].Queue != r.Queue {
			out = append(out, QueueStats{
				Queue:     r.Queue,
				Paused:    r.PausedAt != nil,
				PausedAt:  r.PausedAt,
				Processes: int(r.QueueProcesses),
				Retention: retentionFromColumns(r.CompletedRetentionUs, r.CanceledRetentionUs, r.FailedRetentionUs,
					retentionFromColumns(r.DefaultCompletedRetentionUs, r.DefaultCanceledRetentionUs, r.DefaultFailedRetentionUs, builtinRetention)),
			})
		}
		if r.Kind == "" { // a queue without jobs
			continue
		}
		k := KindStats{
			Kind:              r.Kind,
			Pending:           r.Pending,
			Running:           r.Running,
			Completed:         r.Completed,
			Failed:            r.Failed,
			Canceled:          r.Canceled,
			OldestRunnableAge: time.Duration(r.OldestRunnableUs) * time.Microsecond,
			Processes:         int(r.KindProcesses),
			Unhandled:         r.Pending > 0 && r.KindProcesses == 0,
		}
		q := &out[len(out)-1]
		q.Pending += k.Pending
		q.Running += k.Running
		q.Completed += k.Completed
		q.Failed += k.Failed
		q.Canceled += k.Canceled
		q.OldestRunnableAge = max(q.OldestRunnableAge, k.OldestRunnableAge)
		q.Kinds = append(q.Kinds, k)
	}
	return out, nil
}

// Process is a worker process, as it records itself while it runs.
type Process struct {
	// ID identifies the process: a UUID it chose when it started.
	ID string
	// Host and PID are the host name and process id it runs as.
	Host string
	PID  int
	// Queues and Kinds are what it works: it leases the jobs of each of
	// its kinds from each of its queues.
	Queues, Kinds []string
	// StartedAt is when it started.
	StartedAt time.Time
	// ExpiresAt is when it counts as dead unless it renews its record
	// before then, as it does while it runs.
	ExpiresAt time.Time
}

// Handles reports whether the process works the jobs of kind in queue.
func (p Process) Handles(queue, kind string) bool {
	return slices.Contains(p.Queues, queue) && slices.Contains(p.Kinds, kind)
}

// Processes returns the live worker processes, those whose record has not
// expired, ordered by host and pid. A process that stopped cleanly has
// removed its record; one that died drops out once its record expires.
// None running gives an empty slice.
func (a *Admin) Processes(ctx context.Context) ([]Process, error) {
	rows, err := a.queries.ProcessListLive(ctx, nil)
	if err != nil {
		return nil, dberr.Wrap("tasuki: list worker processes", err)
	}
	out := make([]Process, 0, len(rows))
	for _, r := range rows {
		out = append(out, Process{
			ID: r.ID, Host: r.Host, PID: int(r.Pid), Queues: r.Queues, Kinds: r.Kinds,
			StartedAt: r.StartedAt, ExpiresAt: r.ExpiresAt,
		})
	}
	return out, nil
}

// ListParams selects the jobs List returns. The zero value lists the newest
// 100 jobs of every queue and kind.
type ListParams struct {
	// Queue keeps only the jobs of this queue. Defaults to "", every queue.
	Queue string
	// Kind keeps only the jobs of this kind. Defaults to "", every kind.
	Kind string
	// Statuses keeps only jobs in one of these statuses. Defaults to none,
	// every status.
	Statuses []Status
	// CreatedAfter, when not zero, keeps only jobs created at or after it.
	CreatedAfter time.Time
	// CreatedBefore, when not zero, keeps only jobs created before it.
	CreatedBefore time.Time
	// Limit is the most jobs on one page: 1 to 10000. Defaults to 100.
	Limit int
	// After is the cursor: the Next of the previous page. Defaults to 0,
	// the first page, which starts with the newest job.
	After int64
}

// ListPage is one page of List's result.
type ListPage struct {
	// Jobs are the page's jobs, newest first.
	Jobs []*Job[json.RawMessage]
	// Next is the cursor for the next page, to pass as ListParams.After
	// with the same filters; 0 when this is the last page.
	Next int64
}

// List returns jobs newest first (in the order of their ids, which grow
// with insertion), one page at a time. Pages are cut by id, so every job
// that exists throughout a walk through the pages appears on exactly one
// page, whatever the jobs' creation times; jobs inserted during the walk
// appear only if the first page is read again.
func (a *Admin) List(ctx context.Context, p ListParams) (ListPage, error) {
	switch {
	case p.Limit == 0:
		p.Limit = DefaultListLimit
	case p.Limit < 0 || p.Limit > MaxListLimit:
		return ListPage{}, &InvalidOptionError{Option: "ListParams.Limit", Value: p.Limit, Reason: "must be between 1 and 10000 (0 means the default, 100)"}
	}
	if p.After < 0 {
		return ListPage{}, &InvalidOptionError{Option: "ListParams.After", Value: p.After, Reason: "must be the Next of a previous page, or 0 for the first page"}
	}
	if !p.CreatedAfter.IsZero() && !p.CreatedBefore.IsZero() && !p.CreatedAfter.Before(p.CreatedBefore) {
		return ListPage{}, &InvalidOptionError{Option: "ListParams.CreatedAfter", Value: p.CreatedAfter,
			Reason: fmt.Sprintf("must be before CreatedBefore (%s)", p.CreatedBefore.Format(time.RFC3339))}
	}
	if err := validateOptionalQueue("ListParams.Queue", p.Queue); err != nil {
		return ListPage{}, err
	}
	if err := validateOptionalKind("ListParams.Kind", p.Kind); err != nil {
		return ListPage{}, err
	}
	if err := validateOptionalTime("ListParams.CreatedAfter", p.CreatedAfter); err != nil {
		return ListPage{}, err
	}
	if err := validateOptionalTime("ListParams.CreatedBefore", p.CreatedBefore); err != nil {
		return ListPage{}, err
	}
	statuses, err := statusFilter("ListParams.Statuses", p.Statuses, allStatuses, nil)
	if err != nil {
		return ListPage{}, err
	}
	params := db.JobListParams{
		Queue:    optionalText(p.Queue),
		Kind:     optionalText(p.Kind),
		Statuses: statuses,
		Max:      int32(p.Limit + 1), // one more tells whether a next page exists
	}
	if !p.CreatedAfter.IsZero() {
		params.CreatedAfter = &p.CreatedAfter
	}
	if !p.CreatedBefore.IsZero() {
		params.CreatedBefore = &p.CreatedBefore
	}
	if p.After != 0 {
		params.BeforeID = pgtype.Int8{Int64: p.After, Valid: true}
	}
	rows, err := a.queries.JobList(ctx, params)
	if err != nil {
		return ListPage{}, dberr.Wrap("tasuki: list jobs", err)
	}
	var page ListPage
	if len(rows) > p.Limit {
		rows = rows[:p.Limit]
		page.Next = rows[len(rows)-1].ID
	}
	page.Jobs = make([]*Job[json.RawMessage], 0, len(rows))
	for i := range rows {
		job, err := jobFromRow[json.RawMessage](rows[i])
		if err != nil {
			return ListPage{}, err
		}
		page.Jobs = append(page.Jobs, job)
	}
	return page, nil
}

// Get returns the job with the given id, with its error history; an error
// wrapping ErrJobNotFound when there is none.
func (a *Admin) Get(ctx context.Context, id int64) (*Job[json.RawMessage], error) {
	row, err := a.queries.JobGet(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, &jobNotFoundError{id: id}
	}
	if err != nil {
		return nil, dberr.Wrap(fmt.Sprintf("tasuki: get job %d", id), err)
	}
	return jobFromRow[json.RawMessage](row)
}

// Cancel cancels a pending or running job and returns it as stored, with
// "canceled: by request" added to its history. A running job's handler
// sees its context canceled promptly (through a NOTIFY; at worst at its
// worker's next heartbeat), and its late result cannot overwrite the
// cancellation. A finished job is left unchanged and gives a
// *JobFinishedError; an unknown id an error wrapping ErrJobNotFound.
func (a *Admin) Cancel(ctx context.Context, id int64) (*Job[json.RawMessage], error) {
	row, err := cancelJob(ctx, a.queries, id, adminReason)
	if err != nil {
		return nil, err
	}
	return jobFromRow[json.RawMessage](row)
}

// JobFilter selects jobs for CancelMany and RetryMany. A job must match
// every field that is set; at least Queue, Kind or IDs must be set, so
// that an empty filter never touches every job of every queue by mistake.
type JobFilter struct {
	// Queue keeps only the jobs of this queue. "" means every queue.
	Queue string
	// Kind keeps only the jobs of this kind. "" means every kind.
	Kind string
	// Statuses keeps only jobs in one of these statuses. Each operation
	// allows some and defaults to all of those: pending and running for
	// CancelMany, failed and canceled for RetryMany.
	Statuses []Status
	// IDs keeps only the jobs with these ids. Empty means any id.
	IDs []int64
}

// checkedFilter is a JobFilter as the statements take it.
type checkedFilter struct {
	queue, kind pgtype.Text
	statuses    []string
	ids         []int64
}

func (f JobFilter) check(allowed []Status) (checkedFilter, error) {
	if f.Queue == "" && f.Kind == "" && len(f.IDs) == 0 {
		return checkedFilter{}, &InvalidOptionError{Option: "JobFilter", Value: f,
			Reason: "set Queue, Kind or IDs (or several): an empty filter would match the jobs of every queue"}
	}
	if err := validateOptionalQueue("JobFilter.Queue", f.Queue); err != nil {
		return checkedFilter{}, err
	}
	if err := validateOptionalKind("JobFilter.Kind", f.Kind); err != nil {
		return checkedFilter{}, err
	}
	statuses, err := statusFilter("JobFilter.Statuses", f.Statuses, allowed, allowed)
	if err != nil {
		return checkedFilter{}, err
	}
	ids := f.IDs
	if ids == nil {
		ids = []int64{}
	}
	return checkedFilter{queue: optionalText(f.Queue), kind: optionalText(f.Kind), statuses: statuses, ids: ids}, nil
}

// CancelMany cancels every pending or running job that matches f, in one
// statement, and returns how many it canceled. Handlers of running jobs
// are told as by Cancel. Finished jobs are never changed, even those that
// finish while CancelMany runs. f.Statuses may hold pending and running.
func (a *Admin) CancelMany(ctx context.Context, f JobFilter) (int64, error) {
	cf, err := f.check([]Status{StatusPending, StatusRunning})
	if err != nil {
		return 0, err
	}
	r, err := a.queries.JobCancelMany(ctx, db.JobCancelManyParams{
		Statuses: cf.statuses,
		Queue:    cf.queue,
		Kind:     cf.kind,
		Ids:      cf.ids,
		Reason:   adminReason,
	})
	if err != nil {
		return 0, dberr.Wrap("tasuki: cancel jobs", err)
	}
	return r.Canceled, nil
}

// Retry puts a failed or canceled job back to pending, runnable at once,
// and returns it as stored: its attempts start again from 0 (it gets its
// full MaxAttempts), its finish time is cleared and its error history is
// kept. Workers of its queue are woken. A job in another status gives a
// *JobStatusError; an unknown id an error wrapping ErrJobNotFound.
func (a *Admin) Retry(ctx context.Context, id int64) (*Job[json.RawMessage], error) {
	var row *db.TasukiJob
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		q := a.queries.WithTx(tx)
		var err error
		row, err = q.JobRetry(ctx, db.JobRetryParams{ID: id})
		if err != nil {
			return err
		}
		return q.NotifyInsert(ctx, row.Queue)
	})
	if errors.Is(err, pgx.ErrNoRows) || dberr.UniqueViolation(err) {
		job, err := a.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if job.Status != StatusFailed && job.Status != StatusCanceled {
			return nil, &JobStatusError{JobID: id, Status: job.Status, Op: "retry"}
		}
		conflict := &UniqueConflictError{JobID: id}
		if job.UniqueKey != nil {
			if holder, err := a.queries.JobByUniqueKey(ctx, job.UniqueKey); err == nil {
				conflict.HolderID, conflict.HolderStatus = holder.ID, Status(holder.Status)
			}
		}
		return nil, conflict
	}
	if err != nil {
		return nil, dberr.Wrap(fmt.Sprintf("tasuki: retry job %d", id), err)
	}
	return jobFromRow[json.RawMessage](row)
}

// RetryMany retries, as Retry does, every failed or canceled job that
// matches f, in one statement, and returns how many it retried. The
// workers of every queue concerned are woken. f.Statuses may hold failed
// and canceled. A unique job whose key another job holds is left as it
// is, and of several matching jobs with one unique key only the newest is
// retried. When a unique insert took a key at the same moment, nothing is
// retried and the error wraps a *UniqueConflictError: try again.
func (a *Admin) RetryMany(ctx context.Context, f JobFilter) (int64, error) {
	cf, err := f.check([]Status{StatusFailed, StatusCanceled})
	if err != nil {
		return 0, err
	}
	r, err := a.queries.JobRetryMany(ctx, db.JobRetryManyParams{
		Statuses: cf.statuses,
		Queue:    cf.queue,
		Kind:     cf.kind,
		Ids:      cf.ids,
	})
	if dberr.UniqueViolation(err) {
		return 0, fmt.Errorf("tasuki: retry jobs: %w", &UniqueConflictError{})
	}
	if err != nil {
		return 0, dberr.Wrap("tasuki: retry jobs", err)
	}
	return r.Retried, nil
}

// Delete deletes a finished job and returns it as it was. A pending or
// running job is left alone and gives a *JobStatusError (cancel it first);
// an unknown id gives an error wrapping ErrJobNotFound.
func (a *Admin) Delete(ctx context.Context, id int64) (*Job[json.RawMessage], error) {
	row, err := a.queries.JobDeleteFinished(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		job, err := a.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		return nil, &JobStatusError{JobID: id, Status: job.Status, Op: "delete"}
	}
	if err != nil {
		return nil, dberr.Wrap(fmt.Sprintf("tasuki: delete job %d", id), err)
	}
	return jobFromRow[json.RawMessage](row)
}

// CleanParams selects the finished jobs Clean deletes.
type CleanParams struct {
	// Queue keeps only the jobs of this queue. Defaults to "", every queue.
	Queue string
	// Kind keeps only the jobs of this kind. Defaults to "", every kind.
	Kind string
	// Statuses keeps only jobs in one of these finished statuses. Defaults
	// to all three: completed, failed and canceled.
	Statuses []Status
	// FinishedBefore deletes only jobs that finished before this time.
	// Required: to delete every finished job, pass time.Now() or later.
	FinishedBefore time.Time
	// BatchSize is the most jobs one statement deletes: 1 to 100000.
	// Smaller batches hold locks for less time. Defaults to 1000.
	BatchSize int
	// OnBatch, when set, is called after each batch that deleted jobs, with
	// the number deleted so far. It runs on Clean's goroutine.
	OnBatch func(deleted int64)
}

func (p CleanParams) check() (db.JobDeleteFinishedBatchParams, error) {
	if p.FinishedBefore.IsZero() {
		return db.JobDeleteFinishedBatchParams{}, &InvalidOptionError{Option: "CleanParams.FinishedBefore", Value: p.FinishedBefore,
			Reason: "is required: jobs that finished before it are deleted (time.Now() deletes every finished job)"}
	}
	if err := validateOptionalTime("CleanParams.FinishedBefore", p.FinishedBefore); err != nil {
		return db.JobDeleteFinishedBatchParams{}, err
	}
	if err := validateOptionalQueue("CleanParams.Queue", p.Queue); err != nil {
		return db.JobDeleteFinishedBatchParams{}, err
	}
	if err := validateOptionalKind("CleanParams.Kind", p.Kind); err != nil {
		return db.JobDeleteFinishedBatchParams{}, err
	}
	switch {
	case p.BatchSize == 0:
		p.BatchSize = DefaultCleanBatchSize
	case p.BatchSize < 0 || p.BatchSize > MaxCleanBatchSize:
		return db.JobDeleteFinishedBatchParams{}, &InvalidOptionError{Option: "CleanParams.BatchSize", Value: p.BatchSize,
			Reason: "must be between 1 and 100000 (0 means the default, 1000)"}
	}
	finished := []Status{StatusCompleted, StatusFailed, StatusCanceled}
	statuses, err := statusFilter("CleanParams.Statuses", p.Statuses, finished, finished)
	if err != nil {
		return db.JobDeleteFinishedBatchParams{}, err
	}
	return db.JobDeleteFinishedBatchParams{
		FinishedBefore: p.FinishedBefore,
		Statuses:       statuses,
		Queue:          optionalText(p.Queue),
		Kind:           optionalText(p.Kind),
		Max:            int32(p.BatchSize),
	}, nil
}

// Clean deletes the finished jobs p selects, in batches of p.BatchSize,
// each its own statement, so that no lock is held for long and the work
// done survives an interruption. It returns how many jobs it deleted, also
// when it stops early because ctx ended or the database failed. Pending
// and running jobs are never deleted.
func (a *Admin) Clean(ctx context.Context, p CleanParams) (int64, error) {
	params, err := p.check()
	if err != nil {
		return 0, err
	}
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("tasuki: clean: stopped after deleting %d jobs: %w", total, err)
		}
		n, err := a.queries.JobDeleteFinishedBatch(ctx, params)
		if err != nil {
			return total, dberr.Wrap(fmt.Sprintf("tasuki: clean: stopped after deleting %d jobs", total), err)
		}
		total += n
		if n > 0 && p.OnBatch != nil {
			p.OnBatch(total)
		}
		if n < int64(params.Max) {
			return total, nil
		}
	}
}

// CleanCount returns how many jobs Clean with the same p would delete if
// it ran now. p.BatchSize and p.OnBatch are ignored.
func (a *Admin) CleanCount(ctx context.Context, p CleanParams) (int64, error) {
	params, err := p.check()
	if err != nil {
		return 0, err
	}
	n, err := a.queries.JobCountFinishedBefore(ctx, db.JobCountFinishedBeforeParams{
		FinishedBefore: params.FinishedBefore,
		Statuses:       params.Statuses,
		Queue:          params.Queue,
		Kind:           params.Kind,
	})
	if err != nil {
		return 0, dberr.Wrap("tasuki: count jobs to clean", err)
	}
	return n, nil
}

// PauseQueue pauses a queue in every worker process: its workers lease no
// new job until ResumeQueue, while the jobs they are running finish as
// usual and inserts go on. It reports whether the queue was running before;
// pausing a paused queue changes nothing and returns false. A queue needs
// no jobs to be paused, so a queue can be paused before its first insert.
func (a *Admin) PauseQueue(ctx context.Context, name string) (paused bool, err error) {
	if err := ValidateQueue("queue", name); err != nil {
		return false, err
	}
	paused, err = a.queries.QueuePause(ctx, name)
	if err != nil {
		return false, dberr.Wrap(fmt.Sprintf("tasuki: pause queue %q", name), err)
	}
	return paused, nil
}

// ResumeQueue resumes a paused queue and wakes its idle workers, so that
// they lease at once rather than at their next poll. It reports whether
// the queue was paused; resuming a queue that is not paused changes
// nothing and returns false. A queue tasuki does not know (no jobs, never
// paused: often a mistyped name) gives an error wrapping ErrQueueNotFound.
func (a *Admin) ResumeQueue(ctx context.Context, name string) (resumed bool, err error) {
	if err := ValidateQueue("queue", name); err != nil {
		return false, err
	}
	var known bool
	err = pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		q := a.queries.WithTx(tx)
		r, err := q.QueueResume(ctx, name)
		if err != nil {
			return err
		}
		resumed, known = r.Resumed, r.Known
		if !resumed {
			return nil
		}
		// Sent on commit, once the lease query sees the queue resumed.
		return q.NotifyInsert(ctx, name)
	})
	if err != nil {
		return false, dberr.Wrap(fmt.Sprintf("tasuki: resume queue %q", name), err)
	}
	if !known {
		return false, &queueNotFoundError{queue: name}
	}
	return resumed, nil
}

// queueNotFoundError names the queue that was not found; it matches
// ErrQueueNotFound with errors.Is.
type queueNotFoundError struct{ queue string }

func (e *queueNotFoundError) Error() string {
	return fmt.Sprintf("tasuki: no queue named %q: it has no jobs and was never paused (tasuki stats lists the queues)", e.queue)
}
func (e *queueNotFoundError) Is(target error) bool { return target == ErrQueueNotFound }

// allStatuses is every status, in the order of a job's life.
var allStatuses = []Status{StatusPending, StatusRunning, StatusCompleted, StatusFailed, StatusCanceled}

// statusFilter checks that every given status is one of allowed and returns
// them as text for a query; none given returns def.
func statusFilter(option string, given, allowed, def []Status) ([]string, error) {
	if len(given) == 0 {
		given = def
	}
	out := make([]string, 0, len(given))
	for _, s := range given {
		ok := false
		for _, a := range allowed {
			ok = ok || s == a
		}
		if !ok {
			names := make([]string, len(allowed))
			for i, a := range allowed {
				names[i] = string(a)
			}
			return nil, &InvalidOptionError{Option: option, Value: string(s),
				Reason: "allowed statuses here: " + strings.Join(names, ", ")}
		}
		out = append(out, string(s))
	}
	return out, nil
}

// validateOptionalQueue checks a queue filter: "" (every queue) or a valid
// queue name.
func validateOptionalQueue(option, queue string) error {
	if queue == "" {
		return nil
	}
	return ValidateQueue(option, queue)
}

// validateOptionalKind checks a kind filter: "" (every kind) or a valid
// kind.
func validateOptionalKind(option, kind string) error {
	if kind == "" {
		return nil
	}
	return ValidateKind(option, kind)
}

// validateOptionalTime checks a time filter: zero (unset) or within
// PostgreSQL's timestamptz range.
func validateOptionalTime(option string, t time.Time) error {
	if t.IsZero() || !t.Before(minRunAt) && t.Before(endRunAt) {
		return nil
	}
	return &InvalidOptionError{Option: option, Value: t, Reason: "must be within PostgreSQL's timestamptz range, 4714 BC to 294276 AD"}
}

// optionalText is NULL for "" and the text otherwise.
func optionalText(s string) pgtype.Text {
	return pgtype.Text{String: s, Valid: s != ""}
}

// PeriodicSchedule is a periodic job's schedule as the database last saw
// it from a worker (see worker.Periodic).
type PeriodicSchedule struct {
	// Name identifies the schedule.
	Name string
	// Kind is the kind of the jobs it enqueues.
	Kind string
	// Schedule describes when its ticks are ("every 1h0m0s", a cron
	// expression).
	Schedule string
	// LastTick is the last tick a job was enqueued for; nil before the
	// first.
	LastTick *time.Time
	// NextTick is the next tick, as the last worker to record it
	// computed it.
	NextTick *time.Time
	// UpdatedAt is when a worker last recorded the schedule.
	UpdatedAt time.Time
}

// Periodic lists every periodic schedule the database has seen, by name.
func (a *Admin) Periodic(ctx context.Context) ([]PeriodicSchedule, error) {
	rows, err := a.queries.PeriodicList(ctx)
	if err != nil {
		return nil, dberr.Wrap("tasuki: list periodic schedules", err)
	}
	out := make([]PeriodicSchedule, 0, len(rows))
	for _, r := range rows {
		out = append(out, PeriodicSchedule{Name: r.Name, Kind: r.Kind, Schedule: r.Schedule,
			LastTick: r.LastTick, NextTick: r.NextTick, UpdatedAt: r.UpdatedAt})
	}
	return out, nil
}

// QueueDepth is how many jobs wait in one queue.
type QueueDepth struct {
	// Queue is the queue's name.
	Queue string
	// Runnable counts its pending jobs whose scheduled time has come:
	// those its workers could run now.
	Runnable int64
	// Scheduled counts its pending jobs scheduled for later (retries
	// and delayed jobs among them).
	Scheduled int64
	// OldestRunnableAge is how long the runnable job that has waited
	// longest has been waiting since its scheduled time, by the database
	// clock; 0 when none is runnable.
	OldestRunnableAge time.Duration
}

// Depths returns, for each queue with pending jobs, ordered by name, how
// many are runnable and scheduled and the age of the oldest runnable one.
// Unlike Stats it reads the pending jobs alone, through their index: it
// suits a metrics collector that asks every few seconds.
func (a *Admin) Depths(ctx context.Context) ([]QueueDepth, error) {
	rows, err := a.queries.QueueDepths(ctx)
	if err != nil {
		return nil, dberr.Wrap("tasuki: queue depths", err)
	}
	out := make([]QueueDepth, len(rows))
	for i, r := range rows {
		out[i] = QueueDepth{Queue: r.Queue, Runnable: r.Runnable, Scheduled: r.Scheduled,
			OldestRunnableAge: time.Duration(r.OldestRunnableUs) * time.Microsecond}
	}
	return out, nil
}
