package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
)

// rescueBatch is the most expired jobs rescued one at a time in a round,
// as JobLease's rescue takes at most 1000 too.
const rescueBatch = 1000

// maxRefusedBackoff caps the wait before a job the database refused to
// rescue is tried again.
const maxRefusedBackoff = 10 * time.Minute

// refusal is a job the database refused to rescue: it is left out of
// rescues until its wait is over, then tried again; each refusal doubles
// the wait.
type refusal struct {
	until time.Time
	wait  time.Duration
}

// skipIDs is the jobs the database refused to rescue whose wait is not
// over, for the rescue to leave alone. It forgets the jobs whose wait is
// over: the rescue tries them again, and refuseAgain remembers those it
// refuses again, with a longer wait.
func (w *Worker[T]) skipIDs() []int64 {
	now := time.Now()
	skip := make([]int64, 0, len(w.refused))
	for id, r := range w.refused {
		if now.Before(r.until) {
			skip = append(skip, id)
		}
	}
	return skip
}

// rescueEach rescues the queue's expired jobs one statement each, after the
// database refused the rescue of a whole batch: a job it refuses (an
// application's trigger or constraint on tasuki_job) is set aside and
// tried again after a wait that doubles with each refusal, logged once per
// try; it never stops the others from being rescued, nor the queue from
// being leased.
func (w *Worker[T]) rescueEach(ctx context.Context) {
	stmtCtx, cancel := context.WithTimeout(ctx, w.cfg.LeaseDuration/2)
	expired, err := w.queries.JobExpiredIDs(stmtCtx, db.JobExpiredIDsParams{Queue: w.cfg.Queue, SkipIds: w.skipIDs(), Max: rescueBatch})
	cancel()
	if err != nil {
		w.log.Warn("tasuki: rescuing expired jobs failed; retrying at the next rescue", slog.Any("error", dberr.Wrap("rescue", err)))
		return
	}
	for _, id := range expired {
		stmtCtx, cancel := context.WithTimeout(ctx, w.cfg.LeaseDuration/2)
		_, err := w.queries.JobRescueExpired(stmtCtx, db.JobRescueExpiredParams{
			Queue: w.cfg.Queue, SkipIds: []int64{}, OnlyIds: []int64{id}, Max: 1,
		})
		cancel()
		switch {
		case err == nil:
			delete(w.refused, id)
		case rowError(err):
			r := w.refused[id]
			if r == nil {
				r = &refusal{wait: min(w.cfg.LeaseDuration/2, 5*time.Second)}
				w.refused[id] = r
			} else {
				r.wait = min(2*r.wait, maxRefusedBackoff)
			}
			r.until = time.Now().Add(r.wait)
			w.log.Error("tasuki: the database refused to rescue a job whose lease expired; the other jobs go on, and this one is tried again later",
				slog.Int64("job_id", id), slog.Any("error", dberr.Wrap("rescue", err)), slog.Duration("retry_in", r.wait))
		default:
			w.log.Warn("tasuki: rescuing expired jobs failed; retrying at the next rescue", slog.Any("error", dberr.Wrap("rescue", err)))
			return
		}
	}
}

// forgetRescued drops the refusals whose wait is over after a rescue that
// included them succeeded: those jobs were rescued or are no longer
// expired.
func (w *Worker[T]) forgetRescued() {
	if len(w.refused) == 0 {
		return
	}
	now := time.Now()
	for id, r := range w.refused {
		if !now.Before(r.until) {
			delete(w.refused, id)
		}
	}
}
