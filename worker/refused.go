package worker

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
)

// maxRescue is the most expired jobs one lease statement rescues, and the
// most rescued one statement each in a round after a batch was refused.
const maxRescue = 1000

// leased is a job this worker leased, with when the statement that leased
// it was sent: its lease lapses no earlier than a lease duration after that.
type leased struct {
	row    *db.TasukiJob
	sentAt time.Time
}

// lease leases up to n jobs and, when rescue is set, rescues the queue's
// expired jobs in the same statement. Jobs the database refused to change
// before are left out for a while (w.refused). When it refuses the batch
// for a row's data (an application's trigger or constraint), the expired
// jobs are rescued and the runnable ones leased one statement each, and the
// ones it refuses are set aside, so that such a row never stops the queue.
// When the rescue fails otherwise (a timeout, with an expensive trigger on
// many expired jobs), the lease runs again without it, and later rescues
// take fewer jobs at a time. It also returns how many jobs it set aside:
// the caller leases again at once then, as the jobs behind them wait.
func (w *Worker[T]) lease(ctx context.Context, n int, rescue bool) (jobs []leased, setAside int, err error) {
	w.refused.ForgetStale(time.Now())
	p := db.JobLeaseParams{
		Queue:     w.cfg.Queue,
		Max:       int32(n),
		LeaseUs:   w.cfg.LeaseDuration.Microseconds(),
		Rescue:    rescue,
		RescueMax: int32(w.rescueMax),
		SkipIds:   w.refused.Skip(time.Now()),
		OnlyIds:   []int64{},
	}
	sentAt := time.Now()
	rows, err := w.queryLease(ctx, p)
	switch {
	case err == nil && rescue:
		w.rescueMax = min(2*w.rescueMax, maxRescue)
	case err != nil && dberr.RowError(err):
		if rescue {
			w.rescueEach(ctx)
		}
		return w.leaseEach(ctx, p)
	case err != nil && rescue && ctx.Err() == nil:
		if errors.Is(err, context.DeadlineExceeded) || dberr.Canceled(err) {
			w.rescueMax = max(w.rescueMax/2, 1)
		}
		w.log.Warn("tasuki: rescuing expired jobs failed; leasing without it", slog.Any("error", dberr.Wrap("rescue", err)),
			slog.Int("next_rescue_batch", w.rescueMax))
		p.Rescue = false
		sentAt = time.Now()
		rows, err = w.queryLease(ctx, p)
	}
	if err != nil {
		return nil, 0, err
	}
	out := make([]leased, len(rows))
	for i, r := range rows {
		out[i] = leased{row: r, sentAt: sentAt}
	}
	return out, 0, nil
}

func (w *Worker[T]) queryLease(ctx context.Context, p db.JobLeaseParams) ([]*db.TasukiJob, error) {
	stmtCtx, cancel := context.WithTimeout(ctx, w.cfg.LeaseDuration/2)
	defer cancel()
	return w.queries.JobLease(stmtCtx, p)
}

// leaseEach leases the runnable jobs one statement each, after the database
// refused a batch lease. What it leased is returned even when a later
// statement fails: those jobs are this worker's now.
func (w *Worker[T]) leaseEach(ctx context.Context, p db.JobLeaseParams) (out []leased, setAside int, err error) {
	if p.Max == 0 {
		return nil, 0, nil
	}
	stmtCtx, cancel := context.WithTimeout(ctx, w.cfg.LeaseDuration/2)
	ids, err := w.queries.JobRunnableIDs(stmtCtx, db.JobRunnableIDsParams{Queue: p.Queue, SkipIds: p.SkipIds, Max: p.Max})
	cancel()
	if err != nil {
		return nil, 0, err
	}
	p.Rescue, p.Max = false, 1
	for _, id := range ids {
		p.OnlyIds = []int64{id}
		sentAt := time.Now()
		rows, err := w.queryLease(ctx, p)
		switch {
		case err == nil:
			w.refused.Accepted(id)
			for _, r := range rows {
				out = append(out, leased{row: r, sentAt: sentAt})
			}
		case dberr.RowError(err):
			w.setAside(id, "lease", err)
			setAside++
		default:
			if len(out) > 0 {
				w.log.Warn("tasuki: leasing jobs one by one failed; retrying", slog.Any("error", dberr.Wrap("lease", err)))
				return out, setAside, nil
			}
			return nil, setAside, err
		}
	}
	return out, setAside, nil
}

// rescueEach rescues the queue's expired jobs one statement each, after the
// database refused the rescue of a batch.
func (w *Worker[T]) rescueEach(ctx context.Context) {
	stmtCtx, cancel := context.WithTimeout(ctx, w.cfg.LeaseDuration/2)
	expired, err := w.queries.JobExpiredIDs(stmtCtx, db.JobExpiredIDsParams{Queue: w.cfg.Queue, SkipIds: w.refused.Skip(time.Now()), Max: maxRescue})
	cancel()
	if err != nil {
		w.log.Warn("tasuki: rescuing expired jobs failed; retrying at the next rescue", slog.Any("error", dberr.Wrap("rescue", err)))
		return
	}
	for _, id := range expired {
		// A lease of no jobs that rescues only this one.
		_, err := w.queryLease(ctx, db.JobLeaseParams{
			Queue: w.cfg.Queue, Max: 0, LeaseUs: 1, Rescue: true, RescueMax: 1,
			SkipIds: []int64{}, OnlyIds: []int64{id},
		})
		switch {
		case err == nil:
			w.refused.Accepted(id)
		case dberr.RowError(err):
			w.setAside(id, "rescue", err)
		default:
			w.log.Warn("tasuki: rescuing expired jobs failed; retrying at the next rescue", slog.Any("error", dberr.Wrap("rescue", err)))
			return
		}
	}
}

// setAside records that the database refused to lease or rescue a job,
// and logs it once for this try.
func (w *Worker[T]) setAside(id int64, op string, err error) {
	wait := w.refused.Refuse(id, time.Now())
	w.log.Error("tasuki: the database refused to "+op+" a job; the queue's other jobs go on, and this one is tried again later",
		slog.Int64("job_id", id), slog.Any("error", dberr.Wrap(op, err)), slog.Duration("retry_in", wait))
}
