package bench_test

import (
	"context"
	"regexp"
	"slices"
	"strings"
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
	assert.Contains(t, res.String(), "from 1 producer ")
	assert.Equal(t, 50, res.Jobs, "one producer by default, inserting Rate × Duration jobs")
}

// Many producers share the rate: every job they insert runs exactly once
// (Latency fails on a job that ran twice or not at all), and the figures
// are those of all of them. No figure is compared with a time: the machine
// decides those.
func TestLatencyFromManyProducersRunsEveryJobOnce(t *testing.T) {
	url, q := migrated(t)
	ctx := context.Background()
	res, err := bench.Latency(ctx, bench.Config{URL: url, Rate: 300, Duration: 500 * time.Millisecond, Concurrency: 10, Producers: 7})
	require.NoError(t, err)

	// 150 jobs, which 7 producers cannot share equally: the remainder
	// goes to the first ones.
	assert.Equal(t, 150, res.Jobs)
	assert.Equal(t, 7, res.Producers)
	assert.Equal(t, 300, res.Rate)
	assert.Positive(t, res.Achieved)
	for _, p := range [][]time.Duration{
		{res.P50, res.P90, res.P99, res.Max},
		{res.InsertP50, res.InsertP99},
		{res.PickupP50, res.PickupP99, res.PickupMax},
	} {
		assert.True(t, slices.IsSorted(p), "percentiles out of order: %v", p)
	}
	assert.Positive(t, res.P50)
	assert.Positive(t, res.InsertP50)
	// Each job's Insert returned after it started: the time from the
	// return to the handler is never the longer.
	assert.LessOrEqual(t, res.PickupMax, res.Max)
	assert.Contains(t, res.String(), "150 jobs at 300/s from 7 producers")

	s, err := q.JobCountByStatus(ctx)
	require.NoError(t, err)
	assert.Empty(t, s, "the latency run deletes its queue's jobs afterwards")
}

func TestLatencyRefusesARunOfNoInserts(t *testing.T) {
	_, err := bench.Latency(context.Background(), bench.Config{URL: "postgres://unused", Rate: 1, Duration: time.Millisecond})
	assert.ErrorContains(t, err, "at least one insert")
}

func TestSnapshotWritesALinePerMinuteOfTheHold(t *testing.T) {
	url, q := migrated(t)
	ctx := context.Background()
	var out strings.Builder
	res, err := bench.Snapshot(ctx, bench.Config{
		URL: url, Rate: 100, Concurrency: 8,
		Warmup: time.Second, Baseline: time.Second, Hold: 2 * time.Second, After: time.Second,
		MinuteLength: time.Second, Explain: true,
	}, &out)
	require.NoError(t, err)
	t.Log("\n" + out.String())

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 6, "a header, the warm-up, the baseline, two minutes held and one after:\n%s", out.String())
	assert.Contains(t, lines[0], "n_dead_tup")
	line := regexp.MustCompile(`^snapshot: (warm-up|before|\d+|after \d+) +(\d+) +(\S+) +(\S+) +(\d+\.\d) +(\d+\.\d) +(\d+) +(\d+)  lease scan: (\d+) pages in (\S+) \((shared .*)\)$`)
	var labels []string
	for _, l := range lines[1:] {
		f := line.FindStringSubmatch(l)
		require.NotNil(t, f, "line does not parse: %q", l)
		labels = append(labels, f[1])
		for _, d := range []string{f[3], f[4], f[10]} {
			_, err := time.ParseDuration(d)
			assert.NoError(t, err, "in %q", l)
		}
	}
	assert.Equal(t, []string{"warm-up", "before", "1", "2", "after 1"}, labels)

	require.Len(t, res.Minutes, 5)
	assert.Positive(t, res.Xid)
	for _, m := range res.Minutes {
		assert.Positive(t, m.Started, m.Label)
		assert.Positive(t, m.Inserted, m.Label)
		assert.LessOrEqual(t, m.P50, m.P99, m.Label)
		assert.Positive(t, m.ScanPages, m.Label)
	}
	assert.Contains(t, res.String(), "idle for 2s")

	s, err := q.JobCountByStatus(ctx)
	require.NoError(t, err)
	assert.Empty(t, s, "the snapshot run deletes its queue's jobs afterwards")
}

// The producers run measures every way of inserting, each a positive rate,
// and leaves none of its jobs behind.
func TestProducersMeasuresEveryWayAndCleansUp(t *testing.T) {
	url, q := migrated(t)
	ctx := context.Background()
	res, err := bench.Producers(ctx, bench.ProducersConfig{URL: url, Producers: 4, BulkProducers: 2, Batch: 10, Turn: 200 * time.Millisecond, Turns: 1})
	require.NoError(t, err)
	for name, rate := range map[string]float64{"plain": res.Plain, "Insert": res.Insert, "InsertTx": res.InsertTx,
		"plain tx": res.PlainTx, "plain COPY": res.PlainCopy, "InsertMany": res.InsertMany} {
		assert.Positive(t, rate, name)
	}
	assert.Contains(t, res.String(), "4 producers at once")
	stats, err := q.JobCountByStatus(ctx)
	require.NoError(t, err)
	assert.Empty(t, stats, "the run deletes its jobs")
}

// A worker of many kinds over many queues with nothing to do uses its
// LISTEN connection and one connection of its own pool, and sends about
// one statement per poll interval (its lease, which the rescue rides on).
// The figures are counts, not times.
func TestIdleWorkerOfManyKindsHoldsTwoConnectionsAndPollsOnce(t *testing.T) {
	url, _ := migrated(t)
	// A poll interval of a second leaves the reads from the heads 50 ms
	// to count as cheap (see worker's headReadShare), which a loaded
	// machine under -race still meets; at 200 ms they had 20 ms, and a
	// slower one had the sweeper look on a second connection.
	res, err := bench.Idle(context.Background(), bench.Config{URL: url, Kinds: 4, Queues: 4,
		IdleWindow: 4 * time.Second, PollInterval: time.Second})
	require.NoError(t, err)
	t.Log(res)

	assert.Equal(t, 4, res.Kinds)
	assert.Equal(t, 4, res.Queues)
	assert.Positive(t, res.Queries)
	assert.LessOrEqual(t, res.PerPoll(), 1.5, "statements: %v", res.ByName)
	assert.Equal(t, 1, res.EndByName["tasuki-listener"], "one LISTEN connection: %v", res.EndByName)
	// The polls go through the worker's pool. In the first seconds it
	// holds a second connection, opened at start-up for the cleaner's
	// first round beside the first lease, which a poll may also take; the
	// pool closes it once it has been unused for 15 s, so an idle worker
	// ends with 2 (worker's TestKindsIdleWorkerHoldsFewConnections waits
	// for that). A run of seconds sees both.
	assert.LessOrEqual(t, res.Busy, 2, "connections that sent statements")
	assert.LessOrEqual(t, res.EndByName["tasuki-worker"], 2, "at the end: %v", res.EndByName)
	assert.LessOrEqual(t, res.MaxConns, 3, "at the end: %v", res.EndByName)
	assert.Contains(t, res.String(), "idle: 4 kinds over 4 queues, poll interval 1s")
}

// Jobs spread over kinds and queues are all run by the one worker, and
// every queue is cleaned up.
func TestDrainSpreadOverKindsAndQueues(t *testing.T) {
	url, q := migrated(t)
	ctx := context.Background()
	res, err := bench.Drain(ctx, bench.Config{URL: url, Jobs: 600, Concurrency: 50, Kinds: 3, Queues: 4})
	require.NoError(t, err)
	assert.Equal(t, 600, res.Jobs)
	assert.Contains(t, res.String(), "drain: 600 no-op jobs of 3 kinds in 4 queues, concurrency 50")

	s, err := q.JobCountByStatus(ctx)
	require.NoError(t, err)
	assert.Empty(t, s, "the drain deletes every queue's jobs afterwards")
}
