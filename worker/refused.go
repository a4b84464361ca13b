package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
	"github.com/tasukiq/tasuki/internal/setaside"
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

// lease leases up to n jobs from where the last lease stopped (seek.go).
// Jobs the database refused to change before are left out for a while
// (w.refused). When it refuses the batch for a row's data (an
// application's trigger or constraint), the runnable jobs are leased one
// statement each, and the ones it refuses are set aside, so that such a
// row never stops the queue. It also returns how many jobs it set aside:
// the caller leases again at once then, as the jobs behind them wait.
// Used by the fetch loop only.
func (w *Worker[T]) lease(ctx context.Context, n int) (jobs []leased, setAside int, err error) {
	w.refused.ForgetStale(time.Now())
	p := db.JobLeaseParams{
		Queue:   w.cfg.Queue,
		Max:     int32(n),
		LeaseUs: w.cfg.LeaseDuration.Microseconds(),
		SkipIds: w.refused.Skip(time.Now()),
		OnlyIds: []int64{},
	}
	full := w.seek.from(&p)
	sentAt := time.Now()
	rows, err := w.queryLease(ctx, p)
	if err != nil && dberr.RowError(err) {
		return w.leaseEach(ctx, p)
	}
	if err != nil {
		return nil, 0, err
	}
	w.seek.leased(rows, full && len(rows) < n)
	out := make([]leased, len(rows))
	for i, r := range rows {
		out[i] = leased{row: r, sentAt: sentAt}
	}
	return out, 0, nil
}

// rescue returns the queue's expired jobs to pending (or fails those out
// of attempts), by a lease of no jobs. When the database refuses the batch
// for a row's data, it rescues them one statement each and sets aside the
// ones it refuses. When the rescue fails otherwise (a timeout, with an
// expensive trigger on many expired jobs), later rescues take fewer jobs
// at a time. Used by the sweeper only.
func (w *Worker[T]) rescue(ctx context.Context) error {
	w.unrescued.ForgetStale(time.Now())
	_, err := w.queryLease(ctx, db.JobLeaseParams{
		Queue:     w.cfg.Queue,
		LeaseUs:   1,
		Rescue:    true,
		RescueMax: int32(w.rescueMax),
		SkipIds:   w.unrescued.Skip(time.Now()),
		OnlyIds:   []int64{},
	})
	switch {
	case err == nil:
		w.rescueMax = min(2*w.rescueMax, maxRescue)
	case dberr.RowError(err):
		w.rescueEach(ctx)
		return nil
	case errors.Is(err, context.DeadlineExceeded) || dberr.Canceled(err):
		if ctx.Err() == nil {
			w.rescueMax = max(w.rescueMax/2, 1)
			return fmt.Errorf("%w (next rescue takes at most %d jobs)", err, w.rescueMax)
		}
	}
	return err
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
	// One job each, named: from the head, wherever the positions are.
	p.Rescue, p.Max = false, 1
	p.SeekPriorities, p.SeekAfter, p.SeekAfterIds = nil, nil, nil
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
			w.setAside(w.refused, id, "lease", err)
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
	expired, err := w.queries.JobExpiredIDs(stmtCtx, db.JobExpiredIDsParams{Queue: w.cfg.Queue, SkipIds: w.unrescued.Skip(time.Now()), Max: maxRescue})
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
			w.unrescued.Accepted(id)
		case dberr.RowError(err):
			w.setAside(w.unrescued, id, "rescue", err)
		default:
			w.log.Warn("tasuki: rescuing expired jobs failed; retrying at the next rescue", slog.Any("error", dberr.Wrap("rescue", err)))
			return
		}
	}
}

// setAside records that the database refused to lease or rescue a job,
// and logs it once for this try.
func (w *Worker[T]) setAside(set *setaside.Set, id int64, op string, err error) {
	wait := set.Refuse(id, time.Now())
	w.log.Error("tasuki: the database refused to "+op+" a job; the queue's other jobs go on, and this one is tried again later",
		slog.Int64("job_id", id), slog.Any("error", dberr.Wrap(op, err)), slog.Duration("retry_in", wait))
}
