package worker

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
)

// The retention cleaner reads only the expired part of each (queue,
// status) range of the finished jobs' index, however many finished jobs a
// queue keeps: with 20,000 completed jobs kept (finished now, retention a
// day) and 10 expired ones, a cleaner run deletes the 10 without reading
// the table. Its LIMIT once made the planner prefer a sequential scan,
// expecting to find expired jobs early in it: each run then read the
// whole table once per (queue, status).
func TestCleanerReadsOnlyExpiredJobs(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `INSERT INTO tasuki_job (queue, kind, payload, status, attempts, attempted_at, finished_at)
		SELECT 'kept', 'k', '{}', 'completed', 1, now(), now() - CASE WHEN i <= 10 THEN interval '2 days' ELSE interval '0' END
		FROM generate_series(1, 20010) AS i`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `ANALYZE tasuki_job`)
	require.NoError(t, err)

	conn, plans := saPlans(t, pool)
	ids, err := db.New(conn).JobCleanRetained(ctx, db.JobCleanRetainedParams{
		CompletedUs: 86_400_000_000, CanceledUs: 86_400_000_000, FailedUs: 86_400_000_000,
		SkipIds: []int64{}, OnlyIds: []int64{}, Max: 1000,
	})
	require.NoError(t, err)
	assert.Len(t, ids, 10, "the expired jobs deleted")
	all := strings.Join(plans(), "\n")
	require.Contains(t, all, "tasuki_job", "a plan was captured")
	assert.NotContains(t, all, "Seq Scan on tasuki_job", "the cleaner read the whole table:\n%s", all)
}
