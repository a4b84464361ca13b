package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
	"github.com/tasukiq/tasuki/internal/pgtemp"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

const (
	// demoQueue is the demo's own queue, so that running the demo against
	// a real database never hands the application's jobs to the demo's
	// handler, nor the demo's jobs to the application's workers.
	demoQueue = "tasuki-demo"
	// demoEnqueueEvery is the producer's pace, as in the Rust original.
	demoEnqueueEvery = 200 * time.Millisecond
	// demoDrainTimeout is how long a stopping demo, its producer stopped,
	// lets the worker take the jobs already enqueued before it stops
	// leasing. A worker that keeps up takes the last one at once; with a
	// backlog, what is not started by then stays pending.
	demoDrainTimeout = 5 * time.Second
	// demoShutdownTimeout is how long a stopping demo waits for running
	// jobs. The longest job sleeps 5 s, so every job started finishes.
	demoShutdownTimeout = 10 * time.Second
	// demoDefaultConcurrency keeps up with the producer: jobs last 3 s on
	// average and 5 arrive per second, so 15 run at once in the steady
	// state.
	demoDefaultConcurrency = 20
)

// demoPayload is the demo's job: a counter, as in the Rust original.
type demoPayload struct {
	Count int `json:"count"`
}

func (demoPayload) Kind() string { return "demo" }

func newDemoCmd(a *app) *cobra.Command {
	var (
		duration    time.Duration
		concurrency int
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Enqueue and work jobs, showing the queue live",
		Long: `demo runs the scenario of tasuki's original Rust version: a producer
enqueues a job carrying a counter every 200 ms; a worker runs each job by
sleeping count % 5 + 1 seconds, logging its start and end. Once a second a
line shows how many of the demo's jobs are pending, running and completed.

It stops after --duration, or on Ctrl-C (SIGINT) or SIGTERM: the producer
stops; the worker takes the jobs already enqueued (for up to 5 s: with a
backlog, the rest stay pending), then waits up to 10 s for the jobs it is
running; a summary counts this run's jobs by their status in the database.
A second Ctrl-C quits at once.

Without --database-url or DATABASE_URL the demo starts a throwaway
PostgreSQL cluster (initdb and pg_ctl must be installed), deleted on exit.
With a URL it needs tasuki's schema there ("tasuki migrate up"); its jobs
go to the queue "tasuki-demo" and stay in the database afterwards.`,
		Example: `  tasuki demo                                # until Ctrl-C, on a throwaway cluster
  tasuki demo --duration 30s --concurrency 5 # a backlog builds up
  tasuki demo --database-url postgres://app@localhost/app`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if duration < 0 {
				return fmt.Errorf("--duration %s: must not be negative (0 runs until Ctrl-C)", duration)
			}
			if concurrency < 1 || concurrency > 100_000 {
				return fmt.Errorf("--concurrency %d: must be between 1 and 100000", concurrency)
			}
			return a.runDemo(cmd.Context(), duration, concurrency)
		},
	}
	cmd.Flags().DurationVar(&duration, "duration", 0, "stop after this long (default: run until Ctrl-C)")
	cmd.Flags().IntVar(&concurrency, "concurrency", demoDefaultConcurrency, "most jobs the worker runs at once")
	return cmd
}

// demoCounts is what the demo reports: jobs of its queue by status, and
// the jobs this run enqueued by status.
type demoCounts struct {
	byStatus map[db.TasukiJobStatus]int64
	run      demoRunCounts
}

// demoRunCounts counts the jobs one demo run enqueued, by their status in
// the database at the end.
type demoRunCounts struct {
	enqueued int64
	byStatus map[tasuki.Status]int64
	// missing counts enqueued jobs no longer in the database (deleted by
	// someone else meanwhile).
	missing int64
}

// demoLedger records the jobs this run enqueued and the jobs the worker
// started, so that a stopping demo can wait until the worker has taken
// every job enqueued, and count them at the end.
type demoLedger struct {
	mu sync.Mutex
	// ids are this run's jobs, in the order of their inserts.
	ids []int64
	// marks holds, per job id, whether this run enqueued it and whether
	// the worker started it: a handler may start before its insert has
	// returned to the producer.
	marks map[int64]demoMark
	// unstarted counts jobs enqueued and not yet started.
	unstarted int
	// allStarted is closed while unstarted is 0.
	allStarted chan struct{}
}

type demoMark uint8

const (
	demoEnqueued demoMark = 1 << iota
	demoStarted
)

func newDemoLedger() *demoLedger {
	l := &demoLedger{marks: make(map[int64]demoMark), allStarted: make(chan struct{})}
	close(l.allStarted)
	return l
}

// enqueued records a job this run inserted.
func (l *demoLedger) enqueued(id int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ids = append(l.ids, id)
	m := l.marks[id]
	l.marks[id] = m | demoEnqueued
	if m&demoStarted == 0 {
		if l.unstarted == 0 {
			l.allStarted = make(chan struct{})
		}
		l.unstarted++
	}
}

// started records that the worker started a job, of this run or not.
func (l *demoLedger) started(id int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.marks[id]
	if m&demoStarted != 0 {
		return
	}
	l.marks[id] = m | demoStarted
	if m&demoEnqueued != 0 {
		l.unstarted--
		if l.unstarted == 0 {
			close(l.allStarted)
		}
	}
}

// waitAllStarted returns a channel closed once every job enqueued so far
// has been started, and how many have not been yet.
func (l *demoLedger) waitAllStarted() (<-chan struct{}, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.allStarted, l.unstarted
}

// jobIDs returns this run's job ids, in the order of their inserts.
func (l *demoLedger) jobIDs() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int64(nil), l.ids...)
}

func (a *app) runDemo(ctx context.Context, duration time.Duration, concurrency int) error {
	pool, cleanup, err := a.openDB(ctx, dbOptions{
		Throwaway: &pgtemp.Options{Durable: true},
		// The worker's lease, heartbeat and outcome statements, the
		// producer and the status line.
		MinConns: 8,
	})
	if err != nil {
		return err
	}
	// Runs last: after the worker and producer stopped, close the pool,
	// then stop the throwaway cluster.
	defer cleanup()

	queries := db.New(pool)
	// Fail now, with the advice to migrate, rather than in every insert.
	if _, err := queries.JobCountByStatus(ctx); err != nil {
		if err := dberr.Wrap("demo", err); errors.Is(err, tasuki.ErrSchemaMissing) {
			return fmt.Errorf("%w; the demo needs it in %s", tasuki.ErrSchemaMissing, redactURL(a.url()))
		}
		return fmt.Errorf("demo: read job counts: %w", err)
	}
	client, err := tasuki.NewClient[demoPayload](pool, tasuki.ClientConfig{Queue: demoQueue})
	if err != nil {
		return err
	}
	admin, err := tasuki.NewAdmin(pool)
	if err != nil {
		return err
	}
	ledger := newDemoLedger()
	w, err := worker.New(pool, worker.Config{
		Queue:           demoQueue,
		Concurrency:     concurrency,
		ShutdownTimeout: demoShutdownTimeout,
		Logger:          a.log,
	}, worker.Handle(worker.HandlerFunc[demoPayload](func(ctx context.Context, job *tasuki.Job[demoPayload]) error {
		ledger.started(job.ID)
		return a.demoJob(ctx, job)
	})))
	if err != nil {
		return err
	}

	runCtx := ctx
	if duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	start := time.Now()
	a.log.Info("demo started", slog.String("queue", demoQueue), slog.Int("concurrency", concurrency),
		slog.Any("duration", durationOrForever(duration)))

	// The worker has its own context, canceled only once the producer has
	// stopped, so that shutdown follows the jobs' path: producer, worker,
	// then the pool and the cluster.
	workerCtx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorker()
	workerDone := make(chan error, 1)
	go func() { workerDone <- w.Run(workerCtx) }()

	var enqueued atomic.Int64
	producerCtx, stopProducer := context.WithCancel(runCtx)
	defer stopProducer()
	producerDone := make(chan struct{})
	go func() {
		defer close(producerDone)
		a.produce(producerCtx, client, ledger, &enqueued)
	}()

	reporterCtx, stopReporter := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReporter()
	reporterDone := make(chan struct{})
	go func() {
		defer close(reporterDone)
		a.report(reporterCtx, queries, start, &enqueued)
	}()

	var runErr error
	workerFinished := false
	select {
	case <-runCtx.Done():
		// A second Ctrl-C now kills the process; a throwaway cluster is
		// then removed by its own watchdog.
		a.releaseSignals()
		why, hint := "duration elapsed", "Ctrl-C to quit at once"
		if !errors.Is(runCtx.Err(), context.DeadlineExceeded) {
			why, hint = "interrupted", "Ctrl-C again to quit at once"
		}
		a.log.Info("demo stopping: producer stopped; waiting for the jobs enqueued ("+hint+")",
			slog.String("reason", why), slog.Duration("drain_timeout", demoDrainTimeout),
			slog.Duration("shutdown_timeout", demoShutdownTimeout))
	case runErr = <-workerDone:
		// The worker returns early only on a missing schema.
		workerFinished = true
	}
	stopProducer()
	<-producerDone
	if !workerFinished {
		// The producer's last insert may have committed just now: let the
		// worker take it, and every other job enqueued, before it stops
		// leasing, so that the demo ends with its jobs done.
		allStarted, _ := ledger.waitAllStarted()
		drain := time.NewTimer(demoDrainTimeout)
		select {
		case <-allStarted:
		case <-drain.C:
			_, n := ledger.waitAllStarted()
			a.log.Warn("demo stopping: jobs not started in time stay pending",
				slog.Int("jobs", n), slog.Duration("drain_timeout", demoDrainTimeout))
		case runErr = <-workerDone:
			workerFinished = true
		}
		drain.Stop()
	}
	stopWorker()
	if !workerFinished {
		runErr = <-workerDone
	}
	stopReporter()
	<-reporterDone
	if runErr != nil {
		return runErr
	}

	elapsed := time.Since(start)
	// The demo's own context may be canceled by now; the last count must
	// still be read.
	countCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	c, err := demoStatusCounts(countCtx, queries)
	if err != nil {
		return err
	}
	if c.run, err = demoRunStatusCounts(countCtx, admin, ledger.jobIDs()); err != nil {
		return err
	}
	a.printSummary(c, elapsed)
	return nil
}

// demoJob is the demo's handler: it sleeps count % 5 + 1 seconds, or less
// if its context ends first (a cancellation, or a shutdown that ran out of
// time), in which case the job is given back or retried by the worker.
func (a *app) demoJob(ctx context.Context, job *tasuki.Job[demoPayload]) error {
	count := job.Payload.Count
	d := time.Duration(count%5+1) * time.Second
	log := a.log.With(slog.Int64("job_id", job.ID), slog.Int("count", count))
	log.Info("job start", slog.Duration("sleep", d), slog.Int("attempt", job.Attempt))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		err := context.Cause(ctx)
		log.Warn("job interrupted", slog.Any("cause", err))
		return err
	}
	log.Info("job end")
	return nil
}

// produce enqueues a job every demoEnqueueEvery until ctx ends, counting
// from 0, and records each in ledger. A failed insert is logged and the
// producer goes on, so that a database restart during the demo shows the
// queue recovering.
func (a *app) produce(ctx context.Context, client *tasuki.Client[demoPayload], ledger *demoLedger, enqueued *atomic.Int64) {
	tick := time.NewTicker(demoEnqueueEvery)
	defer tick.Stop()
	for n := 0; ; {
		// Each insert runs to its end even when ctx ends meanwhile, so
		// that the enqueued count is exact.
		insCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		job, err := client.Insert(insCtx, demoPayload{Count: n}, nil)
		cancel()
		if err != nil {
			a.log.Error("enqueue failed", slog.Int("count", n), slog.Any("error", err))
		} else {
			ledger.enqueued(job.ID)
			enqueued.Add(1)
			n++
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// report prints the demo's live line once a second until ctx ends.
func (a *app) report(ctx context.Context, queries *db.Queries, start time.Time, enqueued *atomic.Int64) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		c, err := demoStatusCounts(ctx, queries)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("reading job counts failed", slog.Any("error", err))
			}
			continue
		}
		fmt.Fprintf(a.stdout, "[%4s] enqueued %d | pending %d | running %d | completed %d | failed %d | canceled %d\n",
			time.Since(start).Round(time.Second), enqueued.Load(),
			c.byStatus[db.TasukiJobStatusPending], c.byStatus[db.TasukiJobStatusRunning],
			c.byStatus[db.TasukiJobStatusCompleted], c.byStatus[db.TasukiJobStatusFailed],
			c.byStatus[db.TasukiJobStatusCanceled])
	}
}

// demoStatusCounts reads the number of the demo queue's jobs by status.
func demoStatusCounts(ctx context.Context, queries *db.Queries) (demoCounts, error) {
	rows, err := queries.JobCountByStatus(ctx)
	if err != nil {
		return demoCounts{}, dberr.Wrap("count jobs", err)
	}
	c := demoCounts{byStatus: make(map[db.TasukiJobStatus]int64)}
	for _, r := range rows {
		if r.Queue == demoQueue {
			c.byStatus[r.Status] = r.Count
		}
	}
	return c, nil
}

// demoRunStatusCounts reads the status of every job in ids, all of the
// demo's queue, walking the queue's pages from the newest job down to the
// oldest of ids.
func demoRunStatusCounts(ctx context.Context, admin *tasuki.Admin, ids []int64) (demoRunCounts, error) {
	c := demoRunCounts{enqueued: int64(len(ids)), byStatus: make(map[tasuki.Status]int64)}
	if len(ids) == 0 {
		return c, nil
	}
	ours := make(map[int64]bool, len(ids))
	oldest := ids[0]
	for _, id := range ids {
		ours[id] = true
		oldest = min(oldest, id)
	}
	found := int64(0)
	p := tasuki.ListParams{Queue: demoQueue, Limit: 10_000}
	for {
		page, err := admin.List(ctx, p)
		if err != nil {
			return demoRunCounts{}, fmt.Errorf("demo: read this run's jobs: %w", err)
		}
		for _, j := range page.Jobs {
			if ours[j.ID] {
				c.byStatus[j.Status]++
				found++
			}
		}
		if page.Next == 0 || len(page.Jobs) == 0 || page.Jobs[len(page.Jobs)-1].ID <= oldest {
			break
		}
		p.After = page.Next
	}
	c.missing = c.enqueued - found
	return c, nil
}

// printSummary prints what the demo did: this run's jobs by their status
// in the database, then every job in the demo's queue by status, which
// with a database URL may include earlier runs' jobs.
func (a *app) printSummary(c demoCounts, elapsed time.Duration) {
	fmt.Fprintf(a.stdout, "\ndemo summary after %s:\n", elapsed.Round(100*time.Millisecond))
	fmt.Fprintf(a.stdout, "  enqueued   %d\n", c.run.enqueued)
	for _, s := range []tasuki.Status{tasuki.StatusCompleted, tasuki.StatusPending, tasuki.StatusRunning,
		tasuki.StatusFailed, tasuki.StatusCanceled} {
		fmt.Fprintf(a.stdout, "  %-10s %d\n", s, c.run.byStatus[s])
	}
	if c.run.missing > 0 {
		fmt.Fprintf(a.stdout, "  deleted    %d\n", c.run.missing)
	}
	fmt.Fprintf(a.stdout, "  queue %q now holds: pending %d, running %d, completed %d, failed %d, canceled %d\n",
		demoQueue, c.byStatus[db.TasukiJobStatusPending], c.byStatus[db.TasukiJobStatusRunning],
		c.byStatus[db.TasukiJobStatusCompleted], c.byStatus[db.TasukiJobStatusFailed],
		c.byStatus[db.TasukiJobStatusCanceled])
}

// durationOrForever is the duration as logged: "until Ctrl-C" for 0.
func durationOrForever(d time.Duration) any {
	if d == 0 {
		return "until Ctrl-C"
	}
	return d
}
