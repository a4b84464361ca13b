package worker

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/db"
)

// genericPlans runs the worker's statements on its own pool, each on its
// prepared statement's generic plan while jobs flow: it sends
// db.PlanGeneric before the statement, in the same round trip and the same
// implicit transaction, so the setting holds for that statement only and
// never reaches another statement on the connection (which matters behind
// a transaction pooler).
//
// PostgreSQL plans a prepared statement anew on each call (a custom plan)
// when it estimates that cheaper than its generic plan, and the estimates
// of tasuki's statements move with the lengths of their arrays and with
// the table's statistics: after an analyze the choice can flip to custom
// plans for good, and a lease over a few jobs then spends several times
// its execution on planning (3 ms against 0.5 ms, measured at 400 jobs a
// second), which costs every job its share of a CPU.
//
// While the worker is idle (busy reports false) statements go alone: one
// poll a second plans cheaply enough, and an idle worker sends one
// statement per poll.
type genericPlans struct {
	pool *pgxpool.Pool
	busy func() bool
}

var _ db.DBTX = (*genericPlans)(nil)

// send sends db.PlanGeneric and sql in one batch and reads the first's
// result; the caller reads the second's and closes the batch.
func (g *genericPlans) send(ctx context.Context, sql string, args []any) (pgx.BatchResults, error) {
	b := &pgx.Batch{}
	b.Queue(db.PlanGeneric)
	b.Queue(sql, args...)
	br := g.pool.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return nil, err
	}
	return br, nil
}

// Exec implements db.DBTX.
func (g *genericPlans) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if !g.busy() {
		return g.pool.Exec(ctx, sql, args...)
	}
	br, err := g.send(ctx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	// Close reads to the end of the batch, where its implicit transaction
	// commits: a failed commit is the statement's error.
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// Query implements db.DBTX.
func (g *genericPlans) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if !g.busy() {
		return g.pool.Query(ctx, sql, args...)
	}
	br, err := g.send(ctx, sql, args)
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// QueryRow implements db.DBTX.
func (g *genericPlans) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if !g.busy() {
		return g.pool.QueryRow(ctx, sql, args...)
	}
	br, err := g.send(ctx, sql, args)
	return batchRow{br: br, err: err}
}

// CopyFrom implements db.DBTX. A COPY has no plan.
func (g *genericPlans) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	return g.pool.CopyFrom(ctx, table, columns, src)
}

// batchRows are the rows of a batch's last statement; the batch is closed
// (its connection back in the pool) when they end or are closed, and
// what closing it reports (the commit) is their error.
type batchRows struct {
	pgx.Rows
	br  pgx.BatchResults
	err error
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.end()
	return false
}

func (r *batchRows) Close() {
	r.Rows.Close()
	r.end()
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

func (r *batchRows) end() {
	if r.br == nil {
		return
	}
	// The rows must be closed before the batch: Close reads them to the
	// end first.
	r.Rows.Close()
	if err := r.br.Close(); err != nil {
		r.err = err
	}
	r.br = nil
}

// batchRow is the row of a batch's last statement.
type batchRow struct {
	br  pgx.BatchResults
	err error
}

func (r batchRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	err := r.br.QueryRow().Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}
