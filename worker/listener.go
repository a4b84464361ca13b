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
	// Heads, for an insert: per kind and priority of the jobs announced,
	// their earliest scheduled time, as [priority, microseconds since the
	// Unix epoch, kind]. Absent or null when the sender did not say where
	// the jobs are; without the kind (older clients) for every kind.
	// Decoded apart (heads), so that a malformed one still wakes the
	// worker.
	Heads json.RawMessage `json:"r"`
}

// head is one element of a notification's Heads.
type head struct {
	priority int64
	at       int64
	kind     string
	anyKind  bool
}

// heads decodes Heads; nil when absent or malformed: the worker then
// reads the queue's sources from their heads.
func (n *notification) heads() []head {
	var raw [][]json.RawMessage
	if len(n.Heads) == 0 || json.Unmarshal(n.Heads, &raw) != nil || raw == nil {
		return nil
	}
	out := make([]head, 0, len(raw))
	for _, r := range raw {
		var h head
		if len(r) < 2 || len(r) > 3 || json.Unmarshal(r[0], &h.priority) != nil || json.Unmarshal(r[1], &h.at) != nil {
			return nil
		}
		if h.anyKind = len(r) == 2; !h.anyKind && json.Unmarshal(r[2], &h.kind) != nil {
			return nil
		}
		out = append(out, h)
	}
	return out
}

// listen keeps a connection LISTENing on tasuki_jobs until ctx ends,
// reconnecting after any error. Inserts into this worker's queue wake the
// fetch loop; cancellations stop handlers.
func (w *Worker) listen(ctx context.Context, schema string) {
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

func (w *Worker) listenOnce(ctx context.Context, schema string, b *backoff) error {
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
	// unannounced: look for jobs from the heads of the sources, and check
	// the held ones at once.
	for _, s := range w.sources {
		s.seek.rewindAll()
	}
	w.inbox.add(w.sources...)
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
			if w.rewind(msg.Queue, msg.heads()) {
				w.signalWake()
			}
		case "cancel":
			w.cancelJob(msg.ID, msg.Token)
		}
	}
}

// rewind moves the positions of the queue's sources back to where the
// jobs a wake-up announced begin, or has them read from their heads when
// the wake-up does not say, and makes them due. It reports whether the
// wake-up named any source of the worker: one for other queues, or only
// for kinds the worker does not handle, is ignored.
func (w *Worker) rewind(queue string, heads []head) bool {
	woke := false
	for _, s := range w.sources {
		if s.queue.name != queue {
			continue
		}
		if heads == nil {
			s.seek.rewindAll()
			w.inbox.add(s)
			woke = true
			continue
		}
		for _, h := range heads {
			if h.priority < 0 || h.priority > math.MaxInt16 || !h.anyKind && h.kind != s.kind.name {
				continue // not a priority tasuki stores, or another kind
			}
			s.seek.rewind(int16(h.priority), time.UnixMicro(h.at))
			w.inbox.add(s)
			woke = true
		}
	}
	return woke
}
