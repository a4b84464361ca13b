package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

func TestWorkerCleansFinishedJobsPastRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client, err := tasuki.NewClient[task](pool, tasuki.ClientConfig{})
	require.NoError(t, err)
	done, err := client.Insert(ctx, task{N: 1}, nil)
	require.NoError(t, err)
	kept, err := client.Insert(ctx, task{N: 2, Mode: "fail"}, &tasuki.InsertOpts{MaxAttempts: 1})
	require.NoError(t, err)

	admin, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	require.NoError(t, admin.SetRetention(ctx, tasuki.DefaultQueue, tasuki.Retention{Completed: time.Millisecond, Failed: tasuki.KeepForever}))
	w := newWorker(t, pool, func(_ context.Context, job *tasuki.Job[task]) error {
		if job.Payload.Mode == "fail" {
			return assert.AnError
		}
		return nil
	}, worker.Config{CleanInterval: 20 * time.Millisecond})
	running(t, w)

	eventually(t, "the completed job deleted", func() bool {
		_, err := client.Get(ctx, done.ID)
		return err != nil
	})
	_, err = client.Get(ctx, done.ID)
	require.ErrorIs(t, err, tasuki.ErrJobNotFound)
	eventually(t, "the failed job failed", func() bool { return jobStatus(t, client, kept.ID) == tasuki.StatusFailed })
	time.Sleep(100 * time.Millisecond) // several cleaning rounds
	assert.Equal(t, tasuki.StatusFailed, jobStatus(t, client, kept.ID), "a queue's failed retention of KeepForever keeps failed jobs")
}

func TestWorkerRetentionValidation(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	h := worker.HandlerFunc[task](func(context.Context, *tasuki.Job[task]) error { return nil })
	for option, cfg := range map[string]worker.Config{
		"Config.CleanInterval": {CleanInterval: time.Microsecond},
	} {
		_, err := worker.New(pool, cfg, worker.Handle[task](h))
		var oe *tasuki.InvalidOptionError
		require.ErrorAs(t, err, &oe, option)
		assert.Equal(t, option, oe.Option)
	}
	w, err := worker.New(pool, worker.Config{}, worker.Handle[task](h))
	require.NoError(t, err)
	assert.Equal(t, time.Minute, w.Config().CleanInterval)
}
