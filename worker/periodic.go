package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/robfig/cron/v3"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/tasuki"
)

// Schedule says when the ticks of a periodic job are. Every process must
// compute the same ticks from the same schedule: each tick's job is
// enqueued once under a key of the tick.
type Schedule interface {
	// Next returns the first tick after t.
	Next(t time.Time) time.Time
	// String describes the schedule, for `tasuki periodic`.
	String() string
}

type every time.Duration

// Every returns a schedule with a tick every d: at the multiples of d since
// the zero time.Time, in UTC (every hour on the hour, every day at
// midnight UTC). d is at least one second.
func Every(d time.Duration) Schedule { return every(d) }

func (e every) Next(t time.Time) time.Time {
	d := time.Duration(e)
	return t.UTC().Truncate(d).Add(d)
}

func (e every) String() string { return "every " + time.Duration(e).String() }

type cronSchedule struct {
	spec  string
	sched cron.Schedule
}

// Cron parses a cron expression of five fields (minute, hour, day of month,
// month, day of week) or a descriptor such as @daily or @hourly, by
// github.com/robfig/cron/v3. A prefix CRON_TZ=Europe/Berlin gives its
// time zone; it defaults to UTC. A spec that does not parse gives an
// *tasuki.InvalidOptionError. In a zone with daylight saving time, a tick
// in the hour the clocks skip does not happen that day, and one in the
// hour they repeat happens twice (robfig/cron's rule): schedule around
// 2:00–3:00 local time, or use UTC.
func Cron(spec string) (Schedule, error) {
	full := spec
	if !strings.HasPrefix(full, "CRON_TZ=") && !strings.HasPrefix(full, "TZ=") {
		full = "CRON_TZ=UTC " + full
	}
	s, err := cron.ParseStandard(full)
	if err != nil {
		return nil, &tasuki.InvalidOptionError{Option: "Cron spec", Value: spec, Reason: err.Error()}
	}
	return cronSchedule{spec: spec, sched: s}, nil
}

func (c cronSchedule) Next(t time.Time) time.Time { return c.sched.Next(t) }
func (c cronSchedule) String() string             { return c.spec }

// Missed says what a process that starts does with the ticks of a schedule
// that passed while no process ran it.
type Missed int

const (
	// SkipMissed enqueues nothing for them: the schedule goes on from its
	// next tick. The default.
	SkipMissed Missed = iota
	// RunMissedOnce enqueues one job, for the latest of them.
	RunMissedOnce
)

// PeriodicOpts adjust a periodic job.
type PeriodicOpts struct {
	// RunOnStart enqueues a job when the worker starts running the
	// schedule, besides its ticks: each process that starts enqueues one
	// (processes that start in the same minute, one together). Defaults
	// to false.
	RunOnStart bool
	// Missed says what to do with ticks that passed while no process ran
	// the schedule. Defaults to SkipMissed.
	Missed Missed
}

// PeriodicJob is a schedule that enqueues jobs of one kind, made by
// Periodic and run by a worker (Worker.AddPeriodic).
type PeriodicJob struct {
	name  string
	kind  string
	sched Schedule
	opts  PeriodicOpts
	// make returns a tick's payload and insert options.
	make func() (any, *tasuki.InsertOpts)
	err  error
}

// Periodic returns a periodic job: at each tick of sched, a job of T's kind
// with the payload and insert options that payload returns (nil options:
// the kind's defaults), scheduled at the tick. name identifies the schedule
// in the database (1 to 128 characters): every process that runs it must
// give it the same name and schedule, and each tick's job is enqueued once
// however many processes run it (by a unique key of the name and the
// tick, which replaces any InsertOpts.Unique the options hold). Its
// metadata says where it came from: "periodic" (the name) and
// "periodic_tick" (the tick, RFC 3339), or "periodic_start" for a job of
// RunOnStart. A job
// whose tick passed while its process was busy is enqueued as soon as it
// can be, still once.
func Periodic[T any](name string, sched Schedule, payload func() (T, *tasuki.InsertOpts), opts PeriodicOpts) PeriodicJob {
	p := PeriodicJob{name: name, sched: sched, opts: opts}
	switch n := utf8.RuneCountInString(name); {
	case n == 0 || n > 128 || !utf8.ValidString(name):
		p.err = &tasuki.InvalidOptionError{Option: "Periodic name", Value: name, Reason: "must be 1 to 128 characters of UTF-8"}
	case sched == nil:
		p.err = &tasuki.InvalidOptionError{Option: "Periodic schedule", Value: name, Reason: "must not be nil: use Every or Cron"}
	case payload == nil:
		p.err = &tasuki.InvalidOptionError{Option: "Periodic payload", Value: name, Reason: "must not be nil"}
	}
	if e, ok := sched.(every); ok && time.Duration(e) < time.Second {
		p.err = &tasuki.InvalidOptionError{Option: "Every", Value: time.Duration(e), Reason: "must be at least 1s"}
	}
	if p.err == nil && sched.Next(time.Now()).IsZero() {
		p.err = &tasuki.InvalidOptionError{Option: "Periodic schedule", Value: sched.String(), Reason: "it has no tick to come (a date that does not exist, say)"}
	}
	if p.err != nil {
		return p
	}
	p.kind, p.err = tasuki.KindOf[T]("Periodic kind", "")
	p.make = func() (any, *tasuki.InsertOpts) { v, o := payload(); return v, o }
	return p
}

// periodicState is one schedule as the worker runs it.
type periodicState struct {
	job     PeriodicJob
	next    time.Time // zero: not started
	started bool
}

// periodics holds the schedules of a worker; safe for concurrent use.
type periodics struct {
	mu     sync.Mutex
	byName map[string]*periodicState
	wake   chan struct{}
}

// AddPeriodic has the worker run p, now or from Run on; a schedule of the
// same name is replaced. It returns p's *tasuki.InvalidOptionError, if
// Periodic found one.
func (w *Worker) AddPeriodic(p PeriodicJob) error {
	if p.err != nil {
		return p.err
	}
	w.periodic.mu.Lock()
	w.periodic.byName[p.name] = &periodicState{job: p}
	w.periodic.mu.Unlock()
	select {
	case w.periodic.wake <- struct{}{}:
	default:
	}
	return nil
}

// RemovePeriodic stops running the schedule of that name; the jobs it
// enqueued stay. It reports whether there was one.
func (w *Worker) RemovePeriodic(name string) bool {
	w.periodic.mu.Lock()
	defer w.periodic.mu.Unlock()
	_, ok := w.periodic.byName[name]
	delete(w.periodic.byName, name)
	return ok
}

// maxCatchUp bounds the ticks stepped over to find the latest missed one.
const maxCatchUp = 1_000_000

// runPeriodic enqueues the ticks of the worker's schedules until ctx ends.
func (w *Worker) runPeriodic(ctx context.Context) {
	// Made with the first schedule: a worker without any sends nothing.
	var ins *tasuki.Inserter
	defer func() {
		if ins != nil {
			flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = ins.Flush(flushCtx)
		}
	}()
	q := db.New(w.pool)
	for {
		w.periodic.mu.Lock()
		states := make([]*periodicState, 0, len(w.periodic.byName))
		for _, s := range w.periodic.byName {
			states = append(states, s)
		}
		w.periodic.mu.Unlock()
		wait := time.Minute
		if len(states) > 0 && ins == nil {
			var err error
			if ins, err = tasuki.NewInserter(w.pool, tasuki.ClientConfig{InsertMiddleware: w.cfg.InsertMiddleware, Events: w.cfg.Events}); err != nil {
				w.log.Error("tasuki: periodic jobs cannot run", slog.Any("error", err))
				return
			}
		}
		for _, s := range states {
			if err := w.tickPeriodic(ctx, q, ins, s); err != nil && ctx.Err() == nil {
				w.log.Warn("tasuki: periodic job not enqueued; trying again", slog.String("periodic", s.job.name), slog.Any("error", err))
				wait = min(wait, time.Second)
				continue
			}
			wait = min(wait, max(time.Until(s.next), 0))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.periodic.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// tickPeriodic starts s when it was not, and enqueues its due tick.
func (w *Worker) tickPeriodic(ctx context.Context, q *db.Queries, ins *tasuki.Inserter, s *periodicState) error {
	now := time.Now()
	p := s.job
	if s.next.IsZero() {
		if p.opts.RunOnStart && !s.started {
			if err := w.enqueueTick(ctx, ins, p, now.UTC().Truncate(time.Minute), "start", nil); err != nil {
				return err
			}
		}
		s.started = true
		next := p.sched.Next(now)
		var last *time.Time
		if p.opts.Missed == RunMissedOnce {
			var err error
			last, err = q.PeriodicGet(ctx, p.name)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
		}
		if last != nil {
			if missed := latestTick(p.sched, *last, now); !missed.IsZero() {
				if err := w.enqueueTick(ctx, ins, p, missed, "tick", &next); err != nil {
					return err
				}
				s.next = next
				return nil
			}
		}
		if err := q.PeriodicRecord(ctx, db.PeriodicRecordParams{Name: p.name, Kind: p.kind, Schedule: p.sched.String(), LastTick: last, NextTick: &next}); err != nil {
			return err
		}
		s.next = next
	}
	if s.next.IsZero() {
		return nil // no tick to come
	}
	if now.Before(s.next) {
		return nil
	}
	// The latest due tick: ticks that passed while this process was held
	// up are enqueued once, as one.
	tick := s.next
	if later := latestTick(p.sched, tick, now); !later.IsZero() {
		tick = later
	}
	next := p.sched.Next(tick)
	if err := w.enqueueTick(ctx, ins, p, tick, "tick", &next); err != nil {
		return err
	}
	s.next = next
	return nil
}

// latestTick returns the latest tick of sched after after and at or
// before now; zero when there is none. It looks back from now over
// windows of growing length, so that it steps over few ticks however long
// ago after is.
func latestTick(sched Schedule, after, now time.Time) time.Time {
	for _, window := range []time.Duration{time.Minute, time.Hour, 24 * time.Hour, 32 * 24 * time.Hour, 367 * 24 * time.Hour, 10 * 367 * 24 * time.Hour} {
		from := now.Add(-window)
		if from.Before(after) {
			from = after
		}
		var latest time.Time
		for t, i := sched.Next(from), 0; !t.IsZero() && !t.After(now) && i < maxCatchUp; t, i = sched.Next(t), i+1 {
			latest = t
		}
		if !latest.IsZero() || !from.After(after) {
			return latest
		}
	}
	return time.Time{}
}

// allStatuses: a tick's job blocks another for the same tick in any
// status, for as long as it exists.
var allStatuses = []tasuki.Status{tasuki.StatusPending, tasuki.StatusRunning, tasuki.StatusCompleted, tasuki.StatusFailed, tasuki.StatusCanceled}

// enqueueTick inserts p's job for the tick at, once over all processes,
// and when next is given records at as the schedule's last tick and next
// as its next, in the same transaction: a process that dies in between
// leaves neither, and a later one does not run the tick again.
func (w *Worker) enqueueTick(ctx context.Context, ins *tasuki.Inserter, p PeriodicJob, at time.Time, what string, next *time.Time) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("tasuki: periodic %q: its payload function panicked: %v", p.name, v)
		}
	}()
	payload, opts := p.make()
	o := tasuki.InsertOpts{}
	if opts != nil {
		o = *opts
	}
	o.RunAt, o.Delay = at, 0
	// The tick stays readable after a retry moved the job's schedule.
	meta := make(map[string]any, len(o.Metadata)+2)
	for k, v := range o.Metadata {
		meta[k] = v
	}
	meta["periodic"], meta["periodic_"+what] = p.name, at.UTC().Format(time.RFC3339Nano)
	o.Metadata = meta
	o.Unique = &tasuki.UniqueOpts{Key: fmt.Sprintf("periodic %s %s %s", p.name, what, at.UTC().Format(time.RFC3339Nano)), Statuses: allStatuses}
	return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		if _, err := ins.InsertManyTx(ctx, tx, []tasuki.InsertManyParams{{Payload: payload, Kind: p.kind, InsertOpts: &o}}); err != nil {
			return err
		}
		if next == nil {
			return nil
		}
		return db.New(tx).PeriodicRecord(ctx, db.PeriodicRecordParams{Name: p.name, Kind: p.kind, Schedule: p.sched.String(), LastTick: &at, NextTick: next})
	})
}
