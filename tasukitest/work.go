package tasukitest

import (
	"context"

	"github.com/tasukiq/tasuki/worker"
)

// Work runs the pending job id once with w, now, through w's handler for
// its kind, with (*worker.Worker).WorkJob: w need not, and must not, be
// running. It returns the result, whatever the handler returned (see
// WorkResult.Err and Event); when the job cannot be worked (not found,
// not pending, a kind w has no handler for, a database error) it reports
// why and stops the test.
func Work(ctx context.Context, t TB, w *worker.Worker, id int64) *worker.WorkResult {
	t.Helper()
	if w == nil {
		fail(t, "tasukitest: Work: the worker is nil: pass one made by worker.New, without calling its Run")
		return nil
	}
	res, err := w.WorkJob(ctx, id)
	if err != nil {
		fail(t, "tasukitest: Work: job %d: %v", id, err)
		return nil
	}
	return res
}
