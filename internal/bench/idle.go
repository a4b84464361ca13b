package bench

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/tasuki"
)

// IdleResult is the outcome of Idle.
type IdleResult struct {
	// Kinds and Queues are how many kinds the worker had handlers for and
	// how many queues it worked.
	Kinds, Queues int
	Window        time.Duration
	PollInterval  time.Duration
	// Queries is the number of statements the worker sent in Window, over
	// all its connections; ByName splits them by statement name (sqlc's,
	// or a statement's first word).
	Queries int64
	ByName  map[string]int64
	// MaxConns is the most connections the worker was seen to hold at once
	// in Window (sampled every tenth of a poll interval, at most every
	// 100 ms), EndConns those at its end, both from pg_stat_activity:
	// its own pool's ('tasuki-worker') and its LISTEN connection
	// ('tasuki-listener'). EndByName splits EndConns by application_name.
	MaxConns, EndConns int
	EndByName          map[string]int
	// Busy is the number of connections that sent a statement in Window.
	// The worker's own pool closes a connection only after it has been
	// idle for a minute, so one opened at start-up (its first cleaner run
	// and its first lease at once, say) is held, unused, for a minute or
	// two: MaxConns counts it, Busy does not.
	Busy int
}

// PerPoll is the number of statements per poll interval.
func (r IdleResult) PerPoll() float64 {
	return float64(r.Queries) / (r.Window.Seconds() / r.PollInterval.Seconds())
}

func (r IdleResult) String() string {
	return fmt.Sprintf("idle: %d kind%s over %d queue%s, poll interval %s: %d statements in %s with nothing to do: %.2f per poll interval (%s); connections held: %d at most, %d at the end (%s), %d of them sent statements",
		r.Kinds, plural(r.Kinds), r.Queues, plural(r.Queues), r.PollInterval, r.Queries, r.Window, r.PerPoll(),
		counts(r.ByName), r.MaxConns, r.EndConns, counts(r.EndByName), r.Busy)
}

// counts writes a map's counts, largest first.
func counts[N int | int64](m map[string]N) string {
	names := slices.Collect(maps.Keys(m))
	slices.SortFunc(names, func(a, b string) int {
		if m[a] != m[b] {
			return int(m[b] - m[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, m[n]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// idleSettle is how long Idle lets the worker start before it counts: at
// least this, and at least idleSettlePolls poll intervals.
const (
	idleSettle      = 2 * time.Second
	idleSettlePolls = 5
)

// Idle starts one worker with handlers for Kinds kinds over Queues queues
// (PollInterval; every other setting at its default) and no jobs, lets it
// settle, then counts for IdleWindow the statements it sends, over all its
// connections (a tracer on the pool it is given, which it copies for its
// own pool and its LISTEN connection), and the connections it holds
// (pg_stat_activity, through a pool of the run's own).
func Idle(ctx context.Context, cfg Config) (IdleResult, error) {
	cfg.defaults()
	res := IdleResult{Kinds: cfg.Kinds, Queues: cfg.Queues, Window: cfg.IdleWindow, PollInterval: cfg.PollInterval}
	if cfg.Kinds < 1 || cfg.Queues < 1 {
		return res, fmt.Errorf("bench: idle needs at least 1 kind and 1 queue, not %d kinds and %d queues", cfg.Kinds, cfg.Queues)
	}
	counter := &queryCounter{}
	pool, err := open(ctx, cfg.URL, counter)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	// The run's own statements go through a pool without the tracer.
	lookPool, err := open(ctx, cfg.URL, nil)
	if err != nil {
		return res, err
	}
	defer lookPool.Close()
	look := db.New(lookPool)
	stop, err := spreadWorker(pool, queueNames("idle", cfg.Queues), kindNames(cfg.Kinds), 0, cfg.PollInterval, nil,
		func(context.Context, *tasuki.Job[noop]) error { return nil })
	if err != nil {
		return res, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = stop()
		}
	}()
	held := func() (int, map[string]int, error) {
		rows, err := look.BenchWorkerConnections(ctx, counter.connPIDs())
		if err != nil {
			return 0, nil, err
		}
		total, byName := 0, make(map[string]int, len(rows))
		for _, r := range rows {
			total += int(r.Connections)
			byName[r.ApplicationName] = int(r.Connections)
		}
		return total, byName, nil
	}

	if !sleep(ctx, max(idleSettle, idleSettlePolls*cfg.PollInterval)) {
		return res, ctx.Err()
	}
	before, beforeNames, beforeConns := counter.n.Load(), counter.names(), counter.conns()
	sample := time.NewTicker(max(cfg.PollInterval/10, 100*time.Millisecond))
	defer sample.Stop()
	end := time.After(cfg.IdleWindow)
	for done := false; !done; {
		n, _, err := held()
		if err != nil {
			return res, err
		}
		res.MaxConns = max(res.MaxConns, n)
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-end:
			done = true
		case <-sample.C:
		}
	}
	res.Queries = counter.n.Load() - before
	res.ByName = counter.names()
	for name, n := range beforeNames {
		if res.ByName[name] -= n; res.ByName[name] == 0 {
			delete(res.ByName, name)
		}
	}
	for pid, n := range counter.conns() {
		if n > beforeConns[pid] {
			res.Busy++
		}
	}
	if res.EndConns, res.EndByName, err = held(); err != nil {
		return res, err
	}
	res.MaxConns = max(res.MaxConns, res.EndConns)
	stopped = true
	return res, stop()
}

// sleep waits d, or until ctx ends: false then.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
