package worker

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
	"github.com/tasukiq/tasuki/tasuki"
)

// maxBatch bounds the outcomes written by one statement, and the backlog
// the writer holds before handlers wait for it.
const maxBatch = 5000

// writeLoop is the one goroutine that writes outcomes and heartbeats, so the
// two never race for the same rows. While a batch is being written, new
// outcomes queue in the results channel and go out together in the next
// statement: the busier the worker, the larger the batches.
func (w *Worker) writeLoop(ctx context.Context, stop <-chan struct{}) {
	heartbeat := time.NewTicker(w.cfg.HeartbeatInterval)
	defer heartbeat.Stop()
	var pending []result
	// retry fires when failed outcomes are due to be written again;
	// recovered, when another loop's statement succeeded meanwhile.
	var retry <-chan time.Time
	var recovered <-chan struct{}
	b := newBackoff(backoffMax)
	flush := func() {
		var err error
		pending, err = w.flush(ctx, pending)
		if err != nil {
			d := b.next()
			w.log.Warn("tasuki: recording job outcomes failed; retrying", slog.Any("error", err),
				slog.Int("outcomes", len(pending)), slog.Duration("retry_in", d))
			retry, recovered = time.After(d), w.health.recovered()
			return
		}
		if b.reset() {
			w.health.ok()
		}
		retry, recovered = nil, nil
	}
	// A failed heartbeat is tried again soon rather than a whole interval
	// later, so that a short outage does not cost leases.
	var heartbeatRetry <-chan time.Time
	hb := newBackoff(w.cfg.HeartbeatInterval)
	beat := func() {
		if w.heartbeat(ctx) {
			if hb.reset() {
				w.health.ok()
			}
			heartbeatRetry = nil
			return
		}
		heartbeatRetry = time.After(hb.next())
	}
	for {
		in := w.results
		if len(pending) >= maxBatch {
			in = nil // backpressure: handlers wait until the backlog shrinks
		}
		select {
		case r := <-in:
			pending = w.drain(append(pending, r))
			if retry == nil {
				flush()
			}
		case <-retry:
			flush()
		case <-recovered:
			flush()
		case <-heartbeat.C:
			beat()
		case <-heartbeatRetry:
			beat()
		case <-w.heartbeatNow:
			beat()
		case <-stop:
			w.final(ctx, w.drain(pending))
			return
		}
	}
}

// drain appends what is already waiting in the results channel.
func (w *Worker) drain(pending []result) []result {
	for len(pending) < maxBatch {
		select {
		case r := <-w.results:
			pending = append(pending, r)
		default:
			return pending
		}
	}
	return pending
}

// final writes the last outcomes at shutdown, retrying for a while if the
// database is away. What it cannot write is not lost: those jobs' leases
// expire and they run again.
func (w *Worker) final(ctx context.Context, pending []result) {
	deadline := time.Now().Add(w.cfg.LeaseDuration)
	b := newBackoff(backoffMax)
	for len(pending) > 0 {
		var err error
		if pending, err = w.flush(ctx, pending); err == nil {
			pending = w.drain(pending)
			continue
		}
		if time.Now().After(deadline) {
			w.log.Error("tasuki: could not record job outcomes before shutdown; these jobs will run again when their leases expire",
				slog.Int("jobs", len(pending)), slog.Any("error", err))
			return
		}
		w.health.sleep(ctx, b.next())
	}
}

// flush writes pending outcomes in one statement and returns what is left:
// nothing on success, everything on error.
func (w *Worker) flush(ctx context.Context, pending []result) ([]result, error) {
	w.gate.worked(time.Now())
	return w.write(ctx, w.queries, pending, false, nil)
}

// write is flush; single says it is already writing one row at a time.
// recorded, when not nil, is told the ids whose outcome the database
// recorded.
func (w *Worker) write(ctx context.Context, q *db.Queries, pending []result, single bool, recorded func(ids []int64)) ([]result, error) {
	if len(pending) == 0 {
		return pending, nil
	}
	n := len(pending)
	p := db.JobFinishManyParams{
		Ids:      make([]int64, n),
		Tokens:   make([]pgtype.UUID, n),
		Statuses: make([]string, n),
		DelaysUs: make([]int64, n),
		Errors:   make([]string, n),
		GiveBack: make([]bool, n),
		Snooze:   make([]bool, n),
	}
	// Rows are locked in id order, as every bulk statement of tasuki does,
	// so two of them never wait for each other in a cycle.
	slices.SortFunc(pending, func(a, b result) int { return cmp.Compare(a.lease.id, b.lease.id) })
	for i, r := range pending {
		p.Ids[i] = r.lease.id
		p.Tokens[i] = r.lease.token
		p.Statuses[i] = string(r.status)
		p.DelaysUs[i] = r.delay.Microseconds()
		p.Errors[i] = sanitizeError(r.err)
		p.GiveBack[i] = r.giveBack
		p.Snooze[i] = r.snooze
	}
	// Bounded, so that a connection that hangs cannot keep heartbeats
	// (which share this goroutine) away for long.
	stmtCtx, cancel := context.WithTimeout(ctx, w.cfg.LeaseDuration/2)
	changed, err := q.JobFinishMany(stmtCtx, p)
	cancel()
	if err != nil && dberr.RowError(err) && !single {
		// Not the connection or the server's state: something in one row
		// (a trigger of the application's, a limit). Write the rows one by
		// one, so that one bad row cannot hold back all the others.
		return w.flushEach(ctx, q, pending, err, recorded)
	}
	if err != nil {
		return pending, dberr.Wrap("tasuki: record outcomes", err)
	}
	// Counted only when some were refused: the lock is not taken on the
	// path of every completion.
	if len(changed) < n {
		if refused := n - len(changed) - w.completedInTx(pending); refused > 0 {
			w.log.Info("tasuki: outcomes refused for jobs this worker no longer holds (canceled, or lease lost)",
				slog.Int("refused", refused))
		}
	}
	w.mu.Lock()
	for _, r := range pending {
		if w.running[r.lease.id] == r.lease {
			delete(w.running, r.lease.id)
		}
	}
	w.mu.Unlock()
	if w.cfg.Events.Active() {
		w.publish(pending, changed)
	}
	if recorded != nil {
		recorded(changed)
	}
	return pending[:0], nil
}

// publish reports the outcomes of pending the database recorded (the ids
// in changed) to the subscribers of the worker's events.
func (w *Worker) publish(pending []result, changed []int64) {
	var recorded map[int64]bool // nil: all of them
	if len(changed) < len(pending) {
		recorded = make(map[int64]bool, len(changed))
		for _, id := range changed {
			recorded[id] = true
		}
	}
	now := time.Now()
	for _, r := range pending {
		typ := eventOf(&r)
		if recorded != nil && !recorded[r.lease.id] {
			if !w.completedItself(r.lease) {
				continue
			}
			typ = tasuki.EventCompleted
		}
		ev := tasuki.Event{Type: typ, JobID: r.lease.id, Kind: r.lease.src.kind.name, Queue: r.lease.src.queue.name,
			Attempt: int(r.lease.attempt), Duration: r.ran, At: now}
		if ev.Type != tasuki.EventCompleted && ev.Type != tasuki.EventGivenBack {
			ev.Err = r.failure()
		}
		w.cfg.Events.Publish(ev)
	}
}

// completedItself reports whether the handler of l completed its job in a
// transaction of its own (CompleteTx), which explains an outcome refused:
// the job was completed, by the handler.
func (w *Worker) completedItself(l *lease) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return l.completing
}

// eventOf is the event an outcome makes once recorded.
func eventOf(r *result) tasuki.EventType {
	switch {
	case r.status == db.TasukiJobStatusCompleted:
		return tasuki.EventCompleted
	case r.status == db.TasukiJobStatusCanceled:
		return tasuki.EventCanceled
	case r.status == db.TasukiJobStatusFailed:
		return tasuki.EventFailed
	case r.giveBack:
		return tasuki.EventGivenBack
	case r.snooze:
		return tasuki.EventSnoozed
	default:
		return tasuki.EventRetried
	}
}

// failure is the error of a failed attempt: what the handler returned, or
// the error recorded when it returned nothing (it exited, a panic outside
// it).
func (r *result) failure() error {
	if r.returned != nil {
		return r.returned
	}
	if r.err != "" {
		return errors.New(r.err)
	}
	return nil
}

// flushEach writes outcomes one statement each, after a batch failed for a
// row's data. An outcome that fails alone is dropped and logged: its job's
// lease expires and the job runs again.
func (w *Worker) flushEach(ctx context.Context, q *db.Queries, pending []result, batchErr error, recorded func([]int64)) ([]result, error) {
	for i, r := range pending {
		if _, err := w.write(ctx, q, []result{r}, true, recorded); err != nil {
			if !dberr.RowError(err) {
				return pending[i:], err // the database went away: retry the rest later
			}
			w.log.Error("tasuki: could not record a job's outcome; the job will run again when its lease expires",
				slog.Int64("job_id", r.lease.id), slog.Any("error", err), slog.Any("batch_error", batchErr))
			w.mu.Lock()
			if w.running[r.lease.id] == r.lease {
				delete(w.running, r.lease.id)
			}
			w.mu.Unlock()
		}
	}
	return pending[:0], nil
}

// heartbeat renews the leases of every job this worker holds, in one
// statement, and stops the handlers of jobs it no longer holds. It reports
// whether the statement succeeded. A handler whose lease could not be
// renewed is stopped by watchLeases before the lease can lapse.
func (w *Worker) heartbeat(ctx context.Context) bool {
	w.mu.Lock()
	held := make([]*lease, 0, len(w.running))
	now := time.Now()
	for _, l := range w.running {
		// A handler that ran past its timeout and its grace does not keep
		// its job: the lease lapses and the job is rescued.
		if !l.abandoned && (l.overdue.IsZero() || now.Before(l.overdue)) {
			held = append(held, l)
		}
	}
	w.mu.Unlock()
	if len(held) == 0 {
		return true
	}
	slices.SortFunc(held, func(a, b *lease) int { return cmp.Compare(a.id, b.id) })
	p := db.JobHeartbeatManyParams{
		Ids:     make([]int64, len(held)),
		Tokens:  make([]pgtype.UUID, len(held)),
		LeaseUs: w.cfg.LeaseDuration.Microseconds(),
	}
	for i, l := range held {
		p.Ids[i], p.Tokens[i] = l.id, l.token
	}
	sentAt := time.Now()
	// The timeout is half the lease, not the heartbeat interval: a slow
	// database gets time to answer however often heartbeats run. Handlers
	// are stopped in time meanwhile by watchLeases, not by this timeout.
	stmtCtx, cancel := context.WithTimeout(ctx, w.cfg.LeaseDuration/2)
	renewed, err := w.queries.JobHeartbeatMany(stmtCtx, p)
	cancel()
	var refused map[int64]bool
	if err != nil && dberr.RowError(err) && len(held) > 1 {
		renewed, refused, err = w.heartbeatEach(ctx, p)
	}
	if err != nil {
		w.log.Warn("tasuki: heartbeat failed", slog.Any("error", dberr.Wrap("tasuki: heartbeat", err)), slog.Int("jobs", len(held)))
		return false
	}
	ok := make(map[int64]struct{}, len(renewed))
	for _, id := range renewed {
		ok[id] = struct{}{}
	}
	var lost []*lease
	w.mu.Lock()
	for _, l := range held {
		if _, renewed := ok[l.id]; renewed {
			l.expires = sentAt.Add(w.cfg.LeaseDuration)
		} else if !refused[l.id] {
			// A refused renewal is not a lost lease: watchLeases stops the
			// handler if its lease comes close to lapsing.
			lost = append(lost, l)
		}
	}
	w.mu.Unlock()
	if len(lost) > 0 {
		w.stopLost(ctx, lost)
	}
	return true
}

// heartbeatEach renews leases one statement each, after the database
// refused to renew them as a batch for a row's data (an application's
// trigger, say), so that one such job does not cost every other its lease.
// It returns the jobs renewed and those refused.
func (w *Worker) heartbeatEach(ctx context.Context, p db.JobHeartbeatManyParams) (renewed []int64, refused map[int64]bool, err error) {
	refused = make(map[int64]bool)
	for i, id := range p.Ids {
		one := db.JobHeartbeatManyParams{Ids: []int64{id}, Tokens: p.Tokens[i : i+1], LeaseUs: p.LeaseUs}
		stmtCtx, cancel := context.WithTimeout(ctx, w.cfg.LeaseDuration/2)
		r, err := w.queries.JobHeartbeatMany(stmtCtx, one)
		cancel()
		switch {
		case err == nil:
			renewed = append(renewed, r...)
		case dberr.RowError(err):
			refused[id] = true
			w.log.Error("tasuki: the database refused to renew a job's lease; its handler is stopped before the lease lapses unless a later renewal passes",
				slog.Int64("job_id", id), slog.Any("error", dberr.Wrap("heartbeat", err)))
		default:
			return nil, nil, err
		}
	}
	return renewed, refused, nil
}

// leaseMargin is how long before its lease lapses a handler whose lease
// could not be renewed is stopped: a quarter of the lease. Another worker
// can rescue the job only once the lease has lapsed, so the handler has at
// least this long to return before the job may run elsewhere.
func (w *Worker) leaseMargin() time.Duration { return w.cfg.LeaseDuration / 4 }

// watchLeases stops, with ErrLeaseLost, every handler whose lease will
// lapse within leaseMargin, until ctx ends. It runs apart from the writer,
// so that a writer held up by a slow statement cannot delay it. A lease's
// expiry is estimated from when the statement that set it was sent, so it
// is never later than the database's.
func (w *Worker) watchLeases(ctx context.Context) {
	margin := w.leaseMargin()
	tick := time.NewTicker(max(margin/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			now := time.Now()
			var stopped []*lease
			w.mu.Lock()
			for _, l := range w.running {
				if !l.returned && !l.lost && l.expires.Sub(now) < margin {
					l.lost = true
					l.cancel(ErrLeaseLost)
					stopped = append(stopped, l)
				}
			}
			w.mu.Unlock()
			for _, l := range stopped {
				w.log.Warn("tasuki: stopped a job whose lease could not be renewed before it lapses",
					slog.Int64("job_id", l.id))
			}
		}
	}
}

// stopLost cancels the handlers of jobs this worker no longer holds, with
// ErrJobCanceled for jobs canceled from outside and ErrLeaseLost for the
// rest.
func (w *Worker) stopLost(ctx context.Context, lost []*lease) {
	ids := make([]int64, len(lost))
	for i, l := range lost {
		ids[i] = l.id
	}
	canceled := make(map[int64]bool, len(lost))
	held := make(map[int64]pgtype.UUID, len(lost))
	if rows, err := w.queries.JobStatusMany(ctx, ids); err == nil {
		for _, r := range rows {
			canceled[r.ID] = r.Status == db.TasukiJobStatusCanceled
			if r.Status == db.TasukiJobStatusRunning {
				held[r.ID] = r.LeaseToken
			}
		}
	}
	for _, l := range lost {
		if token, ok := held[l.id]; ok && token == l.token {
			// Still this worker's: another transaction held the row (the
			// handler's own, after CompleteTx). The next heartbeat renews
			// it, or watchLeases stops the handler before it lapses.
			continue
		}
		if canceled[l.id] {
			l.cancel(ErrJobCanceled)
		} else {
			l.cancel(ErrLeaseLost)
		}
	}
}

// completedInTx counts the results of jobs their handlers completed in a
// transaction of their own (CompleteTx): once it committed, the outcome
// the worker writes after is refused by the lease token, as it should be.
func (w *Worker) completedInTx(rs []result) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, r := range rs {
		if r.lease.completing {
			n++
		}
	}
	return n
}
