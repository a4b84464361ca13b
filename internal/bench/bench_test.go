package bench_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/bench"
	"github.com/tasukiq/tasuki/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// migrated returns the URL of a fresh schema with tasuki's tables, and a
// pool on it for looking at what a run left behind.
func migrated(t *testing.T) (string, *db.Queries) {
	t.Helper()
	_, url := testdb.Schema(t)
	pool := testdb.Pool(t, url)
	testdb.MigrateUp(t, pool)
	return url, db.New(pool)
}

func TestDrainRunsEveryJobInBatchesAndCleansUp(t *testing.T) {
	url, q := migrated(t)
	ctx := context.Background()

	res, err := bench.Drain(ctx, bench.Config{URL: url, Jobs: 500, Concurrency: 50})
	require.NoError(t, err)

	assert.Equal(t, 500, res.Jobs)
	assert.Positive(t, res.Elapsed)
	assert.Positive(t, res.Statements)
	// Leases and outcomes go in batches: far fewer statements than jobs.
	assert.Less(t, res.Statements, int64(500))
	assert.Contains(t, res.String(), "drain: 500 no-op jobs, concurrency 50")

	s, err := q.JobCountByStatus(ctx)
	require.NoError(t, err)
	assert.Empty(t, s, "the drain deletes its queue's jobs afterwards")
}

func TestDrainSamplesMemory(t *testing.T) {
	url, _ := migrated(t)
	res, err := bench.Drain(context.Background(), bench.Config{URL: url, Jobs: 200, Concurrency: 20, Memory: true})
	require.NoError(t, err)
	// At most one sample per tenth (a fast drain passes several tenths
	// between two looks), and one after the worker stopped.
	assert.GreaterOrEqual(t, len(res.HeapInuse), 2)
	assert.LessOrEqual(t, len(res.HeapInuse), 12)
	for _, h := range res.HeapInuse {
		assert.Positive(t, h)
	}
}

func TestInsertTimesSingleInsertsCommitsAndCopy(t *testing.T) {
	url, q := migrated(t)
	ctx := context.Background()

	res, err := bench.Insert(ctx, bench.Config{URL: url, Inserts: 150, BulkJobs: 1000})
	require.NoError(t, err)

	assert.Equal(t, 150, res.Single)
	assert.Positive(t, res.SingleTime)
	assert.Positive(t, res.CommitTime, "the empty-commit probe ran")
	assert.Equal(t, 1000, res.Bulk)
	assert.Positive(t, res.BulkTime)
	assert.Contains(t, res.String(), "empty durable commits/s")

	s, err := q.JobCountByStatus(ctx)
	require.NoError(t, err)
	assert.Empty(t, s, "the insert run deletes its queue's jobs afterwards")
}

func TestLatencyMeasuresEveryInsertedJob(t *testing.T) {
	url, _ := migrated(t)
	res, err := bench.Latency(context.Background(), bench.Config{URL: url, Rate: 100, Duration: 500 * time.Millisecond, Concurrency: 10})
	require.NoError(t, err)

	assert.Positive(t, res.Jobs)
	assert.Positive(t, res.P50)
	assert.LessOrEqual(t, res.P50, res.P90)
	assert.LessOrEqual(t, res.P90, res.P99)
	assert.LessOrEqual(t, res.P99, res.Max)
	assert.Positive(t, res.InsertP50)
	assert.Contains(t, res.String(), "the insert's own commit")
}
