package tasukitest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/tasukitest"
	"github.com/tasukiq/tasuki/worker"
)

// newEmailWorker returns a worker, not running, whose handler fails the
// jobs sent to "fail".
func newEmailWorker(t *testing.T, pool *pgxpool.Pool) *worker.Worker {
	t.Helper()
	w, err := worker.New(pool, worker.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[SendEmail]) error {
			if job.Payload.To == "fail" {
				return errors.New("mailbox full")
			}
			return nil
		}))
	require.NoError(t, err)
	return w
}

func testWorkOutcomes(t *testing.T, pool *pgxpool.Pool) {
	ctx := tasukitest.WithScope(context.Background(), t)
	neighbours(t, pool, SendEmail{To: "ok"}, SendEmail{To: "fail"})
	client := newClient[SendEmail](t, pool, scoped)
	ok, err := client.Insert(ctx, SendEmail{To: "ok"}, nil)
	require.NoError(t, err)
	bad, err := client.Insert(ctx, SendEmail{To: "fail"}, nil)
	require.NoError(t, err)
	w := newEmailWorker(t, pool)

	res := tasukitest.Work(ctx, t, w, ok.ID)
	require.Equal(t, tasuki.EventCompleted, res.Event)
	require.NoError(t, res.Err)
	require.Equal(t, tasuki.StatusCompleted, res.Job.Status)

	res = tasukitest.Work(ctx, t, w, bad.ID)
	require.Equal(t, tasuki.EventRetried, res.Event)
	require.EqualError(t, res.Err, "mailbox full")
	require.Equal(t, tasuki.StatusPending, res.Job.Status)

	job := tasukitest.RequireInserted[SendEmail](ctx, t, pool, &tasukitest.Want{Status: tasuki.StatusCompleted})
	require.Equal(t, ok.ID, job.ID)
	job = tasukitest.RequireInserted[SendEmail](ctx, t, pool, &tasukitest.Want{Status: tasuki.StatusPending})
	require.Equal(t, bad.ID, job.ID)
	require.Equal(t, "mailbox full", job.LastError())
}

func testWorkFail(t *testing.T, pool *pgxpool.Pool) {
	ctx := tasukitest.WithScope(context.Background(), t)
	w := newEmailWorker(t, pool)
	done, err := newClient[SendEmail](t, pool, scoped).Insert(ctx, SendEmail{To: "ok"}, nil)
	require.NoError(t, err)
	tasukitest.Work(ctx, t, w, done.ID)
	sms, err := newClient[SendSMS](t, pool, scoped).Insert(ctx, SendSMS{Number: "1"}, nil)
	require.NoError(t, err)

	for _, c := range []struct {
		id  int64
		msg string
	}{
		{done.ID, fmt.Sprintf("tasukitest: Work: job %d: tasuki: work job %d: it is completed; only a pending job can be worked", done.ID, done.ID)},
		{sms.ID, fmt.Sprintf(`tasuki: work job %d: its kind "send_sms" has no handler in this worker`, sms.ID)},
		{-1, "tasuki: work job -1: " + tasuki.ErrJobNotFound.Error()},
	} {
		rec := &recorder{}
		require.Nil(t, tasukitest.Work(ctx, rec, w, c.id))
		containsAll(t, rec.failed(t), c.msg)
	}
	rec := &recorder{}
	require.Nil(t, tasukitest.Work(ctx, rec, nil, 1))
	containsAll(t, rec.failed(t), "tasukitest: Work: the worker is nil: pass one made by worker.New, without calling its Run")
}
