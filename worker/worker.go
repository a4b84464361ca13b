package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
	"github.com/tasukiq/tasuki/internal/maintenance"
	"github.com/tasukiq/tasuki/internal/setaside"
	"github.com/tasukiq/tasuki/tasuki"
)

// Handler runs jobs whose payload is a T. What Work returns is the job's
// outcome: nil completes it; an error retries it after the worker's backoff,
// or fails it once its attempts are used up; [tasuki.Cancel] cancels it;
// [tasuki.RetryAfter] retries it after a given delay. A panic is recovered
// and counts as an error.
//
// ctx is canceled when the job is canceled from outside, when the worker
// lost the job's lease, or when a shutdown runs out of time; Work should
// then return soon.
type Handler[T any] interface {
	Work(ctx context.Context, job *tasuki.Job[T]) error
}

// HandlerFunc adapts a function to a Handler, as http.HandlerFunc does.
// Shared state reaches the function through its closure or a method value.
type HandlerFunc[T any] func(ctx context.Context, job *tasuki.Job[T]) error

// Work calls f(ctx, job).
func (f HandlerFunc[T]) Work(ctx context.Context, job *tasuki.Job[T]) error { return f(ctx, job) }

// Causes of a handler's context being canceled, found with context.Cause.
var (
	// ErrLeaseLost: the job was canceled from outside, or its lease could
	// not be renewed in time and another worker may now run it.
	ErrLeaseLost = errors.New("tasuki: the worker no longer holds this job's lease (canceled, or the lease expired)")
	// ErrJobCanceled: the job was canceled from outside.
	ErrJobCanceled = errors.New("tasuki: job canceled")
	// ErrShutdown: the worker is shutting down and the shutdown timeout
	// passed; the job goes back to pending with its attempt given back.
	ErrShutdown = errors.New("tasuki: worker shut down before the job finished; it will run again")
)

// Worker runs the jobs of one queue with one handler. Create it with New
// and start it with Run.
type Worker[T any] struct {
	// pool is the application's pool, which handlers use; the worker's own
	// statements go through queries, on a small pool of its own that Run
	// opens, so that handlers holding every connection of the
	// application's pool cannot hold up leases, heartbeats or outcomes.
	pool    *pgxpool.Pool
	queries *db.Queries
	handler Handler[T]
	cfg     Config
	log     *slog.Logger
	started atomic.Bool
	health  *health
	// refused and unrescued: jobs the database refused to lease, and to
	// rescue, set aside for a while.
	refused, unrescued *setaside.Set
	// rescueMax is how many expired jobs a rescue takes at most: halved
	// after a rescue timed out, doubled back after one passed. Used by the
	// sweeper only.
	rescueMax int
	// seek keeps where the fetch loop's last lease stopped.
	seek *seeker

	mu      sync.Mutex
	running map[int64]*lease // leased, until the outcome is recorded

	active   atomic.Int64   // handlers running
	handlers sync.WaitGroup // runner goroutines
	sending  sync.WaitGroup // outcomes on their way into results
	work     chan work      // leased jobs on their way to a runner
	results  chan result    // outcomes on their way to the writer
	wake     chan struct{}  // a notification or reconnect: look for jobs
	// heartbeatNow asks the writer for a heartbeat at once: after the
	// listener (re)connects, to catch cancellations it could not hear.
	heartbeatNow chan struct{}
	slotFree     chan struct{} // a handler finished
}

// lease is one leased job held by this worker.
type lease struct {
	id      int64
	token   pgtype.UUID
	cancel  context.CancelCauseFunc
	expires time.Time // local estimate: when the lease lapses unless renewed
	// returned: the handler returned; its outcome is with the writer.
	returned bool
	// abandoned: shutdown gave the job back while its handler was still
	// running; the handler's late outcome is dropped.
	abandoned bool
	// lost: watchLeases stopped the handler, as its lease was about to
	// lapse unrenewed.
	lost bool
}

// work is a leased job handed to a runner.
type work struct {
	ctx   context.Context
	lease *lease
	row   *db.TasukiJob
}

// result is a handler's outcome, to be written by JobFinishMany.
type result struct {
	lease    *lease
	status   db.TasukiJobStatus
	delay    time.Duration
	err      string
	giveBack bool
}

// New returns a worker that runs jobs with handler. The configuration is
// checked here; an invalid one returns a *tasuki.InvalidOptionError.
func New[T any](pool *pgxpool.Pool, handler Handler[T], cfg Config) (*Worker[T], error) {
	if pool == nil {
		return nil, &tasuki.InvalidOptionError{Option: "pool", Value: nil, Reason: "a *pgxpool.Pool is required"}
	}
	if f, ok := handler.(HandlerFunc[T]); handler == nil || ok && f == nil {
		return nil, &tasuki.InvalidOptionError{Option: "handler", Value: nil, Reason: "a Handler is required"}
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Worker[T]{
		pool:      pool,
		handler:   handler,
		cfg:       cfg,
		log:       cfg.Logger.With(slog.String("queue", cfg.Queue)),
		health:    newHealth(),
		refused:   setaside.New(min(cfg.LeaseDuration/2, 5*time.Second), setaside.DefaultMaxWait),
		unrescued: setaside.New(min(cfg.LeaseDuration/2, 5*time.Second), setaside.DefaultMaxWait),
		rescueMax: maxRescue,
		seek:      newSeeker(),
		running:   make(map[int64]*lease),
		work:      make(chan work, cfg.Concurrency),
		// Room for a full batch of outcomes, so that handlers rarely wait for the
		// writer and slots free as soon as handlers return.
		results:      make(chan result, max(cfg.Concurrency, maxBatch)),
		wake:         make(chan struct{}, 1),
		heartbeatNow: make(chan struct{}, 1),
		slotFree:     make(chan struct{}, 1),
	}, nil
}

// Config returns the worker's configuration with defaults filled in.
func (w *Worker[T]) Config() Config { return w.cfg }

// Run works jobs until ctx ends, then shuts down gracefully: it stops
// leasing, waits up to ShutdownTimeout for running handlers, cancels the
// rest (their jobs go back to pending, the attempt given back), records
// every outcome and returns. It returns early only if the database lacks
// tasuki's schema or the role lacks a privilege (an error wrapping
// tasuki.ErrSchemaMissing or tasuki.ErrPermissionDenied); database outages
// are logged and waited out. Run may be called once.
func (w *Worker[T]) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("tasuki: Worker.Run called twice; create a new Worker")
	}
	own, err := w.ownPool()
	if err != nil {
		return err
	}
	defer own.Close()
	w.queries = db.New(own)
	// The cleaner uses the application's pool: waiting there for a
	// connection only delays a round.
	cleaner, err := maintenance.NewCleaner(w.pool, maintenance.CleanerConfig{Interval: w.cfg.CleanInterval, Logger: w.cfg.Logger})
	if err != nil {
		return err
	}
	schema, err := w.start(ctx)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}

	// Database work goes on after ctx ends, to record the last outcomes.
	bg := context.WithoutCancel(ctx)
	dbCtx, stopDB := context.WithCancel(bg)
	defer stopDB()
	handlerCtx, cancelHandlers := context.WithCancelCause(bg)
	defer cancelHandlers(ErrShutdown)

	writerStop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		w.writeLoop(dbCtx, writerStop)
	}()
	cleanerDone := make(chan struct{})
	go func() {
		defer close(cleanerDone)
		if err := cleaner.Run(ctx); err != nil {
			w.log.Error("tasuki: retention cleaner stopped", slog.Any("error", err))
		}
	}()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		w.watchLeases(dbCtx)
	}()
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		w.sweep(ctx)
	}()
	listenerDone := make(chan struct{})
	go func() {
		defer close(listenerDone)
		if !w.cfg.DisableListen {
			w.listen(dbCtx, schema)
		}
	}()

	// Long-lived runners, not a goroutine per job: a runner keeps the stack
	// its handler grew, so a busy worker does not grow a fresh one per job.
	for range w.cfg.Concurrency {
		w.handlers.Add(1)
		go w.runner()
	}
	w.fetchLoop(ctx, dbCtx, handlerCtx)
	close(w.work)

	w.log.Info("tasuki: worker stopping; waiting for running jobs", slog.Int64("running", w.active.Load()),
		slog.Duration("shutdown_timeout", w.cfg.ShutdownTimeout))
	handlersDone := make(chan struct{})
	go func() {
		w.handlers.Wait() // outlives Run only while a handler ignores its context
		close(handlersDone)
	}()
	if !waitFor(handlersDone, max(w.cfg.ShutdownTimeout, 0)) {
		w.log.Warn("tasuki: shutdown timeout passed; canceling running jobs", slog.Int64("running", w.active.Load()))
		cancelHandlers(ErrShutdown)
		// Handlers that ignore their context are left behind: their jobs go
		// back to pending now, and what they return later is dropped.
		if !waitFor(handlersDone, 5*time.Second) {
			w.abandonRunning()
		}
	}
	// Every outcome not abandoned reaches the writer before its last drain.
	w.sending.Wait()
	close(writerStop)
	<-writerDone
	<-cleanerDone
	<-sweepDone
	stopDB()
	<-listenerDone
	<-watchDone
	w.log.Info("tasuki: worker stopped")
	return nil
}

// ownConns is the most connections the worker's own pool opens: one for
// the lease loop, one for the writer and one for the sweeper. The listener
// holds one more, outside the pool.
const ownConns = 3

// ownPool opens the worker's own pool, with the application's pool's
// connection settings (and hooks), for the worker's statements. It opens
// connections only when they are needed.
func (w *Worker[T]) ownPool() (*pgxpool.Pool, error) {
	cfg := w.pool.Config()
	cfg.MaxConns = ownConns
	cfg.MinConns, cfg.MinIdleConns = 0, 0
	if _, set := cfg.ConnConfig.RuntimeParams["application_name"]; !set {
		cfg.ConnConfig.RuntimeParams["application_name"] = "tasuki-worker"
	}
	own, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("tasuki: worker: open its own connection pool: %w", err)
	}
	return own, nil
}

// start checks that the schema exists and returns its name. It waits out an
// unreachable database until ctx ends.
func (w *Worker[T]) start(ctx context.Context) (string, error) {
	b := newBackoff(probeBackoffMax)
	for {
		// Leasing nothing proves the tables are there.
		_, err := w.queries.JobLease(ctx, db.JobLeaseParams{Queue: w.cfg.Queue, Max: 0, LeaseUs: 1})
		var schema string
		if err == nil {
			if schema, err = w.queries.TasukiSchema(ctx); err == nil {
				return schema, nil
			}
		}
		err = dberr.Wrap("tasuki: worker start", err)
		if errors.Is(err, tasuki.ErrSchemaMissing) || errors.Is(err, tasuki.ErrPermissionDenied) {
			return "", err // waiting cannot fix these
		}
		if ctx.Err() != nil {
			return "", nil
		}
		d := b.next()
		w.log.Warn("tasuki: database unavailable; retrying", slog.Any("error", err), slog.Duration("retry_in", d))
		w.health.sleep(ctx, d)
	}
}

// fetchLoop leases jobs until ctx ends. It leases as many jobs as there are
// free slots; after a full batch it leases again as soon as a slot frees,
// otherwise it waits for a notification or the poll interval.
func (w *Worker[T]) fetchLoop(ctx, dbCtx, handlerCtx context.Context) {
	more := true
	poll := time.NewTimer(w.cfg.PollInterval)
	defer poll.Stop()
	b := newBackoff(probeBackoffMax)
	for {
		free := w.cfg.Concurrency - int(w.active.Load())
		if free <= 0 {
			select {
			case <-ctx.Done():
				return
			case <-w.slotFree:
			}
			continue
		}
		if !more {
			poll.Reset(w.cfg.PollInterval)
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			case <-poll.C:
			}
			poll.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		// dbCtx, not ctx: a lease statement interrupted by shutdown could
		// commit without its rows reaching us; they are given back below.
		jobs, setAside, err := w.lease(dbCtx, free)
		if err != nil {
			d := b.next()
			w.log.Warn("tasuki: leasing jobs failed; retrying", slog.Any("error", dberr.Wrap("lease", err)), slog.Duration("retry_in", d))
			w.health.sleep(ctx, d)
			more = true
			continue
		}
		if b.reset() {
			w.health.ok()
		}
		if ctx.Err() != nil {
			w.giveBack(jobs)
			return
		}
		for _, j := range jobs {
			w.startJob(handlerCtx, j.row, j.sentAt)
		}
		// Jobs set aside stood in front of others: lease again at once.
		more = len(jobs) == free || setAside > 0
	}
}

// giveBack returns jobs leased during shutdown without running them.
func (w *Worker[T]) giveBack(jobs []leased) {
	for _, j := range jobs {
		l := w.register(j.row, func(error) {}, j.sentAt)
		w.mu.Lock()
		l.returned = true // no handler will run
		w.mu.Unlock()
		w.results <- result{lease: l, status: db.TasukiJobStatusPending, giveBack: true}
	}
}

func (w *Worker[T]) register(row *db.TasukiJob, cancel context.CancelCauseFunc, sentAt time.Time) *lease {
	l := &lease{id: row.ID, token: row.LeaseToken, cancel: cancel, expires: sentAt.Add(w.cfg.LeaseDuration)}
	w.mu.Lock()
	if old := w.running[row.ID]; old != nil {
		// This worker leased the job again: the old lease is gone, and a
		// handler still running under it must stop.
		old.cancel(ErrLeaseLost)
	}
	w.running[row.ID] = l
	w.mu.Unlock()
	return l
}

func (w *Worker[T]) startJob(handlerCtx context.Context, row *db.TasukiJob, sentAt time.Time) {
	jobCtx, cancel := context.WithCancelCause(handlerCtx)
	l := w.register(row, cancel, sentAt)
	w.active.Add(1)
	w.work <- work{ctx: jobCtx, lease: l, row: row} // never blocks: one slot per leased job
}

// runner runs leased jobs until the work channel closes.
func (w *Worker[T]) runner() {
	defer w.handlers.Done()
	for wk := range w.work {
		w.runOne(wk)
	}
}

// ErrHandlerExited is recorded when a handler ends its goroutine with
// runtime.Goexit (t.FailNow, log.Fatal-like helpers) instead of returning.
// The attempt counts as failed.
var ErrHandlerExited = errors.New("tasuki: handler called runtime.Goexit instead of returning")

// runOne runs one job and hands its outcome to the writer.
func (w *Worker[T]) runOne(wk work) {
	l := wk.lease
	var job *tasuki.Job[T]
	returned := false
	defer func() {
		if returned {
			return
		}
		cause := ErrHandlerExited // runtime.Goexit in the handler
		if v := recover(); v != nil {
			// A panic outside the handler's own call, e.g. in the Error
			// method of the error it returned, or in the retry policy.
			cause = &PanicError{Value: v, Stack: string(debug.Stack())}
			w.log.Error("tasuki: panic while recording a job's outcome", slog.Int64("job_id", l.id), slog.Any("panic", v))
		}
		// Record the attempt as failed (no retry policy: it may be what
		// panicked) and put a new runner in place of this one.
		r := result{lease: l, status: db.TasukiJobStatusPending, err: cause.Error(), delay: time.Minute}
		if job == nil || job.Attempt >= job.MaxAttempts {
			r.status, r.delay = db.TasukiJobStatusFailed, 0
		}
		w.finishJob(l, r)
		w.handlers.Add(1)
		go w.runner()
	}()
	job, err := tasuki.JobFromRow[T](wk.row)
	var r result
	if err != nil {
		// Retrying cannot make a payload decode: fail it now.
		w.log.Error("tasuki: job failed: payload does not decode", slog.Int64("job_id", wk.row.ID), slog.Any("error", err))
		r = result{lease: l, status: db.TasukiJobStatusFailed, err: err.Error()}
	} else {
		r = w.classify(wk.ctx, l, job, w.call(wk.ctx, job))
	}
	returned = true
	w.finishJob(l, r)
}

// finishJob hands an outcome to the writer and frees the job's slot.
func (w *Worker[T]) finishJob(l *lease, r result) {
	l.cancel(nil)
	w.mu.Lock()
	l.returned = true
	send := !l.abandoned
	if send {
		w.sending.Add(1) // under mu: shutdown waits for it after abandoning
	}
	w.mu.Unlock()
	if send {
		w.results <- r // blocks while the writer's backlog is full
		w.sending.Done()
	}
	w.active.Add(-1)
	select {
	case w.slotFree <- struct{}{}:
	default:
	}
}

// classify turns what a handler returned into an outcome.
func (w *Worker[T]) classify(ctx context.Context, l *lease, job *tasuki.Job[T], err error) (r result) {
	r = result{lease: l}
	// The outcome is written whatever canceled the context: the token check
	// refuses it when the job was canceled or its lease really lost, and
	// keeps it when the cause was stale (a failed heartbeat, or a cancel
	// notification that arrived after the job was retried and leased again).
	switch cause := context.Cause(ctx); {
	case err == nil:
		r.status = db.TasukiJobStatusCompleted
		return r
	case errors.Is(cause, ErrShutdown):
		r.status, r.giveBack = db.TasukiJobStatusPending, true
		return r
	}
	r.err = err.Error()
	var cancelErr *tasuki.CancelError
	if errors.As(err, &cancelErr) {
		r.status = db.TasukiJobStatusCanceled
		return r
	}
	if job.Attempt >= job.MaxAttempts {
		r.status = db.TasukiJobStatusFailed
		w.log.Warn("tasuki: job failed: out of attempts", slog.Int64("job_id", job.ID), slog.Int("attempt", job.Attempt), slog.Any("error", err))
		return r
	}
	r.status = db.TasukiJobStatusPending
	var retryErr *tasuki.RetryAfterError
	if errors.As(err, &retryErr) {
		r.delay = retryDelay(retryErr.Delay)
	} else {
		r.delay = retryDelay(w.cfg.RetryPolicy(job.Attempt))
	}
	w.log.Info("tasuki: job attempt failed; will retry", slog.Int64("job_id", job.ID), slog.Int("attempt", job.Attempt),
		slog.Duration("retry_in", r.delay), slog.Any("error", err))
	return r
}

// PanicError is a handler's recovered panic, recorded as the attempt's
// error.
type PanicError struct {
	// Value is what the handler panicked with.
	Value any
	// Stack is the goroutine's stack at the panic.
	Stack string
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v\n\n%s", e.Value, e.Stack) }

func (w *Worker[T]) call(ctx context.Context, job *tasuki.Job[T]) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: string(debug.Stack())}
			w.log.Error("tasuki: handler panicked", slog.Int64("job_id", job.ID), slog.Any("panic", v))
		}
	}()
	return w.handler.Work(ctx, job)
}

// waitFor waits up to d for done to close.
func waitFor(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// abandonRunning gives back the jobs of handlers that did not return.
func (w *Worker[T]) abandonRunning() {
	var stuck []*lease
	w.mu.Lock()
	for _, l := range w.running {
		if !l.returned && !l.abandoned {
			l.abandoned = true
			stuck = append(stuck, l)
		}
	}
	w.mu.Unlock()
	w.log.Error("tasuki: handlers did not return after their context was canceled; giving their jobs back", slog.Int("jobs", len(stuck)))
	for _, l := range stuck {
		select {
		case w.results <- result{lease: l, status: db.TasukiJobStatusPending, giveBack: true}:
		default:
			// The writer's backlog is full: the lease will expire and the
			// job will be rescued.
		}
	}
}

// cancelJob cancels the handler of a job canceled from outside, if it runs
// under the lease that was canceled: a late notification must not stop a
// newer lease of the same job (canceled, retried and leased again).
func (w *Worker[T]) cancelJob(id int64, token pgtype.UUID) {
	w.mu.Lock()
	l := w.running[id]
	w.mu.Unlock()
	if l != nil && (!token.Valid || l.token == token) {
		l.cancel(ErrJobCanceled)
	}
}

func (w *Worker[T]) signalWake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// sanitizeError makes an error text storable: valid UTF-8 without NUL (which
// PostgreSQL text cannot hold), at most 32 KiB.
func sanitizeError(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "")
	const limit = 32 << 10
	if len(s) > limit {
		s = strings.ToValidUTF8(s[:limit], "") + "… (truncated)"
	}
	return s
}
