package worker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// An idle worker's retention cleaner holds the idle gate for the whole of
// its statement, and that statement has no timeout: when the DELETE waits
// on a lock (here an application table whose foreign key to tasuki_job is
// ON DELETE SET NULL, and whose row an application transaction holds FOR
// UPDATE), the fetch loop waits at the gate for as long as that lock is
// held, and the worker leases nothing at all. Before the gate, the cleaner
// waited on a connection of its own and only the cleaning was delayed.
//
// The job is checked while the lock is still held, so nothing is timed:
// the bound only keeps the broken case from hanging (a lease is due at
// once, by the insert's notification, or within a 50 ms poll).
//
// Shutdown is also exercised with the gate held by the blocked statement:
// the worker is stopped before the application transaction ends (its
// rollback is registered first, so it runs after the stop).
func TestIdleGateAttackCleanerWaitingOnLockStopsLeasing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testdb.Schema(t)
	admin := testdb.Pool(t, url)
	testdb.MigrateUp(t, admin)

	// A finished job past its queue's retention, referenced by a row of
	// the application's.
	client := ktClient[task](t, admin, tasuki.DefaultQueue)
	old, err := client.Insert(ctx, task{N: 1}, nil)
	require.NoError(t, err)
	_, err = client.Cancel(ctx, old.ID)
	require.NoError(t, err)
	adm, err := tasuki.NewAdmin(admin)
	require.NoError(t, err)
	require.NoError(t, adm.SetRetention(ctx, tasuki.DefaultQueue, tasuki.Retention{Canceled: time.Millisecond}))
	_, err = admin.Exec(ctx, `CREATE TABLE app_order (id int PRIMARY KEY,
		job_id bigint REFERENCES tasuki_job (id) ON DELETE SET NULL)`)
	require.NoError(t, err)
	_, err = admin.Exec(ctx, `INSERT INTO app_order VALUES (1, $1)`, old.ID)
	require.NoError(t, err)

	// An application transaction holds the order row.
	tx, err := admin.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	_, err = tx.Exec(ctx, `SELECT 1 FROM app_order WHERE id = 1 FOR UPDATE`)
	require.NoError(t, err)

	appName := fmt.Sprintf("ig-attack-%d", time.Now().UnixNano())
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["application_name"] = appName // the worker's own pool keeps it
	app, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(app.Close)

	var ran atomic.Int64
	w := newWorker(t, app, func(context.Context, *tasuki.Job[task]) error {
		ran.Add(1)
		return nil
	}, worker.Config{CleanInterval: 20 * time.Millisecond, PollInterval: 50 * time.Millisecond})
	running(t, w)

	cleanerWaits := func() bool {
		return ktCount(t, admin, `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND wait_event_type = 'Lock'
			  AND query LIKE '-- name: JobCleanRetained%'`, appName) > 0
	}
	eventually(t, "the cleaner's DELETE waiting on the application's lock", cleanerWaits)

	_, err = client.Insert(ctx, task{N: 2}, nil)
	require.NoError(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for ran.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	assert.EqualValues(t, 1, ran.Load(),
		"jobs run by an idle worker while its cleaner waits on a lock (cleaner still waiting: %v, pending: %d)",
		cleanerWaits(), countStatus(t, admin, tasuki.StatusPending))
}

// An idle worker's sweeper holds the idle gate for the whole of its
// statement, up to sweepTimeout (at least a minute): the very reads the
// sweeper was moved off the fetch loop for ("so that none delays a
// lease"), the looks behind the positions that an old snapshot makes
// slow, now keep the idle worker from leasing while they run. An old
// snapshot is stood in for by a tracer: the lease statements take 60 ms
// (so reads from the heads count as expensive and the idle worker's
// sweeper looks behind the positions), and the sweeper's look for the
// heads of the priorities does not end until the test lets it.
//
// Counted, not timed: the handler records whether the look was still in
// flight when it ran. The bound only keeps the broken case from hanging;
// it is well below the sweeper's statement timeout.
func TestIdleGateAttackSlowSweepDelaysLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testdb.Schema(t)
	admin := testdb.Pool(t, url)
	testdb.MigrateUp(t, admin)

	tracer := &sweepBlockTracer{leaseDelay: 60 * time.Millisecond, release: make(chan struct{}), started: make(chan struct{})}
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.ConnConfig.Tracer = batchAsQuery{tracer}
	app, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(app.Close)
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(tracer.release) }) }
	t.Cleanup(release)

	var ran, ranDuringLook atomic.Int64
	w := newWorker(t, app, func(context.Context, *tasuki.Job[task]) error {
		ran.Add(1)
		if tracer.inFlight.Load() > 0 {
			ranDuringLook.Add(1)
		}
		return nil
	}, worker.Config{PollInterval: 100 * time.Millisecond})
	stop := running(t, w)

	select {
	case <-tracer.started:
	case <-time.After(time.Minute):
		t.Fatal("the sweeper never looked for the heads")
	}
	client := ktClient[task](t, admin, tasuki.DefaultQueue)
	_, err = client.Insert(ctx, task{N: 1}, nil)
	require.NoError(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for ran.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	inFlight := tracer.inFlight.Load()
	release()
	stop()
	assert.EqualValues(t, 1, ranDuringLook.Load(),
		"jobs an idle worker ran while its sweeper's look was in flight (ran at all before the bound: %d, look in flight at the bound: %d)",
		ran.Load(), inFlight)
}

// sweepBlockTracer makes the worker's lease statements slow and holds the
// sweeper's JobRunnableHeads statements until release is closed (or their
// context ends).
type sweepBlockTracer struct {
	leaseDelay time.Duration
	release    chan struct{}
	started    chan struct{}
	once       sync.Once
	inFlight   atomic.Int64
}

func (s *sweepBlockTracer) TraceQueryStart(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if c.PgConn().ParameterStatus("application_name") != "tasuki-worker" {
		return ctx
	}
	switch {
	case strings.Contains(d.SQL, "-- name: JobLease "):
		time.Sleep(s.leaseDelay)
	case strings.Contains(d.SQL, "-- name: JobRunnableHeads "):
		s.inFlight.Add(1)
		s.once.Do(func() { close(s.started) })
		select {
		case <-s.release:
		case <-ctx.Done():
		}
		s.inFlight.Add(-1)
	}
	return ctx
}

func (s *sweepBlockTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
