package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
)

// onePool is a pool of one connection on pool's database, so that what a
// statement leaves on its connection is seen by the next.
func onePool(t *testing.T, pool *pgxpool.Pool) *pgxpool.Pool {
	t.Helper()
	cfg := pool.Config()
	cfg.MaxConns, cfg.MinConns = 1, 0
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

// plansOf counts the generic and custom plans made for the prepared
// statement that starts with prefix on p's one connection.
func plansOf(t *testing.T, p *pgxpool.Pool, prefix string) (generic, custom int64) {
	t.Helper()
	err := p.QueryRow(context.Background(),
		`SELECT coalesce(sum(generic_plans), 0)::bigint, coalesce(sum(custom_plans), 0)::bigint
		 FROM pg_prepared_statements WHERE starts_with(statement, $1)`, prefix).Scan(&generic, &custom)
	require.NoError(t, err)
	return generic, custom
}

func leaseParams() db.JobLeaseParams {
	return db.JobLeaseParams{
		LeaseUs: time.Minute.Microseconds(), HeadQueues: []string{"default"}, HeadKinds: []string{"task"},
		HeadLimits: []int32{10}, QueueNames: []string{"default"}, QueueMax: []int32{10},
		KindNames: []string{"task"}, KindMax: []int32{10},
	}
}

func TestGenericPlansWhileBusyOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := testdb.New(t)
	const calls = 12
	for _, busy := range []bool{true, false} {
		p := onePool(t, base)
		q := db.New(&genericPlans{pool: p, busy: func() bool { return busy }})
		for range calls {
			_, err := q.JobLease(ctx, leaseParams())
			require.NoError(t, err)
			_, err = q.JobFinishMany(ctx, db.JobFinishManyParams{Ids: []int64{1}, Tokens: []pgtype.UUID{{}}, Statuses: []string{"completed"},
				DelaysUs: []int64{0}, Errors: []string{""}, GiveBack: []bool{false}, Snooze: []bool{false}})
			require.NoError(t, err)
		}
		for _, prefix := range []string{"-- name: JobLease ", "-- name: JobFinishMany "} {
			generic, custom := plansOf(t, p, prefix)
			if busy {
				require.Equal(t, int64(0), custom, "%s: custom plans while busy", prefix)
				require.Equal(t, int64(calls), generic, "%s: generic plans while busy", prefix)
			} else {
				// PostgreSQL plans a prepared statement's first five calls
				// anew whatever their cost: the setting was not there.
				require.GreaterOrEqual(t, custom, int64(5), "%s: custom plans while idle", prefix)
			}
		}
		// The setting lasted for its statement's transaction only.
		var mode string
		require.NoError(t, p.QueryRow(ctx, `SELECT current_setting('plan_cache_mode')`).Scan(&mode))
		require.Equal(t, "auto", mode)
	}
}

// Every way of reading a statement's result reports what failed in it and
// what failed at its commit, and gives the connection back.
func TestGenericPlansReportErrorsAndReleaseTheConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := testdb.New(t)
	_, err := base.Exec(ctx, `CREATE TABLE generic_deferred (v int UNIQUE DEFERRABLE INITIALLY DEFERRED)`)
	require.NoError(t, err)
	p := onePool(t, base)
	g := &genericPlans{pool: p, busy: func() bool { return true }}

	isCode := func(code string) func(error) bool {
		return func(err error) bool {
			var pg *pgconn.PgError
			return errors.As(err, &pg) && pg.Code == code
		}
	}
	cases := []struct {
		name, sql string
		is        func(error) bool
	}{
		// A duplicate checked only at commit: the batch's end.
		{"commit", `INSERT INTO generic_deferred VALUES (1), (1) RETURNING v`, isCode("23505")},
		{"statement", `SELECT 1 / (v - v) FROM (VALUES (1)) AS x(v)`, isCode("22012")},
	}
	released := func(t *testing.T) {
		t.Helper()
		require.Equal(t, int32(0), p.Stat().AcquiredConns(), "connection not given back")
		var one int
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		require.NoError(t, p.QueryRow(qctx, `SELECT 1`).Scan(&one))
	}
	for _, c := range cases {
		t.Run(c.name+"/exec", func(t *testing.T) {
			_, err := g.Exec(ctx, c.sql)
			require.True(t, c.is(err), "got %v", err)
			released(t)
		})
		t.Run(c.name+"/query", func(t *testing.T) {
			rows, err := g.Query(ctx, c.sql)
			if err == nil {
				for rows.Next() {
				}
				err = rows.Err()
				rows.Close()
			}
			require.True(t, c.is(err), "got %v", err)
			released(t)
		})
		t.Run(c.name+"/queryrow", func(t *testing.T) {
			var v int
			err := g.QueryRow(ctx, c.sql).Scan(&v)
			require.True(t, c.is(err), "got %v", err)
			released(t)
		})
	}
	var n int
	require.NoError(t, base.QueryRow(ctx, `SELECT count(*) FROM generic_deferred`).Scan(&n))
	require.Zero(t, n, "a failed commit left rows")

	t.Run("rows closed early", func(t *testing.T) {
		rows, err := g.Query(ctx, `SELECT generate_series(1, 100000)`)
		require.NoError(t, err)
		require.True(t, rows.Next())
		rows.Close()
		require.NoError(t, rows.Err())
		released(t)
	})
	t.Run("no rows", func(t *testing.T) {
		var v int
		err := g.QueryRow(ctx, `SELECT 1 WHERE false`).Scan(&v)
		require.ErrorIs(t, err, pgx.ErrNoRows)
		released(t)
	})
	t.Run("rows read to the end", func(t *testing.T) {
		rows, err := g.Query(ctx, `SELECT generate_series(1, 3)`)
		require.NoError(t, err)
		var sum int
		for rows.Next() {
			var v int
			require.NoError(t, rows.Scan(&v))
			sum += v
		}
		require.NoError(t, rows.Err())
		require.Equal(t, 6, sum)
		released(t)
	})
}

// A lease that names one job is not sent behind PlanGeneric, even while
// the worker is busy: its generic plan reads the job's whole range.
func TestLeaseOfOneJobKeepsPostgresPlanChoice(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := onePool(t, testdb.New(t))
	w := &Worker{
		cfg:          Config{LeaseDuration: time.Minute},
		queries:      db.New(&genericPlans{pool: p, busy: func() bool { return true }}),
		plainQueries: db.New(p),
	}
	params := leaseParams()
	params.OnlyIds = []int64{1}
	for range 6 {
		_, err := w.queryLease(ctx, params)
		require.NoError(t, err)
	}
	_, custom := plansOf(t, p, "-- name: JobLease ")
	require.GreaterOrEqual(t, custom, int64(5), "the lease of one job was planned generically")
	generic, custom := plansOf(t, p, "-- name: PlanGeneric ")
	require.Zero(t, generic+custom, "PlanGeneric was sent")
}
