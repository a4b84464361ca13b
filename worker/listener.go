package worker

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tasukiq/tasuki/db"
)

// notification is the payload sent on the tasuki_jobs channel by inserts and
// by job cancellation. Kind "insert" means the queue has runnable jobs: a
// rescue of expired leases sends it too.
type notification struct {
	Kind   string `json:"k"`
	Schema string `json:"s"`
	Queue  string `json:"q"`
	ID     int64  `json:"id"`
	// Token is the lease a cancellation ended. Absent (not Valid) in
	// notifications from tasuki versions that did not send it.
	Token pgtype.UUID `json:"t"`
	// Heads, for an insert: per priority of the jobs announced, their
	// earliest scheduled time in microseconds since the Unix epoch. Absent
	// or null when the sender did not say where the jobs are. Decoded
	// apart (heads), so that a malformed one still wakes the worker.
	Heads json.RawMessage `json:"r"`
}

// heads decodes Heads; nil when absent or malformed: the worker then
// reads the queue from its head.
func (n *notification) heads() [][2]int64 {
	var h [][2]int64
	if len(n.Heads) == 0 || json.Unmarshal(n.Heads, &h) != nil {
		return nil
	}
	return h
}

// listen keeps a connection LISTENing on tasuki_jobs until ctx ends,
// reconnecting after any error. Inserts into this worker's queue wake the
// fetch loop; cancellations stop handlers.
func (w *Worker[T]) listen(ctx context.Context, schema string) {
	b := newBackoff(backoffMax)
	for ctx.Err() == nil {
		err := w.listenOnce(ctx, schema, b)
		if ctx.Err() != nil {
			return
		}
		d := b.next()
		w.log.Warn("tasuki: notification listener disconnected; reconnecting (polling meanwhile)",
			slog.Any("error", err), slog.Duration("retry_in", d))
		w.health.sleep(ctx, d)
	}
}

func (w *Worker[T]) listenOnce(ctx context.Context, schema string, b *backoff) error {
	cfg := w.pool.Config().ConnConfig.Copy()
	if w.cfg.ListenURL != "" {
		var err error
		if cfg, err = pgx.ParseConfig(w.cfg.ListenURL); err != nil {
			return err
		}
	}
	cfg.RuntimeParams["application_name"] = "tasuki-listener"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()
	if err := db.New(conn).ListenJobs(ctx); err != nil {
		return err
	}
	if b.reset() {
		w.health.ok()
	}
	// Anything inserted or canceled while the listener was away went
	// unannounced: look for jobs from the head of the queue, and check the
	// held ones at once.
	w.seek.rewindAll()
	w.signalWake()
	select {
	case w.heartbeatNow <- struct{}{}:
	default:
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var msg notification
		if err := json.Unmarshal([]byte(n.Payload), &msg); err != nil || msg.Schema != schema {
			continue
		}
		switch msg.Kind {
		case "insert":
			if msg.Queue == w.cfg.Queue {
				w.rewind(msg.heads())
				w.signalWake()
			}
		case "cancel":
			w.cancelJob(msg.ID, msg.Token)
		}
	}
}

// rewind moves the fetch loop's positions back to where the jobs a wake-up
// announced begin, or has it read from the head of the queue when the
// wake-up does not say.
func (w *Worker[T]) rewind(heads [][2]int64) {
	if heads == nil {
		w.seek.rewindAll()
		return
	}
	for _, h := range heads {
		if h[0] < 0 || h[0] > math.MaxInt16 {
			continue // not a priority tasuki stores
		}
		w.seek.rewind(int16(h[0]), time.UnixMicro(h[1]))
	}
}
