package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
	"github.com/tasukiq/tasuki/internal/jobrow"
	"github.com/tasukiq/tasuki/internal/maintenance"
	"github.com/tasukiq/tasuki/internal/setaside"
	"github.com/tasukiq/tasuki/tasuki"
)

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

// Worker runs the jobs of a process: every kind it has a handler for, in
// every queue it is configured for, with one Run, one connection for
// LISTEN and a small pool of its own for its statements (see Run). Create
// it with New and start it with Run.
type Worker struct {
	periodic periodics

	// pool is the application's pool, which handlers use; the worker's own
	// statements go through queries, on a small pool of its own that Run
	// opens, so that handlers holding every connection of the
	// application's pool cannot hold up leases, heartbeats or outcomes.
	pool    *pgxpool.Pool
	queries *db.Queries
	cfg     Config
	log     *slog.Logger
	started atomic.Bool
	health  *health
	// process identifies this worker in tasuki_process.
	process processInfo

	// The queues and kinds the worker works, sorted by name, and the
	// sources the lease reads: every (queue, kind) pair of them.
	queues  []*queueState
	kinds   []*kindState
	sources []*source
	byPair  map[pair]*source
	// inbox holds the sources a wake-up, the sweeper or a freed kind slot
	// asked the fetch loop to read.
	inbox inbox

	// refused and unrescued: jobs the database refused to lease, and to
	// rescue, set aside for a while.
	refused, unrescued *setaside.Set
	// rescueMax is how many expired jobs a rescue takes at most: halved
	// after a rescue timed out, doubled back after one passed.
	rescueMax atomic.Int64
	// rescueInline: the rescue of expired leases rides on the fetch loop's
	// lease statements, as it is cheap; false while it is slow (an old
	// snapshot), when the sweeper runs it apart.
	rescueInline atomic.Bool
	// lastFullRescue is when the last rescue that read every lease was
	// sent (UnixNano; 0 before the first); fullRescueInline: such a pass
	// rides on a lease statement, as it is cheap (see fullRescueDue).
	lastFullRescue   atomic.Int64
	fullRescueInline atomic.Bool
	// headReadCost is how long the last lease statement that read a
	// source from its head took, in nanoseconds.
	headReadCost atomic.Int64
	// activity: the fetch loop leased jobs since the sweeper's last look
	// behind its positions, failed to, or could not afford to read from
	// the heads.
	activity atomic.Bool
	// plainQueries are queries on the worker's own pool left to
	// PostgreSQL's choice of plan: for leases and rescues that name one
	// job, whose custom plan reads it by its id where the generic plan
	// reads its queue's range (see queryLease).
	plainQueries *db.Queries
	// gate keeps an idle worker to one statement at a time (idlegate.go).
	gate *idleGate

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

// queueState is one queue of the worker.
type queueState struct {
	name        string
	concurrency int
	active      atomic.Int64
	// saturated: the last lease that read the queue filled its free
	// slots, so the next one peeks before it locks (see JobLease). The
	// fetch loop's own.
	saturated bool
}

// kindState is one kind of the worker, with its handler.
type kindState struct {
	name    string
	limit   int // 0: none
	retry   RetryPolicy
	reg     Registration
	active  atomic.Int64
	sources []*source // one per queue
	timeout time.Duration
	// mws are the worker's middleware, then the kind's.
	mws []Middleware
	// short: a lease that read the kind without locks first took fewer
	// than its free slots, so the next one locks without peeking (see
	// JobLease). The fetch loop's own.
	short bool
}

// free is how many more jobs of the kind may start; math.MaxInt32 without
// a limit.
func (k *kindState) free() int {
	if k.limit == 0 {
		return math.MaxInt32
	}
	return k.limit - int(k.active.Load())
}

type pair struct{ queue, kind string }

// source is a (queue, kind) pair the lease reads, with where it stopped.
type source struct {
	queue *queueState
	kind  *kindState
	seek  *seeker
	// The fetch loop's own: due, read it at the next lease; leased, it
	// gave jobs since the last poll.
	due, leased bool
	// share is what part of its queue's jobs the source got in the last
	// lease that read it beside others of the queue (0: none yet).
	share float64
}

// inbox collects, from other goroutines, the sources to read.
type inbox struct {
	mu      sync.Mutex
	sources map[*source]struct{}
}

func (in *inbox) add(ss ...*source) {
	in.mu.Lock()
	if in.sources == nil {
		in.sources = make(map[*source]struct{})
	}
	for _, s := range ss {
		in.sources[s] = struct{}{}
	}
	in.mu.Unlock()
}

func (in *inbox) take() map[*source]struct{} {
	in.mu.Lock()
	defer in.mu.Unlock()
	ss := in.sources
	in.sources = nil
	return ss
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
	// src is the queue and kind the job was leased from.
	src *source
	// hctx is the handler's context: the job's, which knows its lease
	// (CompleteTx). Set before the job is handed to a runner.
	hctx handlerContext
	// completing: the handler completed the job in a transaction of its
	// own (CompleteTx): once that committed, the outcome the worker writes
	// is refused by the token, as it should be, and is not reported.
	completing bool
	// overdue is when the handler has run past its timeout and
	// TimeoutGrace: its lease is no longer renewed. Zero: no timeout.
	overdue time.Time
	// attempt is the job's attempt under this lease.
	attempt int32
}

// work is a leased job handed to a runner.
type work struct {
	ctx   context.Context
	lease *lease
	row   *db.TasukiJob
	// timeout is the attempt's timeout; 0: none.
	timeout time.Duration
}

// result is a handler's outcome, to be written by JobFinishMany.
type result struct {
	lease    *lease
	status   db.TasukiJobStatus
	delay    time.Duration
	err      string
	giveBack bool
	// snooze: the handler snoozed the job (tasuki.Snooze) for delay.
	snooze bool
	// For events: how long the handler ran, and what it returned.
	ran      time.Duration
	returned error
}

// New returns a worker that runs jobs with the handlers given, each for
// its kind, in the queues of cfg. The configuration is checked here; an
// invalid one, no handler, or two handlers for one kind return a
// *tasuki.InvalidOptionError.
//
//	w, err := worker.New(pool, worker.Config{}, worker.HandleFunc(sendEmail), worker.HandleFunc(resizeImage))
func New(pool *pgxpool.Pool, cfg Config, handlers ...Registration) (*Worker, error) {
	if pool == nil {
		return nil, &tasuki.InvalidOptionError{Option: "pool", Value: nil, Reason: "a *pgxpool.Pool is required"}
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(handlers) == 0 {
		return nil, &tasuki.InvalidOptionError{Option: "handlers", Value: nil, Reason: "at least one handler is required: worker.Handle(h) or worker.HandleFunc(f)"}
	}
	w := &Worker{
		periodic:  periodics{byName: make(map[string]*periodicState), wake: make(chan struct{}, 1)},
		pool:      pool,
		cfg:       cfg,
		log:       cfg.Logger,
		health:    newHealth(),
		refused:   setaside.New(min(cfg.LeaseDuration/2, 5*time.Second), setaside.DefaultMaxWait),
		unrescued: setaside.New(min(cfg.LeaseDuration/2, 5*time.Second), setaside.DefaultMaxWait),
		byPair:    make(map[pair]*source),
		running:   make(map[int64]*lease),
		wake:      make(chan struct{}, 1),
		// Room for a full batch of outcomes, so that handlers rarely wait for the
		// writer and slots free as soon as handlers return.
		heartbeatNow: make(chan struct{}, 1),
		slotFree:     make(chan struct{}, 1),
	}
	w.gate = newIdleGate(&w.active)
	w.rescueMax.Store(maxRescue)
	w.rescueInline.Store(true)
	w.fullRescueInline.Store(true)
	seen := make(map[string]int)
	for i, r := range handlers {
		option := fmt.Sprintf("handlers[%d]", i)
		if r.kindOf == nil || r.missing {
			return nil, &tasuki.InvalidOptionError{Option: option, Value: nil, Reason: "a Handler is required: worker.Handle(h) or worker.HandleFunc(f)"}
		}
		kind, err := r.kindOf(option+" KindConfig.Kind", r.cfg.Kind)
		if err != nil {
			return nil, err
		}
		if j, dup := seen[kind]; dup {
			return nil, &tasuki.InvalidOptionError{Option: option, Value: kind,
				Reason: fmt.Sprintf("kind %q already has a handler (handlers[%d]); register one handler per kind", kind, j)}
		}
		seen[kind] = i
		if r.cfg.MaxConcurrency < 0 || r.cfg.MaxConcurrency > 100_000 {
			return nil, &tasuki.InvalidOptionError{Option: option + " KindConfig.MaxConcurrency", Value: r.cfg.MaxConcurrency,
				Reason: "must be between 1 and 100000, or 0 for no limit of its own"}
		}
		retry := r.cfg.RetryPolicy
		if retry == nil {
			retry = cfg.RetryPolicy
		}
		if r.cfg.Timeout < 0 {
			return nil, &tasuki.InvalidOptionError{Option: option + " KindConfig.Timeout", Value: r.cfg.Timeout,
				Reason: "must not be negative (0: no timeout)"}
		}
		var mws []Middleware
		for j, m := range append(slices.Clip(cfg.Middleware), r.cfg.Middleware...) {
			if m == nil {
				return nil, &tasuki.InvalidOptionError{Option: option + " middleware", Value: j, Reason: "a middleware is nil"}
			}
			mws = append(mws, m)
		}
		w.kinds = append(w.kinds, &kindState{name: kind, limit: r.cfg.MaxConcurrency, retry: retry, reg: r, timeout: r.cfg.Timeout, mws: mws})
	}
	slices.SortFunc(w.kinds, func(a, b *kindState) int { return strings.Compare(a.name, b.name) })
	total := 0
	for name, q := range cfg.Queues {
		w.queues = append(w.queues, &queueState{name: name, concurrency: q.Concurrency})
		total += q.Concurrency
	}
	slices.SortFunc(w.queues, func(a, b *queueState) int { return strings.Compare(a.name, b.name) })
	for _, q := range w.queues {
		for _, k := range w.kinds {
			s := &source{queue: q, kind: k, seek: newSeeker()}
			w.sources = append(w.sources, s)
			k.sources = append(k.sources, s)
			w.byPair[pair{q.name, k.name}] = s
		}
	}
	w.work = make(chan work, total)
	w.results = make(chan result, max(total, maxBatch))
	w.process = newProcessInfo(w)
	return w, nil
}

// Config returns the worker's configuration with defaults filled in.
func (w *Worker) Config() Config { return w.cfg }

// Kinds returns the kinds the worker has handlers for, sorted.
func (w *Worker) Kinds() []string {
	out := make([]string, len(w.kinds))
	for i, k := range w.kinds {
		out[i] = k.name
	}
	return out
}

// Run works jobs until ctx ends, then shuts down gracefully: it stops
// leasing, waits up to ShutdownTimeout for running handlers, cancels the
// rest (their jobs go back to pending, the attempt given back), records
// every outcome and returns. It returns early only if the database lacks
// tasuki's schema or the role lacks a privilege (an error wrapping
// tasuki.ErrSchemaMissing or tasuki.ErrPermissionDenied); database outages
// are logged and waited out. Run may be called once.
func (w *Worker) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("tasuki: Worker.Run called twice; create a new Worker")
	}
	own, err := w.ownPool()
	if err != nil {
		return err
	}
	defer own.Close()
	w.queries = db.New(&genericPlans{pool: own, busy: func() bool { return !w.gate.idle() }})
	w.plainQueries = db.New(own)
	// The cleaner shares the worker's pool: waiting there for a connection
	// only delays a round, and an idle worker then keeps one connection
	// open besides its listener.
	cleaner, err := maintenance.NewCleaner(own, maintenance.CleanerConfig{Interval: w.cfg.CleanInterval, Logger: w.cfg.Logger,
		Gate: w.gate.enterIfIdle})
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
	periodicDone := make(chan struct{})
	go func() {
		defer close(periodicDone)
		w.runPeriodic(ctx)
	}()
	defer func() { <-periodicDone }()
	listenerDone := make(chan struct{})
	go func() {
		defer close(listenerDone)
		if !w.cfg.DisableListen {
			w.listen(dbCtx, schema)
		}
	}()

	// Long-lived runners, not a goroutine per job: a runner keeps the stack
	// its handler grew, so a busy worker does not grow a fresh one per job.
	// One per slot over all queues (the work channel's size): a handler
	// that hangs in one queue must not keep another queue's leased job
	// waiting for a runner.
	for range cap(w.work) {
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
	w.forgetProcess(dbCtx)
	stopDB()
	<-listenerDone
	<-watchDone
	w.log.Info("tasuki: worker stopped")
	return nil
}

// ownConns is the most connections the worker's own pool opens: one for
// the lease loop, one for the writer and one for the sweeper and the
// cleaner. The listener holds one more, outside the pool. An idle worker
// uses one of them (its polls), and closes the others after
// ownIdleTimeout (within ownIdleTimeout + ownHealthCheck).
const ownConns = 3

// ownIdleTimeout is how long the worker's pool keeps a connection it did
// not use: the start, a burst or the cleaner's round beside a lease open
// more than an idle worker needs. Longer than the fetch loop's longest
// wait between statements (the rescue round, at most 5 s), so that the
// connection it uses stays open.
const ownIdleTimeout = 15 * time.Second

// ownHealthCheck is how often the worker's pool closes the connections
// idle longer than ownIdleTimeout. Longer than it: each check takes every
// idle connection and gives them back in reverse order, so the fetch loop
// moves to another connection after each check, and a connection it left
// is idle long enough to be closed only if the next check comes later
// than ownIdleTimeout.
const ownHealthCheck = 2 * ownIdleTimeout

// ownPool opens the worker's own pool, with the application's pool's
// connection settings (and hooks), for the worker's statements. It opens
// connections only when they are needed.
func (w *Worker) ownPool() (*pgxpool.Pool, error) {
	cfg := w.pool.Config()
	cfg.MaxConns = ownConns
	cfg.MinConns, cfg.MinIdleConns = 0, 0
	cfg.MaxConnIdleTime = ownIdleTimeout
	cfg.HealthCheckPeriod = ownHealthCheck
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
func (w *Worker) start(ctx context.Context) (string, error) {
	b := newBackoff(probeBackoffMax)
	for {
		// Leasing nothing proves the tables are there.
		_, err := w.queries.JobLease(ctx, db.JobLeaseParams{LeaseUs: 1})
		var schema string
		if err == nil {
			if schema, err = w.queries.TasukiSchema(ctx); err == nil {
				return schema, nil
			}
		}
		err = dberr.WrapProbe("tasuki: worker start", err)
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

// fetchLoop leases jobs until ctx ends, for all the worker's queues and
// kinds in one statement each time. It reads the sources that are due: all
// of them at start and every PollInterval; those a wake-up named; those
// whose last read filled what it asked, or was cut by a queue's or a
// kind's limit (they may have more), as soon as slots free. It leases only
// as many jobs of a queue as the queue has free slots, and of a kind as the
// kind's limit leaves. The rescue of expired leases and the record of this
// process ride on these statements every rescueEvery while the rescue is
// cheap, so that an idle worker sends one statement per PollInterval.
func (w *Worker) fetchLoop(ctx, dbCtx, handlerCtx context.Context) {
	for _, s := range w.sources {
		s.due = true
	}
	poll := time.NewTimer(w.cfg.PollInterval)
	defer poll.Stop()
	rescueTimer := time.NewTimer(w.rescueEvery())
	defer rescueTimer.Stop()
	rescueDue := true
	b := newBackoff(probeBackoffMax)
	for {
		if ctx.Err() != nil {
			return
		}
		for s := range w.inbox.take() {
			s.due = true
		}
		plan := w.plan(rescueDue && w.rescueInline.Load())
		if plan.empty() {
			var slot <-chan struct{}
			if plan.blocked {
				slot = w.slotFree
			}
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			case <-slot:
			case <-poll.C:
				w.pollAll()
				poll.Reset(w.cfg.PollInterval)
			case <-rescueTimer.C:
				rescueDue = true
				rescueTimer.Reset(w.rescueEvery())
				// A poll too, so that an idle worker sends one statement
				// for both.
				w.pollAll()
				if !poll.Stop() {
					select {
					case <-poll.C:
					default:
					}
				}
				poll.Reset(w.cfg.PollInterval)
			}
			continue
		}
		leave, err := w.gate.enterToLease(ctx)
		if err != nil {
			return
		}
		// dbCtx, not ctx: a lease statement interrupted by shutdown could
		// commit without its rows reaching us; they are given back below.
		jobs, setAside, err := w.lease(dbCtx, plan)
		leave()
		if err != nil {
			// Not idle: the sweeper's looks go on, and back off by
			// themselves while the database fails them too.
			w.activity.Store(true)
			d := b.next()
			w.log.Warn("tasuki: leasing jobs failed; retrying", slog.Any("error", dberr.Wrap("lease", err)), slog.Duration("retry_in", d))
			w.health.sleep(ctx, d)
			continue // the sources stay due
		}
		if plan.rescue {
			rescueDue = false
		}
		if b.reset() {
			w.health.ok()
		}
		if ctx.Err() != nil {
			w.giveBack(jobs)
			return
		}
		for _, j := range jobs {
			w.startJob(handlerCtx, j)
		}
		if len(jobs) > 0 {
			w.activity.Store(true)
			w.gate.worked(time.Now())
		}
		// Jobs set aside stood in front of others: read again at once.
		if setAside > 0 {
			for _, s := range plan.sources {
				s.due = true
			}
		}
	}
}

// pollAll makes every source due. A source that gave no jobs since the
// last poll is read from its head, which finds what no wake-up announced
// (jobs inserted by SQL of the application's own, or that committed
// behind its position) at the cost of one index descent while the queue
// is idle; unless reads from the head have become slow (an old snapshot
// left many dead index entries there), when the sweeper looks instead.
func (w *Worker) pollAll() {
	cheap := w.headReadCost.Load() <= int64(max(w.cfg.PollInterval/headReadShare, minHeadReadBudget))
	for _, s := range w.sources {
		s.due = true
		if !s.leased {
			if cheap {
				s.seek.rewindAll()
			} else {
				w.activity.Store(true)
			}
		}
		s.leased = false
	}
}

// giveBack returns jobs leased during shutdown without running them.
func (w *Worker) giveBack(jobs []leased) {
	for _, j := range jobs {
		l := w.register(j, func(error) {}, time.Time{})
		w.mu.Lock()
		l.returned = true // no handler will run
		w.mu.Unlock()
		w.results <- result{lease: l, status: db.TasukiJobStatusPending, giveBack: true}
	}
}

func (w *Worker) register(j leased, cancel context.CancelCauseFunc, overdue time.Time) *lease {
	l := &lease{id: j.row.ID, token: j.row.LeaseToken, cancel: cancel, expires: j.sentAt.Add(w.cfg.LeaseDuration), src: j.src, overdue: overdue, attempt: j.row.Attempts}
	w.mu.Lock()
	if old := w.running[l.id]; old != nil {
		// This worker leased the job again: the old lease is gone, and a
		// handler still running under it must stop.
		old.cancel(ErrLeaseLost)
	}
	w.running[l.id] = l
	w.mu.Unlock()
	return l
}

// attemptTimeout is how long an attempt of row may run: its own timeout,
// else its kind's; 0 for none.
func attemptTimeout(k *kindState, row *db.TasukiJob) time.Duration {
	if row.TimeoutMs.Valid {
		return time.Duration(row.TimeoutMs.Int64) * time.Millisecond
	}
	return k.timeout
}

func (w *Worker) startJob(handlerCtx context.Context, j leased) {
	timeout := attemptTimeout(j.src.kind, j.row)
	var overdue time.Time
	if timeout > 0 {
		overdue = time.Now().Add(timeout + TimeoutGrace)
	}
	w.noteRescued(j.row)
	jobCtx, cancel := context.WithCancelCause(handlerCtx)
	l := w.register(j, cancel, overdue)
	// Allocated with the lease, not apart: a context.WithValue would
	// cost every job two allocations more.
	l.hctx = handlerContext{Context: jobCtx, w: w, l: l}
	w.active.Add(1)
	j.src.queue.active.Add(1)
	j.src.kind.active.Add(1)
	w.work <- work{ctx: &l.hctx, lease: l, row: j.row, timeout: timeout} // never blocks: one slot per leased job
}

// rescuedMark is in the error history of a job that a rescue of an
// expired lease put back (queries/lease.sql): a key no handler's error
// text can add.
var rescuedMark = []byte(`"rescued"`)

// noteRescued publishes an EventRescued when row's previous attempt ended
// by its lease expiring, if anyone subscribed.
func (w *Worker) noteRescued(row *db.TasukiJob) {
	if !w.cfg.Events.Active() || !bytes.Contains(row.Errors, rescuedMark) {
		return
	}
	var history []struct {
		Attempt int    `json:"attempt"`
		Error   string `json:"error"`
		Rescued bool   `json:"rescued"`
	}
	if json.Unmarshal(row.Errors, &history) != nil || len(history) == 0 {
		return
	}
	last := history[len(history)-1]
	if last.Rescued && last.Attempt == int(row.Attempts)-1 {
		w.cfg.Events.Publish(tasuki.Event{Type: tasuki.EventRescued, JobID: row.ID, Kind: row.Kind, Queue: row.Queue,
			Attempt: last.Attempt, Err: errors.New(last.Error)})
	}
}

// runner runs leased jobs until the work channel closes.
func (w *Worker) runner() {
	defer w.handlers.Done()
	w.runJobs(0)
}

// runnerStackPad is how much of its stack a runner keeps in use while it
// waits for a job. At each collection the garbage collector halves the
// stack of a goroutine that uses less than a quarter of it: a runner that
// waited with an almost empty stack lost, at every collection, the stack
// its last job grew, and its next job grew it again, copying it each time
// (a fifth of a drain's CPU, and more with deep middleware such as
// OpenTelemetry's). Waiting 4 KiB deep, a runner keeps a stack of up to
// 16 KiB, enough for the worker's own path, middleware included, and for
// most handlers; it costs that much memory per slot.
const runnerStackPad = 4 << 10

// runJobs runs leased jobs until the work channel closes, from a frame of
// runnerStackPad bytes. n only keeps the compiler from removing the pad.
//
//go:noinline
func (w *Worker) runJobs(n uint) {
	var pad [runnerStackPad]byte
	if pad[n%runnerStackPad] != 0 {
		return
	}
	for wk := range w.work {
		w.runOne(wk)
	}
}

// ErrHandlerExited is recorded when a handler ends its goroutine with
// runtime.Goexit (t.FailNow, log.Fatal-like helpers) instead of returning.
// The attempt counts as failed.
var ErrHandlerExited = errors.New("tasuki: handler called runtime.Goexit instead of returning")

// runOne runs one job and hands its outcome to the writer.
func (w *Worker) runOne(wk work) {
	l := wk.lease
	returned := false
	defer func() {
		if returned {
			return
		}
		cause := ErrHandlerExited // runtime.Goexit in the handler
		v := recover()
		if v != nil {
			// A panic outside the handler's own call, e.g. in the Error
			// method of the error it returned, or in the retry policy.
			cause = &PanicError{Value: v, Stack: string(debug.Stack())}
			w.log.Error("tasuki: panic while recording a job's outcome", slog.Int64("job_id", l.id), slog.Any("panic", v))
		}
		// Record the attempt as failed (no retry policy: it may be what
		// panicked), from the leased row: the job execute builds is lost
		// with the call that did not return.
		r := result{lease: l, status: db.TasukiJobStatusPending, err: cause.Error(), delay: time.Minute}
		if wk.row.Attempts >= wk.row.MaxAttempts {
			r.status, r.delay = db.TasukiJobStatusFailed, 0
		}
		w.finishJob(l, r)
		if v == nil {
			// Goexit ends this runner's goroutine once the deferred calls
			// are done: put a new runner in its place. After a recovered
			// panic this runner goes on.
			w.handlers.Add(1)
			go w.runner()
		}
	}()
	_, r := w.execute(wk)
	returned = true
	w.finishJob(l, r)
}

// execute runs a leased job's handler, through its kind's middleware, and
// returns the job as its handler saw it and the outcome.
func (w *Worker) execute(wk work) (*tasuki.Job[json.RawMessage], result) {
	l, k := wk.lease, wk.lease.src.kind
	ctx := wk.ctx
	if wk.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, wk.timeout, &TimeoutError{Timeout: wk.timeout})
		defer cancel()
	}
	start := time.Now()
	job, err := jobrow.Raw(wk.row)
	broken := err != nil // its error history does not decode
	handlerCtx := ctx    // with what middleware added, for the ErrorHandler
	if !broken {
		if len(k.mws) > 0 {
			err, handlerCtx = w.callChain(ctx, k, job)
		} else {
			var typed any
			if typed, err = k.reg.decode(job); err == nil {
				err = w.call(ctx, k, job, typed)
			}
		}
	}
	var r result
	if broken {
		// Nothing ran: retrying cannot make the history decode.
		w.log.Error("tasuki: job failed: its row does not decode", slog.Int64("job_id", wk.row.ID),
			slog.String("kind", wk.row.Kind), slog.Any("error", err))
		r = result{lease: l, status: db.TasukiJobStatusFailed, err: err.Error(), returned: err}
	} else {
		r = w.classify(ctx, l, job, err)
	}
	r.ran = time.Since(start)
	if w.cfg.ErrorHandler != nil && r.failedAttempt() {
		w.reportError(handlerCtx, job, r.returned)
	}
	return job, r
}

// finishJob hands an outcome to the writer and frees the job's slot.
func (w *Worker) finishJob(l *lease, r result) {
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
	l.src.queue.active.Add(-1)
	if k := l.src.kind; k.active.Add(-1) == int64(k.limit)-1 {
		// The kind was at its limit: its sources may have jobs waiting.
		w.inbox.add(k.sources...)
	}
	select {
	case w.slotFree <- struct{}{}:
	default:
	}
}

// classify turns what a handler returned into an outcome.
func (w *Worker) classify(ctx context.Context, l *lease, job *tasuki.Job[json.RawMessage], err error) (r result) {
	r = result{lease: l, returned: err}
	// The outcome is written whatever canceled the context: the token check
	// refuses it when the job was canceled or its lease really lost, and
	// keeps it when the cause was stale (a failed heartbeat, or a cancel
	// notification that arrived after the job was retried and leased again).
	switch Outcome(ctx, job, err) {
	case tasuki.EventCompleted:
		r.status = db.TasukiJobStatusCompleted
		return r
	case tasuki.EventCanceled:
		r.status, r.err = db.TasukiJobStatusCanceled, err.Error()
		return r
	case tasuki.EventSnoozed:
		// Not a failure: no error in the history, no attempt used.
		var snoozeErr *tasuki.SnoozeError
		errors.As(err, &snoozeErr)
		r.status, r.snooze, r.delay = db.TasukiJobStatusPending, true, retryDelay(snoozeErr.Delay)
		return r
	case tasuki.EventGivenBack:
		r.status, r.giveBack, r.returned = db.TasukiJobStatusPending, true, nil
		return r
	case tasuki.EventFailed:
		r.status = db.TasukiJobStatusFailed
	default:
		r.status = db.TasukiJobStatusPending
	}
	var timeout *TimeoutError
	if errors.As(context.Cause(ctx), &timeout) && !errors.As(err, &timeout) {
		// Said first: the handler's own error is often only "context
		// deadline exceeded".
		err = fmt.Errorf("%w: %w", timeout, err)
	}
	r.err, r.returned = err.Error(), err
	if r.status == db.TasukiJobStatusFailed {
		why := "tasuki: job failed: out of attempts"
		if job.Attempt < job.MaxAttempts {
			why = "tasuki: job failed: payload does not decode" // the one failure that skips the attempts left
		}
		w.log.Warn(why, slog.Int64("job_id", job.ID), slog.String("kind", job.Kind), slog.Int("attempt", job.Attempt), slog.Any("error", err))
		return r
	}
	var retryErr *tasuki.RetryAfterError
	if errors.As(err, &retryErr) {
		r.delay = retryDelay(retryErr.Delay)
	} else {
		r.delay = retryDelay(l.src.kind.retry(job.Attempt))
	}
	w.log.Info("tasuki: job attempt failed; will retry", slog.Int64("job_id", job.ID), slog.Int("attempt", job.Attempt),
		slog.Duration("retry_in", r.delay), slog.Any("error", err))
	return r
}

// failedAttempt reports whether r records a failed attempt (retried or
// failed for good), as opposed to a completion, a cancel, a snooze or a
// job given back.
func (r *result) failedAttempt() bool {
	return r.status == db.TasukiJobStatusFailed || r.status == db.TasukiJobStatusPending && !r.snooze && !r.giveBack
}

// TimeoutError is the cause of a handler's context ending at its timeout
// (KindConfig.Timeout, or the job's InsertOpts.Timeout); the attempt's
// error starts with it.
type TimeoutError struct {
	// Timeout is the attempt's timeout.
	Timeout time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("tasuki: job timed out after %s", e.Timeout)
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

func (w *Worker) call(ctx context.Context, k *kindState, job *tasuki.Job[json.RawMessage], typed any) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: string(debug.Stack())}
			w.log.Error("tasuki: handler panicked", slog.Int64("job_id", job.ID), slog.String("kind", k.name), slog.Any("panic", v))
		}
	}()
	return k.reg.work(ctx, typed)
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
func (w *Worker) abandonRunning() {
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
func (w *Worker) cancelJob(id int64, token pgtype.UUID) {
	w.mu.Lock()
	l := w.running[id]
	w.mu.Unlock()
	if l != nil && (!token.Valid || l.token == token) {
		l.cancel(ErrJobCanceled)
	}
}

func (w *Worker) signalWake() {
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
