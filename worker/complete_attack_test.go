package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync"
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

// leaseExpiry reads a job's lease_expires_at (nil: no lease).
func leaseExpiry(ctx context.Context, pool *pgxpool.Pool, id int64) (*time.Time, error) {
	var at *time.Time
	err := pool.QueryRow(ctx, `SELECT lease_expires_at FROM tasuki_job WHERE id = $1`, id).Scan(&at)
	return at, err
}

// renewalOutcome is what a handler saw while it waited for its lease to be
// renewed.
type renewalOutcome struct {
	renewed bool
	cause   error // the context's cause, when it ended first
	err     error
}

// waitRenewal waits until the job's lease in the database is renewed past
// what it is now, or ctx ends.
func waitRenewal(ctx context.Context, pool *pgxpool.Pool, id int64, read chan<- struct{}) renewalOutcome {
	db := context.WithoutCancel(ctx)
	first, err := leaseExpiry(db, pool, id)
	if read != nil {
		close(read)
	}
	if err != nil || first == nil {
		return renewalOutcome{err: errors.Join(err, errors.New("no lease to renew"))}
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return renewalOutcome{cause: context.Cause(ctx)}
		case <-tick.C:
		}
		at, err := leaseExpiry(db, pool, id)
		if err != nil {
			return renewalOutcome{err: err}
		}
		if at != nil && at.After(*first) {
			return renewalOutcome{renewed: true}
		}
	}
}

// Guards against this: CompleteTx marks the lease "completing" (heartbeats skip it)
// before it knows whether tx will commit, and nothing clears the mark:
// not when CompleteTx fails (ErrLeaseLost, a tx on another database) and
// not when tx rolls back. The doc says that after a rollback "the attempt
// ends as the handler's return value says", but the handler has silently
// lost its heartbeats: a handler that goes on after the rollback (retries
// its transaction, does other work) longer than 3/4 of LeaseDuration is
// canceled with ErrLeaseLost, its lease lapses, and the job is rescued
// and run again while the first attempt may still be running. Fix: clear
// the mark when CompleteTx fails, and learn the tx's fate (e.g. keep
// renewing with SKIP LOCKED semantics, or clear the mark if the row is
// found still leased under our token after tx ended).
func TestCompleteTxAttackRollbackStopsHeartbeats(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	got := make(chan renewalOutcome, 4)
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		if err := worker.CompleteTx(ctx, tx, job); err != nil {
			_ = tx.Rollback(ctx)
			return err
		}
		// The business write after it fails: the transaction rolls back,
		// and the handler goes on (say, to try again).
		if err := tx.Rollback(ctx); err != nil {
			return err
		}
		got <- waitRenewal(ctx, pool, job.ID, nil)
		return nil
	}, worker.Config{LeaseDuration: 2 * time.Second, RetryPolicy: retryIn(time.Hour)})
	running(t, w)
	id := insert(t, client, task{}, nil)
	o := receive(t, got, "the handler after its rollback")
	require.NoError(t, o.err)
	assert.True(t, o.renewed, "the lease of a handler whose CompleteTx rolled back is no longer renewed; its context ended with: %v", o.cause)
	assert.NotErrorIs(t, o.cause, worker.ErrLeaseLost)
	eventually(t, "the job completes", func() bool { return jobStatus(t, client, id) == tasuki.StatusCompleted })
}

// heartbeatGate holds back the first JobHeartbeatMany statement after it
// is armed, after the writer chose the leases it renews and before the
// statement reaches the database: a heartbeat in flight.
type heartbeatGate struct {
	mu    sync.Mutex
	armed bool
	held  chan struct{}
	open  chan struct{}
}

func newHeartbeatGate() *heartbeatGate {
	return &heartbeatGate{held: make(chan struct{}), open: make(chan struct{})}
}

func (g *heartbeatGate) arm() {
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
}

func (g *heartbeatGate) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !strings.Contains(data.SQL, "-- name: JobHeartbeatMany :many") {
		return ctx
	}
	g.mu.Lock()
	hold := g.armed
	g.armed = false
	g.mu.Unlock()
	if hold {
		close(g.held)
		<-g.open
	}
	return ctx
}

func (g *heartbeatGate) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Guards against this: the heartbeat is one UPDATE over every lease the worker holds,
// which waits on row locks. CompleteTx takes the job row's lock in the
// handler's transaction, which may stay open up to LeaseDuration by the
// doc. A heartbeat that chose its leases just before CompleteTx marked
// its job "completing" (the window is the heartbeat's round trip, held
// open here by a tracer) blocks on that row until the handler's
// transaction ends or the statement times out (LeaseDuration/2): no
// lease of the whole worker is renewed meanwhile, the heartbeat fails
// and other, healthy jobs come close to losing their leases (ErrLeaseLost
// once less than a quarter of the lease is left). Here job X waits for
// its lease to be renewed while job Y's CompleteTx transaction waits for
// X: nothing is renewed until the heartbeat times out. Fix: renew with
// FOR UPDATE SKIP LOCKED (a locked row is not a lost lease) or NOWAIT and
// retry the others, or have CompleteTx wait out a heartbeat in flight.
func TestCompleteTxAttackOpenTxStallsEveryHeartbeat(t *testing.T) {
	t.Parallel()
	_, url := testdb.Schema(t)
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = max(cfg.MaxConns, 8)
	gate := newHeartbeatGate()
	cfg.ConnConfig.Tracer = batchAsQuery{gate}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	testdb.MigrateUp(t, pool)
	var gateOnce sync.Once
	openGate := func() { gateOnce.Do(func() { close(gate.open) }) }

	client := newClient[task](t, pool)
	started := make(chan int, 2)
	goY, completedY := make(chan struct{}), make(chan error, 1)
	checkX, readX := make(chan struct{}), make(chan struct{})
	outX := make(chan renewalOutcome, 1)
	xDone := make(chan struct{})
	watch := newLogWatch()
	hbFailed := watch.on("heartbeat failed")
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		started <- job.Payload.N
		switch job.Payload.N {
		case 1: // X: a plain job, waiting on its lease
			<-checkX
			outX <- waitRenewal(ctx, pool, job.ID, readX)
			return nil
		default: // Y: completes in its own transaction
			<-goY
			bg := context.WithoutCancel(ctx)
			tx, err := pool.Begin(bg)
			if err != nil {
				completedY <- err
				return err
			}
			defer tx.Rollback(bg) //nolint:errcheck
			if err := worker.CompleteTx(ctx, tx, job); err != nil {
				completedY <- err
				return err
			}
			completedY <- nil
			select { // the transaction's own work, well within LeaseDuration
			case <-xDone:
			case <-time.After(bound):
			}
			return tx.Commit(bg)
		}
	}, worker.Config{Concurrency: 2, LeaseDuration: 4 * time.Second, RetryPolicy: retryIn(time.Hour), Logger: watch.logger()})
	running(t, w)
	t.Cleanup(openGate)
	insert(t, client, task{N: 1}, nil)
	insert(t, client, task{N: 2}, nil)
	receive(t, started, "a handler")
	receive(t, started, "the other handler")

	gate.arm()
	waitFor(t, gate.held, "a heartbeat in flight")
	close(goY)
	require.NoError(t, receive(t, completedY, "Y's CompleteTx"))
	close(checkX)
	waitFor(t, readX, "X reads its lease")
	openGate()
	o := receive(t, outX, "X's lease renewed, or X stopped")
	close(xDone)
	require.NoError(t, o.err)
	assert.True(t, o.renewed, "X's lease was not renewed: its context ended with %v", o.cause)
	select {
	case <-hbFailed:
		t.Errorf("the heartbeat of every lease failed, held up by Y's CompleteTx transaction")
	default:
	}
}
