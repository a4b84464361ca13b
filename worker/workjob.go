package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
	"github.com/tasukiq/tasuki/internal/jobrow"
	"github.com/tasukiq/tasuki/tasuki"
)

// WorkResult is what WorkJob did with a job.
type WorkResult struct {
	// Event says what happened: tasuki.EventCompleted, EventRetried,
	// EventFailed, EventSnoozed or EventCanceled; empty when the outcome
	// was refused because the job was canceled meanwhile.
	Event tasuki.EventType
	// Err is what the handler, through its middleware, returned.
	Err error
	// Job is the job as stored once its outcome was recorded.
	Job *tasuki.Job[json.RawMessage]
}

// ErrWorkerRunning is returned by WorkJob on a worker whose Run was
// called.
var ErrWorkerRunning = errors.New("tasuki: WorkJob runs jobs on a worker that is not running; use a Worker on which Run was not called")

// WorkJob runs the pending job id once, now, in the calling goroutine,
// through the path Run takes: the job is leased (whatever its scheduled
// time and its queue's pause), its payload decoded, the worker's and its
// kind's middleware and its handler called, the ErrorHandler told of a
// failure, the outcome recorded with the statement Run records it with,
// and the worker's events published. It is for tests: a test inserts a
// job, runs it with WorkJob and checks the result, without starting the
// worker and without waiting. It uses the worker's pool, and needs no
// Run; it returns ErrWorkerRunning once Run was called. The lease is not
// renewed: a handler that runs longer than LeaseDuration loses the job to
// the rescue of a running worker. A job that is not pending, not there,
// or of a kind the worker has no handler for gives an error, and is left
// as it was.
func (w *Worker) WorkJob(ctx context.Context, id int64) (*WorkResult, error) {
	if w.started.Load() {
		return nil, ErrWorkerRunning
	}
	q := db.New(w.pool)
	row, err := q.JobLeaseOne(ctx, db.JobLeaseOneParams{ID: id, Kinds: w.Kinds(), LeaseUs: w.cfg.LeaseDuration.Microseconds()})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, w.whyNotLeased(ctx, q, id)
	}
	if err != nil {
		return nil, dberr.Wrap(fmt.Sprintf("tasuki: work job %d", id), err)
	}
	var k *kindState
	for _, ks := range w.kinds {
		if ks.name == row.Kind {
			k = ks
		}
	}
	src := w.byPair[pair{row.Queue, row.Kind}]
	if src == nil { // a queue the worker is not configured for
		src = &source{queue: &queueState{name: row.Queue}, kind: k}
	}
	w.noteRescued(row)
	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	l := w.register(leased{row: row, src: src}, cancel, time.Time{})
	l.hctx = handlerContext{Context: jobCtx, w: w, l: l}
	_, r := w.execute(work{ctx: &l.hctx, lease: l, row: row, timeout: attemptTimeout(k, row)})
	w.mu.Lock()
	l.returned = true
	w.mu.Unlock()
	written := false
	if _, err := w.write(context.WithoutCancel(ctx), q, []result{r}, false, func(ids []int64) { written = slices.Contains(ids, id) }); err != nil {
		w.mu.Lock()
		delete(w.running, id)
		w.mu.Unlock()
		return nil, fmt.Errorf("tasuki: work job %d: record its outcome (the job stays running until its lease expires): %w", id, err)
	}
	out := &WorkResult{Err: r.returned}
	stored, err := q.JobGet(ctx, id)
	if err != nil {
		return nil, dberr.Wrap(fmt.Sprintf("tasuki: work job %d: read it back", id), err)
	}
	if out.Job, err = jobrow.Raw(stored); err != nil {
		return nil, err
	}
	switch {
	case written:
		out.Event = eventOf(&r)
	case w.completedItself(l) && stored.Status == db.TasukiJobStatusCompleted:
		out.Event = tasuki.EventCompleted // by CompleteTx
	}
	return out, nil
}

// whyNotLeased explains why JobLeaseOne did not lease job id.
func (w *Worker) whyNotLeased(ctx context.Context, q *db.Queries, id int64) error {
	row, err := q.JobGet(ctx, id)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("tasuki: work job %d: %w", id, tasuki.ErrJobNotFound)
	case err != nil:
		return dberr.Wrap(fmt.Sprintf("tasuki: work job %d", id), err)
	case row.Status != db.TasukiJobStatusPending:
		return fmt.Errorf("tasuki: work job %d: it is %s; only a pending job can be worked", id, row.Status)
	default:
		return fmt.Errorf("tasuki: work job %d: its kind %q has no handler in this worker (it has %v)", id, row.Kind, w.Kinds())
	}
}
