package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// gaBound only keeps a broken test from hanging; nothing is measured
// against it.
const gaBound = 60 * time.Second

func gaExec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), gaBound)
	defer cancel()
	_, err := pool.Exec(ctx, sql, args...)
	require.NoError(t, err, sql)
}

// gaWait polls cond until it holds or bound passes.
func gaWait(bound time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(bound)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func gaBackendPID(t *testing.T, p *pgxpool.Pool) uint32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), gaBound)
	defer cancel()
	var pid uint32
	require.NoError(t, p.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	return pid
}

// A statement that fails in the database while the worker is busy (a
// trigger of the application's refusing a row, which the worker expects
// and handles row by row) costs the worker its pool connection: pgx's
// pipelined batch, when the rows of its last statement ended in an error,
// returns from Close without reading the batch's end, so the connection
// is still busy when it goes back to the pool, and the pool closes it.
// The next statement opens a new connection (and, with the default exec
// mode, prepares every statement again). A statement sent alone, as an
// idle worker sends it, keeps its connection. Exec reads the batch to its
// end and keeps it too.
func TestGenericAttackFailedStatementCostsTheConnection(t *testing.T) {
	t.Skip("known, not fixed: after a statement error in a batch pgx gives the connection back busy and the pool closes it; the next statement reconnects (no job is affected)")
	t.Parallel()
	ctx := context.Background()
	base := testdb.New(t)
	gaExec(t, base, `CREATE FUNCTION ga_refuse_lease() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.status = 'pending' AND NEW.status = 'running' AND NEW.payload->>'mode' = 'stuck' THEN
				RAISE EXCEPTION 'the application refuses this lease';
			END IF;
			RETURN NEW;
		END $$`)
	gaExec(t, base, `CREATE TRIGGER ga_refuse_lease BEFORE UPDATE ON tasuki_job FOR EACH ROW EXECUTE FUNCTION ga_refuse_lease()`)
	gaExec(t, base, `INSERT INTO tasuki_job (queue, kind, payload) VALUES ('default', 'task', '{"mode": "stuck"}')`)

	const failing = `SELECT 1 / (v - v) FROM (VALUES (1)) AS x(v)`
	query := func(t *testing.T, ctx context.Context, g *genericPlans) error {
		rows, err := g.Query(ctx, failing)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
		}
		return rows.Err()
	}
	cases := []struct {
		name string
		busy bool
		run  func(*testing.T, context.Context, *genericPlans) error
	}{
		{"busy/lease refused by a trigger", true, func(t *testing.T, ctx context.Context, g *genericPlans) error {
			_, err := db.New(g).JobLease(ctx, testdb.Lease(db.JobLeaseParams{
				LeaseUs: time.Minute.Microseconds(), SkipIds: []int64{}, OnlyIds: []int64{},
			}, "default", "task", 10))
			// The worker still tells the row's refusal from an outage
			// (its one-job-per-statement fallback depends on it).
			assert.True(t, dberr.RowError(err), "a row's refusal through the batch is not a RowError: %v", err)
			return err
		}},
		{"busy/query", true, query},
		{"busy/queryrow", true, func(t *testing.T, ctx context.Context, g *genericPlans) error {
			var v int
			return g.QueryRow(ctx, failing).Scan(&v)
		}},
		{"busy/query scanned into a wrong type", true, func(t *testing.T, ctx context.Context, g *genericPlans) error {
			rows, err := g.Query(ctx, `SELECT 'not a number'::text`)
			if err != nil {
				return err
			}
			defer rows.Close()
			var v int
			for rows.Next() {
				if err := rows.Scan(&v); err != nil {
					return err
				}
			}
			return rows.Err()
		}},
		// Controls: the connection is kept.
		{"busy/exec", true, func(t *testing.T, ctx context.Context, g *genericPlans) error {
			_, err := g.Exec(ctx, failing)
			return err
		}},
		{"idle/query", false, query},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := onePool(t, base)
			g := &genericPlans{pool: p, busy: func() bool { return c.busy }}
			before := gaBackendPID(t, p)
			opened := p.Stat().NewConnsCount()
			sctx, cancel := context.WithTimeout(ctx, gaBound)
			err := c.run(t, sctx, g)
			cancel()
			require.Error(t, err)
			require.Equal(t, int32(0), p.Stat().AcquiredConns(), "connection not given back")
			after := gaBackendPID(t, p)
			assert.Equal(t, before, after, "the pool's connection was closed by a failed statement (%v), and a new one opened", err)
			assert.Equal(t, opened, p.Stat().NewConnsCount(), "connections opened for the statement after a failed one")
		})
	}
}

// gaPlans collects the plans auto_explain reports as notices.
type gaPlans struct {
	mu    sync.Mutex
	plans []string
}

func (g *gaPlans) notice(_ *pgconn.PgConn, n *pgconn.Notice) {
	g.mu.Lock()
	g.plans = append(g.plans, n.Message)
	g.mu.Unlock()
}

func (g *gaPlans) take() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := g.plans
	g.plans = nil
	return out
}

var (
	gaActual  = regexp.MustCompile(`actual rows=(\d+) loops=(\d+)`)
	gaRemoved = regexp.MustCompile(`Rows Removed by (?:Filter|Index Recheck): (\d+)`)
)

// gaRowsRead adds up the rows the plans' nodes on tasuki_job (and its
// indexes) returned and the rows their filters removed: about how many
// rows of the table the statement read.
func gaRowsRead(plans []string) (read int, summary string) {
	var b strings.Builder
	for _, plan := range plans {
		for _, line := range strings.Split(plan, "\n") {
			switch {
			case strings.Contains(line, " on tasuki_job"):
				if m := gaActual.FindStringSubmatch(line); m != nil {
					rows, _ := strconv.Atoi(m[1])
					loops, _ := strconv.Atoi(m[2])
					read += rows * loops
					fmt.Fprintln(&b, line)
				}
			case gaRemoved.MatchString(line):
				n, _ := strconv.Atoi(gaRemoved.FindStringSubmatch(line)[1])
				read += n
				fmt.Fprintln(&b, line)
			}
		}
	}
	return read, b.String()
}

// gaPool is a pool of one connection on base's database in the given exec
// mode; with plans, each statement's plan (with its actual row counts)
// goes there.
func gaPool(t *testing.T, base *pgxpool.Pool, mode pgx.QueryExecMode, plans *gaPlans) *pgxpool.Pool {
	t.Helper()
	cfg := base.Config()
	cfg.MaxConns, cfg.MinConns = 1, 0
	cfg.ConnConfig.DefaultQueryExecMode = mode
	if plans != nil {
		cfg.ConnConfig.OnNotice = plans.notice
		cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
			for _, s := range []string{
				`LOAD 'auto_explain'`,
				`SET auto_explain.log_min_duration = 0`,
				`SET auto_explain.log_level = 'notice'`,
				`SET auto_explain.log_nested_statements = on`,
				`SET auto_explain.log_analyze = on`,
				`SET auto_explain.log_timing = off`,
			} {
				if _, err := c.PgConn().Exec(ctx, s).ReadAll(); err != nil {
					return err
				}
			}
			return nil
		}
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

// gaFixture is a queue of n running jobs whose leases expired (in id
// order) and n runnable pending jobs (in id order).
type gaFixture struct {
	queue   string
	running []int64
	tokens  []pgtype.UUID
	pending []int64
}

func gaInsertFixture(t *testing.T, pool *pgxpool.Pool, queue string, n int) gaFixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), gaBound)
	defer cancel()
	f := gaFixture{queue: queue}
	rows, err := pool.Query(ctx, `INSERT INTO tasuki_job (queue, kind, payload, status, attempts, attempted_at, lease_token, lease_expires_at)
		SELECT $1, 'task', '{}', 'running', 1, now() - interval '2 hours', gen_random_uuid(),
		       now() - interval '1 hour' + i * interval '1 millisecond'
		FROM generate_series(1, $2::int) AS i
		ORDER BY i
		RETURNING id, lease_token`, queue, n)
	require.NoError(t, err)
	type run struct {
		id    int64
		token pgtype.UUID
	}
	var runs []run
	for rows.Next() {
		var r run
		require.NoError(t, rows.Scan(&r.id, &r.token))
		runs = append(runs, r)
	}
	require.NoError(t, rows.Err())
	slices.SortFunc(runs, func(a, b run) int { return cmp.Compare(a.id, b.id) })
	for _, r := range runs {
		f.running = append(f.running, r.id)
		f.tokens = append(f.tokens, r.token)
	}
	rows, err = pool.Query(ctx, `INSERT INTO tasuki_job (queue, kind, payload, scheduled_at)
		SELECT $1, 'task', '{}', now() - interval '1 hour' + i * interval '1 millisecond'
		FROM generate_series(1, $2::int) AS i
		ORDER BY i
		RETURNING id`, queue, n)
	require.NoError(t, err)
	for rows.Next() {
		var id int64
		require.NoError(t, rows.Scan(&id))
		f.pending = append(f.pending, id)
	}
	require.NoError(t, rows.Err())
	slices.Sort(f.pending)
	return f
}

// While the worker is busy its statements run on generic plans, and a
// generic plan cannot drop "coalesce(cardinality(only_ids), 0) = 0 OR
// id = ANY(only_ids)" the way a custom plan does for a non-empty only_ids:
// the statements that name one job read a whole range of an index instead
// of fetching the job by its primary key.
//
//   - rescue one job by id (rescueIDs: a job the database refused to
//     rescue, tried again when its wait ends; and rescueEach, one per
//     expired job after a batch rescue was refused): with rescue_full, it
//     reads every expired lease of the worker's queues (and, under an old
//     snapshot, every dead entry of the running jobs' index: what the
//     windowed rescue was built to avoid), for each job it names;
//   - lease one job by id (leaseEach, after a refused batch lease): it
//     reads the job's range of the pending index from its head up to the
//     job.
//
// Here a queue holds 1000 expired leases and 1000 runnable jobs, and the
// job named is the last of each. The same holds in the exec modes the
// README recommends behind PgBouncer (cache_describe, exec: unnamed
// statements, which force_generic_plan also plans generically, now at
// every call); simple_protocol sends values inline and is not affected.
// The worker's other statements while busy (the windowed rescue,
// heartbeat, JobStatusMany, JobRunnableHeads, JobRunnableHeadsSince) read
// as few rows on the generic plan as on the custom one: they are checked
// here too.
func TestGenericAttackPlansOfStatementsThatNameOneJob(t *testing.T) {
	t.Skip("shows genericPlans is wrong for statements that name one job; the worker sends those through plainQueries (queryLease), which this test does not drive")
	t.Parallel()
	ctx := context.Background()
	base := testdb.New(t)
	if _, err := base.Exec(ctx, `LOAD 'auto_explain'`); err != nil {
		t.Skipf("auto_explain: %v", err)
	}
	const n = 1000
	// A bound well above what naming one job needs (a handful of rows)
	// and well below the range (n rows).
	const most = 100

	type mode struct {
		name string
		mode pgx.QueryExecMode
		busy bool
	}
	modes := []mode{
		{"idle/cache_statement", pgx.QueryExecModeCacheStatement, false},
		{"busy/cache_statement", pgx.QueryExecModeCacheStatement, true},
		{"busy/cache_describe", pgx.QueryExecModeCacheDescribe, true},
		{"busy/exec", pgx.QueryExecModeExec, true},
		{"busy/simple_protocol", pgx.QueryExecModeSimpleProtocol, true},
	}
	status := func(t *testing.T, id int64) string {
		var s string
		require.NoError(t, base.QueryRow(ctx, `SELECT status::text FROM tasuki_job WHERE id = $1`, id).Scan(&s))
		return s
	}
	type stmt struct {
		name     string
		allModes bool
		run      func(t *testing.T, ctx context.Context, q *db.Queries, f gaFixture)
	}
	stmts := []stmt{
		{"rescue one job by id", true, func(t *testing.T, ctx context.Context, q *db.Queries, f gaFixture) {
			id := f.running[len(f.running)-1]
			// As rescueIDs sends it.
			_, err := q.JobLease(ctx, db.JobLeaseParams{
				LeaseUs: 1, Rescue: true, RescueFull: true, RescueMax: 1, RescueQueues: []string{f.queue},
				SkipIds: []int64{}, OnlyIds: []int64{id},
			})
			require.NoError(t, err)
			require.Equal(t, "pending", status(t, id), "the job was not rescued")
		}},
		{"lease one job by id", true, func(t *testing.T, ctx context.Context, q *db.Queries, f gaFixture) {
			id := f.pending[len(f.pending)-1]
			// As leaseEach sends it.
			rows, err := q.JobLease(ctx, db.JobLeaseParams{
				LeaseUs: time.Minute.Microseconds(), SkipIds: []int64{}, OnlyIds: []int64{id},
				HeadQueues: []string{f.queue}, HeadKinds: []string{"task"}, HeadLimits: []int32{1},
				QueueNames: []string{f.queue}, QueueMax: []int32{1},
				KindNames: []string{"task"}, KindMax: []int32{1},
			})
			require.NoError(t, err)
			require.Len(t, rows, 1)
			require.Equal(t, id, rows[0].ID)
		}},
		{"windowed rescue", false, func(t *testing.T, ctx context.Context, q *db.Queries, f gaFixture) {
			// A process whose last rescue got to now: every lease of the
			// fixture expired before its window.
			process := pgtype.UUID{Bytes: [16]byte{0xa7, byte(len(f.queue))}, Valid: true}
			copy(process.Bytes[2:], f.queue)
			gaExec(t, base, `INSERT INTO tasuki_process (id, host, pid, queues, kinds, expires_at, rescued_through)
				VALUES ($1, 'attack', 1, '{}', '{}', now() + interval '1 hour', now())`, process)
			// As rescueOnce sends it, without the beat.
			_, err := q.JobLease(ctx, db.JobLeaseParams{
				LeaseUs: 1, Rescue: true, RescueFull: false, RescueMarginUs: time.Second.Microseconds(), RescueMax: 1000,
				RescueQueues: []string{f.queue}, ProcessID: process, SkipIds: []int64{}, OnlyIds: []int64{},
			})
			require.NoError(t, err)
			require.Equal(t, "running", status(t, f.running[len(f.running)-1]), "a lease expired before the window was rescued")
		}},
		{"heartbeat", false, func(t *testing.T, ctx context.Context, q *db.Queries, f gaFixture) {
			k := len(f.running) - 3
			ids, err := q.JobHeartbeatMany(ctx, db.JobHeartbeatManyParams{
				LeaseUs: time.Minute.Microseconds(), Ids: f.running[k:], Tokens: f.tokens[k:],
			})
			require.NoError(t, err)
			require.ElementsMatch(t, f.running[k:], ids)
		}},
		{"status many", false, func(t *testing.T, ctx context.Context, q *db.Queries, f gaFixture) {
			k := len(f.running) - 3
			rows, err := q.JobStatusMany(ctx, f.running[k:])
			require.NoError(t, err)
			require.Len(t, rows, 3)
		}},
		{"runnable heads", false, func(t *testing.T, ctx context.Context, q *db.Queries, f gaFixture) {
			rows, err := q.JobRunnableHeads(ctx, db.JobRunnableHeadsParams{
				Queues: []string{f.queue}, Kinds: []string{"task"}, SkipIds: []int64{},
			})
			require.NoError(t, err)
			require.Len(t, rows, 1)
			require.Equal(t, f.pending[0], rows[0].ID)
		}},
		{"runnable heads since", false, func(t *testing.T, ctx context.Context, q *db.Queries, f gaFixture) {
			rows, err := q.JobRunnableHeadsSince(ctx, db.JobRunnableHeadsSinceParams{
				Queues: []string{f.queue}, Kinds: []string{"task"}, Priorities: []int16{0},
				WindowUs: (2 * time.Hour).Microseconds(), SkipIds: []int64{},
			})
			require.NoError(t, err)
			require.Len(t, rows, 1)
			require.Equal(t, f.pending[0], rows[0].ID)
		}},
	}
	type run struct {
		name string
		m    mode
		s    stmt
		f    gaFixture
	}
	var runs []run
	for si, s := range stmts {
		for mi, m := range modes {
			if !s.allModes && m.mode != pgx.QueryExecModeCacheStatement {
				continue
			}
			runs = append(runs, run{name: s.name + "/" + m.name, m: m, s: s,
				f: gaInsertFixture(t, base, fmt.Sprintf("ga_%d_%d", si, mi), n)})
		}
	}
	gaExec(t, base, `ANALYZE tasuki_job`)

	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			plans := &gaPlans{}
			p := gaPool(t, base, r.m.mode, plans)
			g := &genericPlans{pool: p, busy: func() bool { return r.m.busy }}
			sctx, cancel := context.WithTimeout(ctx, gaBound)
			defer cancel()
			// The pool's one connection is open before the plans count.
			require.NoError(t, p.Ping(sctx))
			plans.take()
			r.s.run(t, sctx, db.New(g), r.f)
			got := plans.take()
			require.NotEmpty(t, got, "no plan captured")
			read, summary := gaRowsRead(got)
			assert.Less(t, read, most, "%s read %d rows of tasuki_job to name one job of %d:\n%s", r.s.name, read, n, summary)
		})
	}
}

// The worker's statements work while it is busy in every exec mode the
// README documents (behind PgBouncer: cache_describe, exec,
// simple_protocol), through each way genericPlans reads a result (Query,
// QueryRow, Exec), and the setting stays with its statement: the
// connection's plan_cache_mode is back to auto afterwards.
func TestGenericAttackExecModesWhileBusy(t *testing.T) {
	t.Parallel()
	base := testdb.New(t)
	for _, m := range []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"cache_statement", pgx.QueryExecModeCacheStatement},
		{"cache_describe", pgx.QueryExecModeCacheDescribe},
		{"describe_exec", pgx.QueryExecModeDescribeExec},
		{"exec", pgx.QueryExecModeExec},
		{"simple_protocol", pgx.QueryExecModeSimpleProtocol},
	} {
		t.Run(m.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), gaBound)
			defer cancel()
			queue := "modes_" + m.name
			gaExec(t, base, `INSERT INTO tasuki_job (queue, kind, payload) SELECT $1, 'task', '{}' FROM generate_series(1, 6)`, queue)
			p := gaPool(t, base, m.mode, nil)
			g := &genericPlans{pool: p, busy: func() bool { return true }}
			q := db.New(g)
			// Twice each: the first call of a statement on a connection
			// prepares or describes it, the second uses the cache.
			for round := range 2 {
				schema, err := q.TasukiSchema(ctx) // QueryRow
				require.NoError(t, err)
				require.NotEmpty(t, schema)

				jobs, err := q.JobLease(ctx, testdb.Lease(db.JobLeaseParams{
					LeaseUs: time.Minute.Microseconds(), SkipIds: []int64{}, OnlyIds: []int64{},
				}, queue, "task", 3))
				require.NoError(t, err, "round %d", round)
				require.Len(t, jobs, 3)
				ids := make([]int64, len(jobs))
				tokens := make([]pgtype.UUID, len(jobs))
				for i, j := range jobs {
					ids[i], tokens[i] = j.ID, j.LeaseToken
				}
				renewed, err := q.JobHeartbeatMany(ctx, db.JobHeartbeatManyParams{LeaseUs: time.Minute.Microseconds(), Ids: ids, Tokens: tokens})
				require.NoError(t, err)
				require.ElementsMatch(t, ids, renewed)
				st, err := q.JobStatusMany(ctx, ids)
				require.NoError(t, err)
				require.Len(t, st, 3)
				for _, s := range st {
					require.Equal(t, db.TasukiJobStatusRunning, s.Status)
				}
				done, err := q.JobFinishMany(ctx, db.JobFinishManyParams{
					Ids: ids, Tokens: tokens, Statuses: []string{"completed", "completed", "completed"},
					DelaysUs: []int64{0, 0, 0}, Errors: []string{"", "", ""},
					GiveBack: []bool{false, false, false}, Snooze: []bool{false, false, false},
				})
				require.NoError(t, err)
				require.ElementsMatch(t, ids, done)
				// Exec.
				require.NoError(t, q.ProcessForget(ctx, pgtype.UUID{Bytes: [16]byte{1}, Valid: true}))
			}
			var n int
			require.NoError(t, base.QueryRow(ctx, `SELECT count(*) FROM tasuki_job WHERE queue = $1 AND status = 'completed'`, queue).Scan(&n))
			require.Equal(t, 6, n)
			var setting string
			require.NoError(t, p.QueryRow(ctx, `SELECT current_setting('plan_cache_mode')`).Scan(&setting))
			require.Equal(t, "auto", setting, "the setting outlived its statement")
		})
	}
}

type gaTask struct{}

func (gaTask) Kind() string { return "ga_task" }

// gaLog keeps every record's message and attributes.
type gaLog struct {
	mu   sync.Mutex
	msgs []string
}

func (h *gaLog) Enabled(context.Context, slog.Level) bool { return true }

func (h *gaLog) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		msg += " " + a.Key + "=" + a.Value.String()
		return true
	})
	h.mu.Lock()
	h.msgs = append(h.msgs, msg)
	h.mu.Unlock()
	return nil
}

func (h *gaLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *gaLog) WithGroup(string) slog.Handler      { return h }

func (h *gaLog) find(s string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.msgs {
		if strings.Contains(m, s) {
			return m, true
		}
	}
	return "", false
}

// An application's trigger on tasuki_job that raises undefined_column
// (42703) for one row, here PL/pgSQL reading a field the row does not have
// on a branch only some rows take, is a bug of the application's, not a
// tasuki schema a migration behind. With 42703 wrapped as
// ErrSchemaMissing, the worker's retention cleaner, which ends on
// ErrSchemaMissing, stops for the life of the worker at its first round
// that meets the row ("retention cleaner stopped"): once the application
// fixes its trigger, jobs past their retention are never deleted again
// until the process restarts. Before, the round failed, was logged, and
// the next round after the fix cleaned. (Neither before nor now is such a
// row set aside: dberr.RowError does not count class 42.)
func TestGenericAttackUndefinedColumnInAppTriggerStopsTheCleaner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	gaExec(t, pool, `INSERT INTO tasuki_job (queue, kind, payload, status, attempts, attempted_at, finished_at)
		SELECT 'default', CASE WHEN i = 1 THEN 'legacy' ELSE 'task' END, '{}', 'completed', 1,
		       now() - interval '30 days', now() - interval '30 days'
		FROM generate_series(1, 5) AS i`)
	gaExec(t, pool, `CREATE FUNCTION ga_audit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.kind = 'legacy' THEN
				PERFORM OLD.legacy_ref;
			END IF;
			RETURN OLD;
		END $$`)
	gaExec(t, pool, `CREATE TRIGGER ga_audit BEFORE DELETE ON tasuki_job FOR EACH ROW EXECUTE FUNCTION ga_audit()`)

	// The trigger raises 42703 for the legacy row.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `DELETE FROM tasuki_job WHERE kind = 'legacy'`)
	require.NoError(t, tx.Rollback(ctx))
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "got %v", err)
	require.Equal(t, "42703", pgErr.Code)
	require.NotErrorIs(t, dberr.Wrap("delete", err), tasuki.ErrSchemaMissing, "an undefined column outside the start probe is no missing schema")

	log := &gaLog{}
	w, err := New(pool, Config{CleanInterval: 20 * time.Millisecond, Logger: slog.New(log)},
		HandleFunc[gaTask](func(context.Context, *tasuki.Job[gaTask]) error { return nil }))
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(gaBound):
			t.Error("the worker did not stop")
		}
	})

	require.True(t, gaWait(gaBound, func() bool {
		_, failed := log.find("cleaning finished jobs failed")
		_, stopped := log.find("retention cleaner stopped")
		return failed || stopped
	}), "no cleaning round met the trigger's error")
	// The application fixes its trigger.
	gaExec(t, pool, `CREATE OR REPLACE FUNCTION ga_audit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			RETURN OLD;
		END $$`)
	cleaned := gaWait(10*time.Second, func() bool {
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tasuki_job`).Scan(&n))
		return n == 0
	})
	stopped, isStopped := log.find("retention cleaner stopped")
	assert.False(t, isStopped, "the worker's cleaner stopped for good: %s", stopped)
	assert.True(t, cleaned, "the jobs past their retention were not deleted after the trigger was fixed")
}

// Errors before or while the batch runs (a context ended before the
// statement, one that ends while the server runs it, a closed pool) are
// reported by every way of reading a result, give the connection back,
// and leave no plan_cache_mode behind on it.
func TestGenericAttackEarlyErrorsGiveTheConnectionBack(t *testing.T) {
	t.Skip("known, not fixed: a batch canceled before or while it runs leaves its connection to be closed by the pool rather than given back")
	t.Parallel()
	base := testdb.New(t)
	p := onePool(t, base)
	g := &genericPlans{pool: p, busy: func() bool { return true }}
	ways := map[string]func(ctx context.Context, sql string) error{
		"exec": func(ctx context.Context, sql string) error {
			_, err := g.Exec(ctx, sql)
			return err
		},
		"query": func(ctx context.Context, sql string) error {
			rows, err := g.Query(ctx, sql)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
			}
			return rows.Err()
		},
		"queryrow": func(ctx context.Context, sql string) error {
			var v any
			return g.QueryRow(ctx, sql).Scan(&v)
		},
	}
	healthy := func(t *testing.T) {
		t.Helper()
		require.Equal(t, int32(0), p.Stat().AcquiredConns(), "connection not given back")
		ctx, cancel := context.WithTimeout(context.Background(), gaBound)
		defer cancel()
		var mode string
		require.NoError(t, p.QueryRow(ctx, `SELECT current_setting('plan_cache_mode')`).Scan(&mode))
		require.Equal(t, "auto", mode)
	}
	for name, run := range ways {
		t.Run(name+"/canceled before", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			require.ErrorIs(t, run(ctx, `SELECT 1`), context.Canceled)
			healthy(t)
		})
		t.Run(name+"/canceled while running", func(t *testing.T) {
			// The timeout is what cancels the statement; nothing is
			// measured against it.
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err := run(ctx, `SELECT pg_sleep(5)`)
			require.Error(t, err)
			assert.True(t, errors.Is(err, context.DeadlineExceeded) || dberr.Canceled(err), "got %v", err)
			healthy(t)
		})
	}
	closed := onePool(t, base)
	closed.Close()
	gc := &genericPlans{pool: closed, busy: func() bool { return true }}
	ctx := context.Background()
	_, err := gc.Exec(ctx, `SELECT 1`)
	require.Error(t, err)
	_, err = gc.Query(ctx, `SELECT 1`)
	require.Error(t, err)
	var v int
	require.Error(t, gc.QueryRow(ctx, `SELECT 1`).Scan(&v))
}
