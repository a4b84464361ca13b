package worker_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

func TestCompletesJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	client, err := tasuki.NewClient[task](pool, tasuki.ClientConfig{})
	require.NoError(t, err)

	var mu sync.Mutex
	seen := map[int]int{}
	w := newWorker(t, pool, func(ctx context.Context, job *tasuki.Job[task]) error {
		mu.Lock()
		seen[job.Payload.N]++
		mu.Unlock()
		assert.Equal(t, 1, job.Attempt)
		return nil
	}, worker.Config{Concurrency: 7})
	running(t, w)

	for i := range 50 {
		_, err := client.Insert(ctx, task{N: i}, nil)
		require.NoError(t, err)
	}
	payloads := make([]task, 200)
	for i := range payloads {
		payloads[i] = task{N: 50 + i}
	}
	_, err = client.InsertMany(ctx, payloads, nil)
	require.NoError(t, err)

	eventually(t, "all jobs completed", func() bool { return countStatus(t, pool, tasuki.StatusCompleted) == 250 })
	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, seen, 250)
	for n, c := range seen {
		assert.Equal(t, 1, c, "job %d ran %d times", n, c)
	}
}
