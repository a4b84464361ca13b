package tasuki_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// SetRetention and PauseQueue racing on the same new tasuki_queue row
// each keep their own columns: neither overwrites the other, whichever
// inserts the row.
func TestSetRetentionRacesPauseQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	admin, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	const queues = 50
	var wg sync.WaitGroup
	for i := range queues {
		q := fmt.Sprintf("race%d", i)
		wg.Add(2)
		go func() {
			defer wg.Done()
			assert.NoError(t, admin.SetRetention(ctx, q, tasuki.Retention{Completed: tasuki.KeepForever}))
		}()
		go func() {
			defer wg.Done()
			_, err := admin.PauseQueue(ctx, q)
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	stats, err := admin.Stats(ctx)
	require.NoError(t, err)
	require.Len(t, stats, queues)
	for _, s := range stats {
		assert.True(t, s.Paused, s.Queue)
		assert.Equal(t, tasuki.KeepForever, s.Retention.Completed, s.Queue)
		assert.Equal(t, tasuki.DefaultFailedRetention, s.Retention.Failed, s.Queue)
	}
}

// Migration 3 goes down and up again with retention settings and finished
// jobs in place.
func TestRetentionMigrationDownUpWithData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	admin, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	require.NoError(t, admin.SetRetention(ctx, "q", tasuki.Retention{Completed: time.Hour}))
	c, err := tasuki.NewClient[string](pool, tasuki.ClientConfig{Kind: "text", Queue: "q"})
	require.NoError(t, err)
	job, err := c.Insert(ctx, "x", nil)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "UPDATE tasuki_job SET status = 'completed', finished_at = now() WHERE id = $1", job.ID)
	require.NoError(t, err)

	m, err := tasuki.NewMigrator(pool)
	require.NoError(t, err)
	defer m.Close()
	_, err = m.DownTo(ctx, 2)
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	stats, err := admin.Stats(ctx)
	require.NoError(t, err)
	require.Len(t, stats, 1)
	assert.Equal(t, int64(1), stats[0].Completed)
	assert.Equal(t, tasuki.DefaultCompletedRetention, stats[0].Retention.Completed, "the setting went with the down migration")
}
