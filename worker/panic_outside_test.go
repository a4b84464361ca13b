package worker_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

type nilPointerError struct{ msg string }

func (e *nilPointerError) Error() string { return e.msg } // panics on a nil receiver

// A handler that returns a typed nil pointer as its error makes the
// worker's own code panic (in Error). The worker survives: the attempt is
// recorded as failed with the panic, and other jobs run on.
func TestPanicWhileRecordingOutcome(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client, err := tasuki.NewClient[task](pool, tasuki.ClientConfig{})
	require.NoError(t, err)
	bad, err := client.Insert(ctx, task{N: 1, Mode: "typed-nil"}, &tasuki.InsertOpts{MaxAttempts: 1})
	require.NoError(t, err)

	w := newWorker(t, pool, func(_ context.Context, job *tasuki.Job[task]) error {
		if job.Payload.Mode == "typed-nil" {
			var e *nilPointerError
			return e
		}
		return nil
	}, worker.Config{Concurrency: 1})
	running(t, w)

	eventually(t, "the bad job failed", func() bool { return jobStatus(t, client, bad.ID) == tasuki.StatusFailed })
	job, err := client.Get(ctx, bad.ID)
	require.NoError(t, err)
	assert.Contains(t, job.LastError(), "panic")

	good, err := client.Insert(ctx, task{N: 2}, nil)
	require.NoError(t, err)
	eventually(t, "the next job completed", func() bool { return jobStatus(t, client, good.ID) == tasuki.StatusCompleted })
}
