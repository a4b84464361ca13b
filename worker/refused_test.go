package worker_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// refusalLog is a slog.Handler that keeps, for each "refused to lease"
// record, its job_id and retry_in.
type refusalLog struct {
	mu       *sync.Mutex
	refusals *[]refusal
}

type refusal struct {
	job  int64
	wait time.Duration
}

func newRefusalLog() *refusalLog {
	return &refusalLog{mu: new(sync.Mutex), refusals: new([]refusal)}
}

func (h *refusalLog) Enabled(context.Context, slog.Level) bool { return true }

func (h *refusalLog) Handle(_ context.Context, r slog.Record) error {
	if !strings.Contains(r.Message, "refused to lease") {
		return nil
	}
	var rf refusal
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "job_id":
			rf.job = a.Value.Int64()
		case "retry_in":
			rf.wait = a.Value.Duration()
		}
		return true
	})
	h.mu.Lock()
	*h.refusals = append(*h.refusals, rf)
	h.mu.Unlock()
	return nil
}

func (h *refusalLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *refusalLog) WithGroup(string) slog.Handler      { return h }

func (h *refusalLog) of(job int64) []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []time.Duration
	for _, r := range *h.refusals {
		if r.job == job {
			out = append(out, r.wait)
		}
	}
	return out
}

func (h *refusalLog) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(*h.refusals)
}

// When the jobs the database refuses to lease are at least as many as the
// worker's free slots, a round leases nothing but sets them aside, and the
// worker leases again at once, past them: the queue's other jobs do not
// wait for a poll. Here 12 refused jobs at the head of the queue, 4 slots
// and a 10-minute poll interval.
func TestRefusedLeasesAtTheHeadDoNotStarveTheQueue(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	exec(t, pool, `CREATE FUNCTION refuse_lease() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.status = 'pending' AND NEW.status = 'running' AND NEW.payload->>'mode' = 'stuck' THEN
				RAISE EXCEPTION 'the application refuses this lease';
			END IF;
			RETURN NEW;
		END $$`)
	exec(t, pool, `CREATE TRIGGER refuse_lease BEFORE UPDATE ON tasuki_job FOR EACH ROW EXECUTE FUNCTION refuse_lease()`)
	for i := range 12 {
		insert(t, client, task{N: i, Mode: "stuck"}, &tasuki.InsertOpts{Priority: 0})
	}
	fine := insert(t, client, task{N: 100}, &tasuki.InsertOpts{Priority: 1})

	log := newRefusalLog()
	w := newWorker(t, pool, func(context.Context, *tasuki.Job[task]) error { return nil },
		worker.Config{Concurrency: 4, PollInterval: 10 * time.Minute, Logger: slog.New(log)})
	running(t, w)
	eventually(t, "the first refusals", func() bool { return log.count() >= 4 })
	eventually(t, "the runnable job to complete", func() bool { return jobStatus(t, client, fine) == tasuki.StatusCompleted })
}

// A job the database refuses to lease is set aside for a wait that doubles
// with each refusal, up to 10 minutes, so that a job refused for good costs
// a refused batch and a round of one-by-one leases only now and then: a
// busy worker's rescues, which never try a pending job, do not reset it.
func TestRefusalBackoffDoublesWhileBusy(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	client := newClient[task](t, pool)
	exec(t, pool, `CREATE FUNCTION refuse_lease() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.status = 'pending' AND NEW.status = 'running' AND NEW.payload->>'mode' = 'stuck' THEN
				RAISE EXCEPTION 'the application refuses this lease';
			END IF;
			RETURN NEW;
		END $$`)
	exec(t, pool, `CREATE TRIGGER refuse_lease BEFORE UPDATE ON tasuki_job FOR EACH ROW EXECUTE FUNCTION refuse_lease()`)
	stuck := insert(t, client, task{N: 1, Mode: "stuck"}, &tasuki.InsertOpts{Priority: 0})
	busy := insert(t, client, task{N: 2, Mode: "busy"}, &tasuki.InsertOpts{Priority: 1})
	insert(t, client, task{N: 3}, &tasuki.InsertOpts{Priority: 1})

	release := make(chan struct{})
	log := newRefusalLog()
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		if job.Payload.Mode == "busy" {
			<-release
		}
		return nil
	}, worker.Config{Concurrency: 1, LeaseDuration: time.Second, PollInterval: 20 * time.Millisecond, Logger: slog.New(log)})
	running(t, w)
	eventually(t, "the first refusal", func() bool { return len(log.of(stuck)) >= 1 })
	eventually(t, "the busy job to run", func() bool { return jobStatus(t, client, busy) == tasuki.StatusRunning })
	// While the only slot is busy, the fetch loop runs rescue-only leases
	// (every half lease) well past the refused job's wait.
	time.Sleep(2 * time.Second)
	close(release)
	eventually(t, "the second refusal", func() bool { return len(log.of(stuck)) >= 2 })
	waits := log.of(stuck)
	assert.Equal(t, 2*waits[0], waits[1], "the second refusal of job %d should wait twice the first", stuck)
}
