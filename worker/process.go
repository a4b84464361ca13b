package worker

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tasukiq/tasuki/internal/dberr"
)

// processInfo is what a worker records of itself in tasuki_process, so
// that jobs of kinds no running worker handles can be reported.
type processInfo struct {
	id     pgtype.UUID
	host   string
	pid    int32
	queues []string
	kinds  []string
}

func newProcessInfo(w *Worker) processInfo {
	p := processInfo{pid: int32(os.Getpid())}
	_, _ = rand.Read(p.id.Bytes[:])           // crypto/rand.Read does not fail
	p.id.Bytes[6] = p.id.Bytes[6]&0x0f | 0x40 // version 4
	p.id.Bytes[8] = p.id.Bytes[8]&0x3f | 0x80 // RFC 4122 variant
	p.id.Valid = true
	p.host, _ = os.Hostname()
	for _, q := range w.queues {
		p.queues = append(p.queues, q.name)
	}
	p.kinds = w.Kinds()
	return p
}

// processTTL is how long the record of this process lasts without being
// renewed: long enough for a rescue delayed by a slow database.
func (w *Worker) processTTL() time.Duration { return max(2*time.Minute, 10*w.rescueEvery()) }

// forgetProcess removes this process's record at shutdown, and records of
// processes that died long ago. A failure only leaves the record to
// expire.
func (w *Worker) forgetProcess(ctx context.Context) {
	stmtCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := w.queries.ProcessForget(stmtCtx, w.process.id); err != nil {
		w.log.Info("tasuki: could not remove this worker's process record; it expires by itself",
			slog.Any("error", dberr.Wrap("forget process", err)))
	}
}
