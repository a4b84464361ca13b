package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
	"github.com/tasukiq/tasuki/tasuki"
)

// handlerKey is the context key of the running job a handler's context
// belongs to.
type handlerKey struct{}

// handlerContext is a handler's context: it knows the handler's lease,
// for CompleteTx.
type handlerContext struct {
	context.Context
	w *Worker
	l *lease
}

func (c *handlerContext) Value(key any) any {
	if key == (handlerKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// ErrNotInHandler is returned by CompleteTx called with a context that is
// not a handler's, or with a job other than the handler's own.
var ErrNotInHandler = errors.New("tasuki: CompleteTx needs the context its worker gave the handler, and that handler's job")

// CompleteTx records job as completed inside tx, a transaction of the
// handler's own on the job's database, so that the handler's writes and
// the completion commit together or not at all: exactly-once effects for
// work done in that database. ctx must be the context the worker gave the
// handler (or one derived from it).
//
// It is fenced by the job's lease like every outcome: when the lease was
// lost or the job canceled, it changes nothing and returns an error
// wrapping ErrLeaseLost, and the caller must roll tx back. Once tx
// commits, the worker records nothing more for the attempt, whatever the
// handler returns; if tx rolls back, the attempt ends as the handler's
// return value says. While tx is open after CompleteTx, it holds the job's
// row and the worker cannot renew the lease: commit soon after, well
// within the worker's LeaseDuration, or the handler is stopped as for a
// lost lease.
func CompleteTx[T any](ctx context.Context, tx pgx.Tx, job *tasuki.Job[T]) error {
	rj, ok := ctx.Value(handlerKey{}).(*handlerContext)
	if !ok || job == nil || rj.l.id != job.ID {
		return ErrNotInHandler
	}
	rj.w.mu.Lock()
	rj.l.completing = true
	rj.w.mu.Unlock()
	_, err := db.New(tx).JobCompleteTx(ctx, db.JobCompleteTxParams{ID: job.ID, Token: rj.l.token})
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("tasuki: complete job %d in the caller's transaction: %w", job.ID, ErrLeaseLost)
	}
	if err != nil {
		return dberr.Wrap(fmt.Sprintf("tasuki: complete job %d in the caller's transaction", job.ID), err)
	}
	return nil
}
