package tasukiotel_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/tasukiq/tasuki/internal/testdb"
	tasukiotel "github.com/tasukiq/tasuki/otel"
	"github.com/tasukiq/tasuki/tasuki"
)

func TestQueueMetrics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	pool := testdb.New(t)
	admin, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	unregister, err := f.in.RegisterQueueMetrics(admin)
	require.NoError(t, err)

	c := f.client(t, pool, "depth")
	for range 2 {
		_, err := c.Insert(ctx, email{}, &tasuki.InsertOpts{RunAt: time.Now().Add(-time.Hour)})
		require.NoError(t, err)
	}
	_, err = c.Insert(ctx, email{}, &tasuki.InsertOpts{Delay: time.Hour})
	require.NoError(t, err)

	queue, runnable, scheduled := tasukiotel.AttrQueue.String("depth"), tasukiotel.AttrState.String("runnable"), tasukiotel.AttrState.String("scheduled")
	rm := f.collect(t)
	n, ok := gauge[int64](t, rm, "tasuki.queue.depth", queue, runnable)
	require.True(t, ok)
	assert.Equal(t, int64(2), n)
	n, ok = gauge[int64](t, rm, "tasuki.queue.depth", queue, scheduled)
	require.True(t, ok)
	assert.Equal(t, int64(1), n)
	age, ok := gauge[float64](t, rm, "tasuki.queue.oldest_runnable_age", queue)
	require.True(t, ok)
	assert.GreaterOrEqual(t, age, time.Hour.Seconds()-1, "scheduled an hour ago") // the second: the database rounds to microseconds

	// Drained: the queue is reported with zeros, not dropped.
	_, err = admin.CancelMany(ctx, tasuki.JobFilter{Queue: "depth"})
	require.NoError(t, err)
	rm = f.collect(t)
	n, ok = gauge[int64](t, rm, "tasuki.queue.depth", queue, runnable)
	require.True(t, ok)
	assert.Equal(t, int64(0), n)
	n, ok = gauge[int64](t, rm, "tasuki.queue.depth", queue, scheduled)
	require.True(t, ok)
	assert.Equal(t, int64(0), n)
	age, ok = gauge[float64](t, rm, "tasuki.queue.oldest_runnable_age", queue)
	require.True(t, ok)
	assert.Equal(t, 0.0, age)

	require.NoError(t, unregister())
	rm = f.collect(t)
	_, ok = gauge[int64](t, rm, "tasuki.queue.depth", queue, runnable)
	assert.False(t, ok, "unregistered")
}

// A failed read is reported to the SDK, which returns it from Collect;
// the other instruments are still collected.
func TestQueueMetricsError(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	admin, err := tasuki.NewAdmin(testdb.NewEmpty(t)) // no tables
	require.NoError(t, err)
	_, err = f.in.RegisterQueueMetrics(admin)
	require.NoError(t, err)
	require.NoError(t, f.in.Middleware()(context.Background(), rawJob(1, 3, `{}`), func(context.Context) error { return nil }))

	var rm metricdata.ResourceMetrics
	err = f.reader.Collect(context.Background(), &rm)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "tasuki.queue.depth")
	assert.Equal(t, int64(1), sum(t, rm, "tasuki.jobs.finished", outcome("q", "k", "completed")...))
}

func TestRegisterQueueMetricsNilAdmin(t *testing.T) {
	t.Parallel()
	_, err := newFixture(t).in.RegisterQueueMetrics(nil)
	require.ErrorContains(t, err, "tasuki.NewAdmin")
}
