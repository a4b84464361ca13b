package worker_test

import (
	"context"
	"math/rand"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

type tick struct {
	N int `json:"n"`
}

func (tick) Kind() string { return "tick" }

func tickWorker(t *testing.T, pool *pgxpool.Pool, p worker.PeriodicJob) *worker.Worker {
	t.Helper()
	w, err := worker.New(pool, worker.Config{Queue: "default", Logger: testLogger(t)},
		worker.HandleFunc(func(context.Context, *tasuki.Job[tick]) error { return nil }))
	require.NoError(t, err)
	require.NoError(t, w.AddPeriodic(p))
	return w
}

func tickCounts(t *testing.T, pool *pgxpool.Pool) map[time.Time]int {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT (metadata->>'periodic_tick')::timestamptz AS tick, count(*) FROM tasuki_job
		WHERE kind = 'tick' GROUP BY tick ORDER BY tick`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[time.Time]int{}
	for rows.Next() {
		var at time.Time
		var n int
		require.NoError(t, rows.Scan(&at, &n))
		out[at.UTC()] = n
	}
	require.NoError(t, rows.Err())
	return out
}

// Three processes (three pools) run one schedule, started and stopped at
// different moments: every tick is enqueued exactly once, and no tick is
// missed while one of them runs.
func TestPeriodicEachTickOnceOverProcesses(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	p := worker.Periodic("every-second", worker.Every(time.Second), func() (tick, *tasuki.InsertOpts) { return tick{N: 1}, nil }, worker.PeriodicOpts{})
	pools := []*pgxpool.Pool{pool}
	for range 2 {
		other, err := pgxpool.NewWithConfig(context.Background(), pool.Config())
		require.NoError(t, err)
		t.Cleanup(other.Close)
		pools = append(pools, other)
	}
	stopA := running(t, tickWorker(t, pools[0], p))
	stopB := running(t, tickWorker(t, pools[1], p))
	eventually(t, "two ticks", func() bool { return len(tickCounts(t, pool)) >= 2 })
	stopA()
	stopC := running(t, tickWorker(t, pools[2], p))
	eventually(t, "four ticks", func() bool { return len(tickCounts(t, pool)) >= 4 })
	stopB()
	eventually(t, "five ticks", func() bool { return len(tickCounts(t, pool)) >= 5 })
	stopC()

	counts := tickCounts(t, pool)
	var first, last time.Time
	for at, n := range counts {
		assert.Equal(t, 1, n, "the tick at %s", at)
		assert.Equal(t, at, at.Truncate(time.Second), "ticks are on the second")
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	assert.Len(t, counts, int(last.Sub(first)/time.Second)+1, "no tick between the first and the last is missing")
	periodic, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	list, err := periodic.Periodic(context.Background())
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, "every-second", list[0].Name)
	assert.Equal(t, "tick", list[0].Kind)
	assert.Equal(t, "every 1s", list[0].Schedule)
	require.NotNil(t, list[0].LastTick)
	assert.Equal(t, last, list[0].LastTick.UTC())
}

// A tick missed while no process ran the schedule: RunMissedOnce enqueues
// one job, for the latest; SkipMissed none. RunOnStart enqueues one at
// start.
func TestPeriodicMissedTicksAndRunOnStart(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	hour := time.Now().UTC().Truncate(time.Hour)
	_, err := pool.Exec(ctx, `INSERT INTO tasuki_periodic (name, kind, schedule, last_tick) VALUES
		('hourly-once', 'tick', 'every 1h0m0s', $1), ('hourly-skip', 'tick', 'every 1h0m0s', $1)`, hour.Add(-3*time.Hour))
	require.NoError(t, err)
	payload := func(n int) func() (tick, *tasuki.InsertOpts) {
		return func() (tick, *tasuki.InsertOpts) { return tick{N: n}, nil }
	}
	w, err := worker.New(pool, worker.Config{Queue: "default", Logger: testLogger(t)},
		worker.HandleFunc(func(context.Context, *tasuki.Job[tick]) error { return nil }))
	require.NoError(t, err)
	require.NoError(t, w.AddPeriodic(worker.Periodic("hourly-once", worker.Every(time.Hour), payload(1), worker.PeriodicOpts{Missed: worker.RunMissedOnce})))
	require.NoError(t, w.AddPeriodic(worker.Periodic("hourly-skip", worker.Every(time.Hour), payload(2), worker.PeriodicOpts{})))
	require.NoError(t, w.AddPeriodic(worker.Periodic("on-start", worker.Every(time.Hour), payload(3), worker.PeriodicOpts{RunOnStart: true})))
	stop := running(t, w)
	count := func(n int) int {
		var c int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tasuki_job WHERE kind = 'tick' AND (payload->>'n')::int = $1`, n).Scan(&c))
		return c
	}
	eventually(t, "the missed tick and the start job", func() bool { return count(1) == 1 && count(3) == 1 })
	stop()
	var at time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT (metadata->>'periodic_tick')::timestamptz FROM tasuki_job WHERE (payload->>'n')::int = 1`).Scan(&at))
	assert.Equal(t, hour, at.UTC(), "the latest missed tick, once")
	assert.Zero(t, count(2), "skipped")
	assert.True(t, w.RemovePeriodic("hourly-skip"))
	assert.False(t, w.RemovePeriodic("hourly-skip"))
}

// Schedules are checked, and a cron expression keeps its time zone.
func TestPeriodicSchedules(t *testing.T) {
	t.Parallel()
	_, err := worker.Cron("61 * * * *")
	var opt *tasuki.InvalidOptionError
	require.ErrorAs(t, err, &opt)
	tokyo, err := worker.Cron("CRON_TZ=Asia/Tokyo 0 9 * * *")
	require.NoError(t, err)
	from := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	assert.Equal(t, time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC), tokyo.Next(from).UTC(), "9:00 in Tokyo is midnight UTC")
	daily, err := worker.Cron("@daily")
	require.NoError(t, err)
	assert.Equal(t, time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC), daily.Next(from).UTC(), "UTC unless a zone is given")
	assert.Equal(t, time.Date(2030, 1, 1, 13, 0, 0, 0, time.UTC), worker.Every(time.Hour).Next(from.Add(time.Minute)))

	pool := testdb.New(t)
	w, err := worker.New(pool, worker.Config{Logger: testLogger(t)}, worker.HandleFunc(func(context.Context, *tasuki.Job[tick]) error { return nil }))
	require.NoError(t, err)
	noop := func() (tick, *tasuki.InsertOpts) { return tick{}, nil }
	for _, p := range []worker.PeriodicJob{
		worker.Periodic("", worker.Every(time.Hour), noop, worker.PeriodicOpts{}),
		worker.Periodic("x", nil, noop, worker.PeriodicOpts{}),
		worker.Periodic[tick]("x", worker.Every(time.Hour), nil, worker.PeriodicOpts{}),
		worker.Periodic("x", worker.Every(time.Millisecond), noop, worker.PeriodicOpts{}),
	} {
		require.ErrorAs(t, w.AddPeriodic(p), &opt)
	}
}

// Three processes start and stop in a random order (the seed is logged),
// at least one running at any time: every tick is enqueued exactly once,
// with none missing between the first and the last.
func TestPeriodicEachTickOnceOverProcessesStartedAtRandom(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	p := worker.Periodic("random-second", worker.Every(time.Second), func() (tick, *tasuki.InsertOpts) { return tick{N: 1}, nil }, worker.PeriodicOpts{})
	pools := []*pgxpool.Pool{pool}
	for range 2 {
		other, err := pgxpool.NewWithConfig(context.Background(), pool.Config())
		require.NoError(t, err)
		t.Cleanup(other.Close)
		pools = append(pools, other)
	}
	stops := make([]func(), 3)
	stops[0] = running(t, tickWorker(t, pools[0], p))
	for step := range 6 {
		i := rng.Intn(3)
		live := 0
		for _, s := range stops {
			if s != nil {
				live++
			}
		}
		switch {
		case stops[i] == nil:
			stops[i] = running(t, tickWorker(t, pools[i], p))
		case live > 1:
			stops[i]()
			stops[i] = nil
		}
		want := step + 2
		eventually(t, "another tick", func() bool { return len(tickCounts(t, pool)) >= want })
	}
	for _, s := range stops {
		if s != nil {
			s()
		}
	}
	counts := tickCounts(t, pool)
	var first, last time.Time
	for at, n := range counts {
		assert.Equal(t, 1, n, "the tick at %s", at)
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	assert.Len(t, counts, int(last.Sub(first)/time.Second)+1, "no tick between the first and the last is missing")
}
