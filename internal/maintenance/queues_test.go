package maintenance_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/maintenance"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// The cleaner's loose index scan visits queues whose names sort oddly (case, accents, combining marks, spaces, LIKE wildcards, emoji,
// 128 characters) and keeps the settings of each, including a queue kept
// forever that sorts between the others.
func TestCleanerOddQueueNames(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	admin, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	names := []string{"a", "A", "a ", " a", "ä", "a\u0301", "%", "_", "a%b", "🙂", "z", strings.Repeat("é", 128), "b"}
	require.NoError(t, admin.SetRetention(ctx, "b", tasuki.Retention{Completed: tasuki.KeepForever}))
	var kept []int64
	for _, q := range names {
		ids := addJobsIn(t, pool, q, 3, tasuki.StatusCompleted, 48*time.Hour)
		if q == "b" {
			kept = ids
		}
	}
	n, err := newCleaner(t, pool, maintenance.CleanerConfig{BatchSize: 2}).RunOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(3*(len(names)-1)), n)
	assert.Equal(t, kept, remaining(t, pool))
}

// With 10k queues, one expired job each, a round deletes them all, batch
// after batch.
func TestCleanerManyQueues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	_, err := pool.Exec(ctx, `INSERT INTO tasuki_job (queue, kind, payload, status, finished_at)
		SELECT 'q' || g, 'k', '{}', 'completed', now() - interval '2 days' FROM generate_series(1, 10000) g`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO tasuki_job (queue, kind, payload, status, finished_at)
		SELECT 'q' || g, 'k', '{}', 'completed', now() FROM generate_series(1, 10000) g`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "ANALYZE tasuki_job")
	require.NoError(t, err)
	start := time.Now()
	n, err := newCleaner(t, pool, maintenance.CleanerConfig{}).RunOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(10000), n)
	t.Logf("10k queues: %s", time.Since(start))
	var left int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM tasuki_job").Scan(&left))
	assert.Equal(t, 10000, left)
}
