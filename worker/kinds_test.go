package worker_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// Payload types of distinct kinds, with fields that do not overlap: a job
// decoded into the wrong type shows zero values.
type ktAlpha struct {
	N int    `json:"an"`
	A string `json:"alpha"`
}

func (ktAlpha) Kind() string { return "kt_alpha" }

type ktBeta struct {
	M int    `json:"bm"`
	B string `json:"beta"`
}

func (ktBeta) Kind() string { return "kt_beta" }

type ktGamma struct {
	G int `json:"g"`
}

func (ktGamma) Kind() string { return "kt_gamma" }

type ktDelta struct {
	D int `json:"d"`
}

func (ktDelta) Kind() string { return "kt_delta" }

// ktNew builds a worker from registrations, with the test logger.
func ktNew(t *testing.T, pool *pgxpool.Pool, cfg worker.Config, regs ...worker.Registration) *worker.Worker {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	w, err := worker.New(pool, cfg, regs...)
	require.NoError(t, err)
	return w
}

func ktClient[T any](t *testing.T, pool *pgxpool.Pool, queue string) *tasuki.Client[T] {
	t.Helper()
	c, err := tasuki.NewClient[T](pool, tasuki.ClientConfig{Queue: queue})
	require.NoError(t, err)
	return c
}

func ktCount(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

// ktMax raises m to v if v is larger.
func ktMax(m *atomic.Int64, v int64) {
	for {
		old := m.Load()
		if v <= old || m.CompareAndSwap(old, v) {
			return
		}
	}
}

// ktGauge counts handlers running at once and the most seen.
type ktGauge struct{ cur, max atomic.Int64 }

func (g *ktGauge) enter() { ktMax(&g.max, g.cur.Add(1)) }
func (g *ktGauge) leave() { g.cur.Add(-1) }

// ktBeat is when this schema's (single) worker process record expires: it
// changes with each rescue round, which is also when the fetch loop polls.
func ktBeat(t *testing.T, pool *pgxpool.Pool) time.Time {
	t.Helper()
	var at time.Time
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT max(expires_at) FROM tasuki_process").Scan(&at))
	return at
}

// 1. Two kinds on one queue, one worker: each job reaches its own handler
// with its own payload type.
func TestKindsTwoKindsOneQueueOneWorker(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ca := ktClient[ktAlpha](t, pool, "default")
	cb := ktClient[ktBeta](t, pool, "default")

	var mu sync.Mutex
	seenA := map[int64]int{}
	seenB := map[int64]int{}
	var wrong atomic.Int64
	w := ktNew(t, pool, worker.Config{Queue: "default", PollInterval: 50 * time.Millisecond},
		worker.HandleFunc(func(_ context.Context, j *tasuki.Job[ktAlpha]) error {
			if j.Kind != "kt_alpha" || j.Payload.A != "a" {
				wrong.Add(1)
			}
			mu.Lock()
			seenA[j.ID]++
			mu.Unlock()
			return nil
		}),
		worker.HandleFunc(func(_ context.Context, j *tasuki.Job[ktBeta]) error {
			if j.Kind != "kt_beta" || j.Payload.B != "b" {
				wrong.Add(1)
			}
			mu.Lock()
			seenB[j.ID]++
			mu.Unlock()
			return nil
		}))
	require.Equal(t, []string{"kt_alpha", "kt_beta"}, w.Kinds())

	idsA, idsB := map[int64]bool{}, map[int64]bool{}
	for i := range 20 { // some before Run, the rest while it runs
		idsA[insert(t, ca, ktAlpha{N: i, A: "a"}, nil)] = true
		idsB[insert(t, cb, ktBeta{M: i, B: "b"}, nil)] = true
	}
	running(t, w)
	for i := range 40 {
		idsA[insert(t, ca, ktAlpha{N: i, A: "a"}, &tasuki.InsertOpts{Priority: i % 3})] = true
		idsB[insert(t, cb, ktBeta{M: i, B: "b"}, &tasuki.InsertOpts{Priority: i % 2})] = true
	}
	eventually(t, "every job to complete", func() bool { return countStatus(t, pool, tasuki.StatusCompleted) == 120 })

	mu.Lock()
	defer mu.Unlock()
	assert.Zero(t, wrong.Load(), "a handler got a job of another kind or another payload type")
	require.Len(t, seenA, 60)
	require.Len(t, seenB, 60)
	for id, n := range seenA {
		assert.True(t, idsA[id], "alpha handler ran job %d, not an alpha job", id)
		assert.Equal(t, 1, n, "job %d ran %d times", id, n)
	}
	for id, n := range seenB {
		assert.True(t, idsB[id], "beta handler ran job %d, not a beta job", id)
		assert.Equal(t, 1, n, "job %d ran %d times", id, n)
	}
	assert.Equal(t, 0, ktCount(t, pool, "SELECT count(*) FROM tasuki_job WHERE attempts <> 1"))
}

// 1. Two processes on one queue, one kind each: neither sees the other's
// jobs, and every job completes exactly once.
func TestKindsTwoProcessesSplitKinds(t *testing.T) {
	t.Parallel()
	_, url := testdb.Schema(t)
	poolA := testdb.Pool(t, url)
	testdb.MigrateUp(t, poolA)
	poolB := testdb.Pool(t, url)
	ca := ktClient[ktAlpha](t, poolA, "default")
	cb := ktClient[ktBeta](t, poolB, "default")

	var mu sync.Mutex
	ranBy := map[int64][]string{}
	record := func(id int64, who string) {
		mu.Lock()
		ranBy[id] = append(ranBy[id], who)
		mu.Unlock()
	}
	// Process A handles only alpha; B only beta. Each also registers
	// nothing for the other kind: a job of it reaching either is a bug.
	wA := ktNew(t, poolA, worker.Config{Concurrency: 4, PollInterval: 50 * time.Millisecond},
		worker.HandleFunc(func(_ context.Context, j *tasuki.Job[ktAlpha]) error {
			if j.Kind != "kt_alpha" || j.Payload.A != "a" {
				record(j.ID, "A-wrong")
				return nil
			}
			record(j.ID, "A")
			return nil
		}))
	wB := ktNew(t, poolB, worker.Config{Concurrency: 4, PollInterval: 50 * time.Millisecond},
		worker.HandleFunc(func(_ context.Context, j *tasuki.Job[ktBeta]) error {
			if j.Kind != "kt_beta" || j.Payload.B != "b" {
				record(j.ID, "B-wrong")
				return nil
			}
			record(j.ID, "B")
			return nil
		}))
	running(t, wA)
	running(t, wB)

	const n = 150
	idsA, idsB := map[int64]bool{}, map[int64]bool{}
	var wg sync.WaitGroup
	var muIDs sync.Mutex
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range n {
			j, err := ca.Insert(context.Background(), ktAlpha{N: i, A: "a"}, nil)
			if !assert.NoError(t, err) {
				return
			}
			muIDs.Lock()
			idsA[j.ID] = true
			muIDs.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		for i := range n {
			j, err := cb.Insert(context.Background(), ktBeta{M: i, B: "b"}, nil)
			if !assert.NoError(t, err) {
				return
			}
			muIDs.Lock()
			idsB[j.ID] = true
			muIDs.Unlock()
		}
	}()
	wg.Wait()
	eventually(t, "every job to complete", func() bool { return countStatus(t, poolA, tasuki.StatusCompleted) == 2*n })

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, ranBy, 2*n)
	for id, who := range ranBy {
		switch {
		case idsA[id]:
			assert.Equal(t, []string{"A"}, who, "alpha job %d", id)
		case idsB[id]:
			assert.Equal(t, []string{"B"}, who, "beta job %d", id)
		default:
			t.Errorf("unknown job %d ran", id)
		}
	}
	assert.Equal(t, 0, ktCount(t, poolA, "SELECT count(*) FROM tasuki_job WHERE attempts <> 1"))
}

// 2. A kind no worker handles stays pending, never leased, and Stats
// reports it as unhandled while the worker of the other kind runs.
func TestKindsUnhandledKindStaysPendingAndIsReported(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ca := ktClient[ktAlpha](t, pool, "default")
	cb := ktClient[ktBeta](t, pool, "default")
	admin, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)

	var ran atomic.Int64
	w := ktNew(t, pool, worker.Config{PollInterval: 20 * time.Millisecond},
		worker.HandleFunc(func(_ context.Context, j *tasuki.Job[ktAlpha]) error { ran.Add(1); return nil }))
	beta := insert(t, cb, ktBeta{M: 1, B: "b"}, nil)
	insert(t, ca, ktAlpha{N: 1, A: "a"}, nil)
	// A pending alpha job (later), so that the handled kind has pending
	// jobs too and must not be reported.
	insert(t, ca, ktAlpha{N: 2, A: "a"}, &tasuki.InsertOpts{Delay: time.Hour})
	running(t, w)
	eventually(t, "the alpha job to complete", func() bool { return countStatus(t, pool, tasuki.StatusCompleted) == 1 })
	// More alpha jobs while it runs: each is more lease rounds that must
	// not take the beta job.
	for i := range 10 {
		insert(t, ca, ktAlpha{N: 10 + i, A: "a"}, nil)
	}
	eventually(t, "the alpha jobs to complete", func() bool { return countStatus(t, pool, tasuki.StatusCompleted) == 11 })
	b := rawJob(t, pool, beta)
	assert.Equal(t, "pending", string(b.Status))
	assert.Equal(t, int32(0), b.Attempts)

	procs, err := admin.Processes(context.Background())
	require.NoError(t, err)
	require.Len(t, procs, 1, "the running worker's process record")
	assert.True(t, procs[0].Handles("default", "kt_alpha"))
	assert.False(t, procs[0].Handles("default", "kt_beta"))

	stats, err := admin.Stats(context.Background())
	require.NoError(t, err)
	require.Len(t, stats, 1)
	q := stats[0]
	assert.Equal(t, "default", q.Queue)
	assert.Equal(t, 1, q.Processes)
	assert.Equal(t, []string{"kt_beta"}, q.UnhandledKinds())
	require.Len(t, q.Kinds, 2)
	assert.Equal(t, "kt_alpha", q.Kinds[0].Kind)
	assert.Equal(t, int64(1), q.Kinds[0].Pending)
	assert.Equal(t, 1, q.Kinds[0].Processes)
	assert.False(t, q.Kinds[0].Unhandled)
	assert.Equal(t, "kt_beta", q.Kinds[1].Kind)
	assert.Equal(t, int64(1), q.Kinds[1].Pending)
	assert.Equal(t, 0, q.Kinds[1].Processes)
	assert.True(t, q.Kinds[1].Unhandled)
	assert.Equal(t, int64(11), ran.Load())
}

// 3. Per-queue concurrency within one worker.
func TestKindsPerQueueConcurrency(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	release := make(chan struct{})
	gauges := map[string]*ktGauge{"a": {}, "b": {}}
	w := ktNew(t, pool, worker.Config{
		Queues:       map[string]worker.QueueConfig{"a": {Concurrency: 2}, "b": {Concurrency: 3}},
		PollInterval: 20 * time.Millisecond,
	}, worker.HandleFunc(func(ctx context.Context, j *tasuki.Job[ktAlpha]) error {
		g := gauges[j.Queue]
		g.enter()
		defer g.leave()
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}))
	c := ktClient[ktAlpha](t, pool, "a")
	for i := range 10 {
		insert(t, c, ktAlpha{N: i, A: "a"}, &tasuki.InsertOpts{Queue: "a"})
		insert(t, c, ktAlpha{N: i, A: "a"}, &tasuki.InsertOpts{Queue: "b"})
	}
	running(t, w)
	eventually(t, "both queues at their caps", func() bool {
		return gauges["a"].cur.Load() == 2 && gauges["b"].cur.Load() == 3
	})
	// Several more lease rounds (wake-ups) while at the caps.
	for i := range 5 {
		insert(t, c, ktAlpha{N: 100 + i, A: "a"}, &tasuki.InsertOpts{Queue: "a"})
		insert(t, c, ktAlpha{N: 100 + i, A: "a"}, &tasuki.InsertOpts{Queue: "b"})
	}
	assert.Equal(t, 2, ktCount(t, pool, "SELECT count(*) FROM tasuki_job WHERE queue = 'a' AND status = 'running'"))
	assert.Equal(t, 3, ktCount(t, pool, "SELECT count(*) FROM tasuki_job WHERE queue = 'b' AND status = 'running'"))
	close(release)
	eventually(t, "every job to complete", func() bool { return countStatus(t, pool, tasuki.StatusCompleted) == 30 })
	assert.Equal(t, int64(2), gauges["a"].max.Load())
	assert.Equal(t, int64(3), gauges["b"].max.Load())
}

// 4. Per-kind MaxConcurrency: the limited kind runs at most its limit, the
// other kind of the queue flows meanwhile, and a finished limited job
// makes room for the next at once, not at the next poll.
func TestKindsPerKindMaxConcurrency(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	var lim ktGauge
	started := make(chan int64, 100)
	var relMu sync.Mutex
	rel := map[int64]chan struct{}{}
	relOf := func(id int64) chan struct{} {
		relMu.Lock()
		defer relMu.Unlock()
		if rel[id] == nil {
			rel[id] = make(chan struct{})
		}
		return rel[id]
	}
	var freeRan atomic.Int64
	w := ktNew(t, pool, worker.Config{
		Queues:       map[string]worker.QueueConfig{"default": {Concurrency: 10}},
		PollInterval: time.Hour, // only wake-ups and freed slots drive leases
	},
		worker.HandleFunc(func(ctx context.Context, j *tasuki.Job[ktAlpha]) error {
			lim.enter()
			defer lim.leave()
			started <- j.ID
			select {
			case <-relOf(j.ID):
			case <-ctx.Done():
			}
			return nil
		}).With(worker.KindConfig{MaxConcurrency: 2}),
		worker.HandleFunc(func(_ context.Context, j *tasuki.Job[ktBeta]) error { freeRan.Add(1); return nil }),
	)
	ca := ktClient[ktAlpha](t, pool, "default")
	cb := ktClient[ktBeta](t, pool, "default")
	const nLimited = 12
	for i := range nLimited {
		insert(t, ca, ktAlpha{N: i, A: "a"}, nil)
	}
	running(t, w)
	first := []int64{receive(t, started, "a limited job to start"), receive(t, started, "a second limited job to start")}
	assert.Equal(t, 2, ktCount(t, pool, "SELECT count(*) FROM tasuki_job WHERE kind = 'kt_alpha' AND status = 'running'"))

	// The other kind flows while the limited one is saturated.
	for i := range 20 {
		insert(t, cb, ktBeta{M: i, B: "b"}, nil)
	}
	eventually(t, "the unlimited kind's jobs to complete", func() bool { return countStatus(t, pool, tasuki.StatusCompleted) == 20 })
	assert.Equal(t, int64(20), freeRan.Load())
	assert.Equal(t, nLimited-2, ktCount(t, pool, "SELECT count(*) FROM tasuki_job WHERE kind = 'kt_alpha' AND status = 'pending' AND attempts = 0"))

	// Release the limited jobs one at a time: each next one must start
	// because a slot of its kind freed. The only other thing that leases
	// with PollInterval an hour is the rescue round, every 5 s, which
	// renews the process record in the same statement: a start that came
	// from it shows a new expires_at. Count the starts that came without.
	ktBeatReady(t, pool)
	runningIDs := first
	withoutRound := 0
	for range nLimited - 2 {
		before := ktBeat(t, pool)
		close(relOf(runningIDs[0]))
		runningIDs = runningIDs[1:]
		next := receive(t, started, "the next limited job to start")
		if ktBeat(t, pool).Equal(before) {
			withoutRound++
		}
		runningIDs = append(runningIDs, next)
	}
	for _, id := range runningIDs {
		close(relOf(id))
	}
	eventually(t, "every job to complete", func() bool { return countStatus(t, pool, tasuki.StatusCompleted) == 20+nLimited })
	assert.Equal(t, int64(2), lim.max.Load(), "the most limited jobs at once")
	assert.Positive(t, withoutRound, "every next limited job waited for a rescue/poll round: a freed kind slot does not wake the fetch loop")
}

// ktBeatReady waits for the worker's first process record.
func ktBeatReady(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	eventually(t, "the process record", func() bool {
		return ktCount(t, pool, "SELECT count(*) FROM tasuki_process") == 1
	})
}

// 5. An idle worker with many kinds and queues holds at most two
// connections: one of its own pool and the listener.
func TestKindsIdleWorkerHoldsFewConnections(t *testing.T) {
	t.Parallel()
	_, url := testdb.Schema(t)
	admin := testdb.Pool(t, url) // the test's own statements
	testdb.MigrateUp(t, admin)

	appName := fmt.Sprintf("kt-idle-%d", time.Now().UnixNano())
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["application_name"] = appName
	var mu sync.Mutex
	var listenerPIDs []int32
	cfg.ConnConfig.AfterConnect = func(_ context.Context, c *pgconn.PgConn) error {
		if c.ParameterStatus("application_name") == "tasuki-listener" {
			mu.Lock()
			listenerPIDs = append(listenerPIDs, int32(c.PID()))
			mu.Unlock()
		}
		return nil
	}
	app, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(app.Close)

	w := ktNew(t, app, worker.Config{
		Queues: map[string]worker.QueueConfig{
			"q1": {Concurrency: 2}, "q2": {Concurrency: 2}, "q3": {Concurrency: 2}, "q4": {Concurrency: 2},
		},
		PollInterval: 50 * time.Millisecond,
	},
		worker.HandleFunc(func(context.Context, *tasuki.Job[ktAlpha]) error { return nil }),
		worker.HandleFunc(func(context.Context, *tasuki.Job[ktBeta]) error { return nil }),
		worker.HandleFunc(func(context.Context, *tasuki.Job[ktGamma]) error { return nil }),
		worker.HandleFunc(func(context.Context, *tasuki.Job[ktDelta]) error { return nil }),
	)
	running(t, w)
	ktBeatReady(t, admin)
	eventually(t, "the listener", func() bool { mu.Lock(); defer mu.Unlock(); return len(listenerPIDs) > 0 })

	held := func() int {
		mu.Lock()
		pids := append([]int32(nil), listenerPIDs...)
		mu.Unlock()
		return ktCount(t, admin, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND (application_name = $1 OR pid = ANY($2))`, appName, pids)
	}
	// Connections opened by the start (the cleaner's first round beside the
	// first lease) close after the pool's idle timeout, within 45 s (15 s
	// idle, checked every 30 s); from then on the idle worker keeps its
	// count. The second may open some time after the start, so the count
	// is watched once those 45 s have passed, not as soon as it is 2. The
	// bound only keeps a broken test from hanging.
	settled := time.Now().Add(45 * time.Second)
	for deadline := time.Now().Add(3 * time.Minute); held() > 2 || time.Now().Before(settled); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the idle worker still holds %d connections", held())
		}
	}
	most := 0
	for range 40 { // idle for about 40 poll intervals, sampled throughout
		time.Sleep(25 * time.Millisecond)
		most = max(most, held())
	}
	if !assert.LessOrEqual(t, most, 2, "connections an idle worker holds (own pool + listener)") {
		mu.Lock()
		pids := append([]int32(nil), listenerPIDs...)
		mu.Unlock()
		rows, err := admin.Query(context.Background(), `SELECT pid, application_name, coalesce(state, ''), left(query, 80),
				(now() - backend_start)::text, (now() - state_change)::text
			FROM pg_stat_activity WHERE datname = current_database() AND (application_name = $1 OR pid = ANY($2))`, appName, pids)
		require.NoError(t, err)
		for rows.Next() {
			var pid int32
			var app, state, query, age, idle string
			require.NoError(t, rows.Scan(&pid, &app, &state, &query, &age, &idle))
			t.Logf("pid %d app %s state %s age %s idle %s query %q", pid, app, state, age, idle, query)
		}
		require.NoError(t, rows.Err())
	}
	// Sanity: the count sees the worker at all.
	assert.Positive(t, most)
}

// 6. Two handlers for one kind are refused, also when KindConfig.Kind
// makes them collide.
func TestKindsRegisteredTwiceIsRefused(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	h := func(context.Context, *tasuki.Job[ktAlpha]) error { return nil }
	var invalid *tasuki.InvalidOptionError

	_, err := worker.New(pool, worker.Config{}, worker.HandleFunc(h), worker.HandleFunc(h))
	require.ErrorAs(t, err, &invalid)

	_, err = worker.New(pool, worker.Config{}, worker.HandleFunc(h),
		worker.HandleFunc(func(context.Context, *tasuki.Job[ktBeta]) error { return nil }).With(worker.KindConfig{Kind: "kt_alpha"}))
	require.ErrorAs(t, err, &invalid)

	// A negative limit, and a handler without a kind.
	_, err = worker.New(pool, worker.Config{}, worker.HandleFunc(h).With(worker.KindConfig{MaxConcurrency: -1}))
	require.ErrorAs(t, err, &invalid)
	_, err = worker.New(pool, worker.Config{}, worker.HandleFunc(func(context.Context, *tasuki.Job[struct{ X int }]) error { return nil }))
	require.Error(t, err)
	// Zero registrations and a nil handler.
	_, err = worker.New(pool, worker.Config{})
	require.ErrorAs(t, err, &invalid)
	_, err = worker.New(pool, worker.Config{}, worker.Registration{})
	require.ErrorAs(t, err, &invalid)
}

// ktNotify sends an insert wake-up as a client would, for this schema.
func ktNotify(t *testing.T, pool *pgxpool.Pool, queue, heads string) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `SELECT pg_notify('tasuki_jobs', json_build_object(
		'k', 'insert', 's', current_schema(), 'q', $1::text, 'r', $2::json)::text)`, queue, heads)
	require.NoError(t, err)
}

// ktRawInsert inserts a job by SQL, announced to nobody.
func ktRawInsert(t *testing.T, pool *pgxpool.Pool, queue, kind, payload string) int64 {
	t.Helper()
	var id int64
	require.NoError(t, pool.QueryRow(context.Background(),
		`INSERT INTO tasuki_job (queue, kind, payload) VALUES ($1, $2, $3::jsonb) RETURNING id`, queue, kind, payload).Scan(&id))
	return id
}

// 6. A wake-up naming a kind the worker does not handle leaves its
// sources alone (the job waits for a poll round), one naming the job's
// kind makes its source due at once; malformed kinds still wake it.
func TestKindsWakeUpsNameKinds(t *testing.T) {
	t.Parallel()
	pool, tap := newTappedPool(t)
	started := make(chan int64, 10)
	w := ktNew(t, pool, worker.Config{PollInterval: time.Hour},
		worker.HandleFunc(func(_ context.Context, j *tasuki.Job[ktAlpha]) error { started <- j.ID; return nil }))
	running(t, w)
	ktBeatReady(t, pool)
	// Wait for the listener to LISTEN: a wake-up sent before would be lost.
	tap.listening(t, pool, 1)

	ca := ktClient[ktAlpha](t, pool, "default")
	id0 := insert(t, ca, ktAlpha{N: 0, A: "a"}, nil)
	require.Equal(t, id0, receive(t, started, "a client's job"))

	// Named kind: started without a rescue round, in at least one of a few
	// tries (a round may fall in between by chance).
	withoutRound := 0
	for i := range 3 {
		before := ktBeat(t, pool)
		id := ktRawInsert(t, pool, "default", "kt_alpha", `{"alpha":"a"}`)
		ktNotify(t, pool, "default", fmt.Sprintf(`[[0, %d, "kt_alpha"]]`, time.Now().Add(-time.Minute).UnixMicro()))
		require.Equal(t, id, receive(t, started, fmt.Sprintf("raw job %d", i)))
		if ktBeat(t, pool).Equal(before) {
			withoutRound++
		}
	}
	assert.Positive(t, withoutRound, "a wake-up naming the worker's kind did not make its source due")

	// Unknown kind only: ignored (TestSeekIgnoresWakeUpsOfOtherKinds checks
	// that no source is made due); the job waits for the next poll round.
	id := ktRawInsert(t, pool, "default", "kt_alpha", `{"alpha":"a"}`)
	ktNotify(t, pool, "default", fmt.Sprintf(`[[0, %d, "kt_nobody"]]`, time.Now().Add(-time.Minute).UnixMicro()))
	require.Equal(t, id, receive(t, started, "the raw job after a wake-up of another kind"))

	// Malformed kinds (a number, too many fields): the wake-up still wakes,
	// reading from the heads.
	for i, heads := range []string{`[[0, 1, 5]]`, `[[0, 1, "kt_alpha", 4]]`, `{"x":1}`} {
		id := ktRawInsert(t, pool, "default", "kt_alpha", `{"alpha":"a"}`)
		ktNotify(t, pool, "default", heads)
		require.Equal(t, id, receive(t, started, fmt.Sprintf("raw job after malformed wake-up %d", i)))
	}
}

// 6. A paused queue's kinds lease nothing; the other queue goes on; the
// paused one resumes.
func TestKindsPausedQueueAmongOthers(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	admin, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	var ran sync.Map
	w := ktNew(t, pool, worker.Config{
		Queues:       map[string]worker.QueueConfig{"pa": {}, "go": {}},
		PollInterval: 20 * time.Millisecond,
	},
		worker.HandleFunc(func(_ context.Context, j *tasuki.Job[ktAlpha]) error { ran.Store(j.ID, j.Queue); return nil }),
		worker.HandleFunc(func(_ context.Context, j *tasuki.Job[ktBeta]) error { ran.Store(j.ID, j.Queue); return nil }),
	)
	ca := ktClient[ktAlpha](t, pool, "pa")
	cb := ktClient[ktBeta](t, pool, "pa")
	// The queue must exist to pause it: a job makes it.
	insert(t, ca, ktAlpha{A: "a"}, &tasuki.InsertOpts{Queue: "pa", Delay: time.Hour})
	paused, err := admin.PauseQueue(context.Background(), "pa")
	require.NoError(t, err)
	require.True(t, paused)
	running(t, w)
	for i := range 5 {
		insert(t, ca, ktAlpha{N: i, A: "a"}, &tasuki.InsertOpts{Queue: "pa"})
		insert(t, cb, ktBeta{M: i, B: "b"}, &tasuki.InsertOpts{Queue: "pa"})
		insert(t, ca, ktAlpha{N: i, A: "a"}, &tasuki.InsertOpts{Queue: "go"})
		insert(t, cb, ktBeta{M: i, B: "b"}, &tasuki.InsertOpts{Queue: "go"})
	}
	eventually(t, "the unpaused queue's jobs", func() bool {
		return ktCount(t, pool, "SELECT count(*) FROM tasuki_job WHERE queue = 'go' AND status = 'completed'") == 10
	})
	// Several polls later, still nothing of the paused queue.
	beat := ktBeat(t, pool)
	eventually(t, "a rescue round", func() bool { return ktBeat(t, pool).After(beat) })
	assert.Equal(t, 11, ktCount(t, pool, "SELECT count(*) FROM tasuki_job WHERE queue = 'pa' AND status = 'pending' AND attempts = 0"))
	ran.Range(func(_, q any) bool { assert.Equal(t, "go", q); return true })

	_, err = admin.ResumeQueue(context.Background(), "pa")
	require.NoError(t, err)
	eventually(t, "the resumed queue's jobs", func() bool {
		return ktCount(t, pool, "SELECT count(*) FROM tasuki_job WHERE queue = 'pa' AND status = 'completed'") == 10
	})
}

// 6. A job whose kind changes by SQL while pending is leased by its new
// kind's handler, or by nobody when no handler has the new kind.
func TestKindsKindChangedWhilePending(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	var mu sync.Mutex
	got := map[int64]string{}
	w := ktNew(t, pool, worker.Config{PollInterval: 20 * time.Millisecond},
		worker.HandleFunc(func(_ context.Context, j *tasuki.Job[ktBeta]) error {
			mu.Lock()
			got[j.ID] = j.Kind
			mu.Unlock()
			return nil
		}))
	ca := ktClient[ktAlpha](t, pool, "default")
	toBeta := insert(t, ca, ktAlpha{N: 1, A: "a"}, &tasuki.InsertOpts{Delay: time.Hour})
	toGamma := insert(t, ca, ktAlpha{N: 2, A: "a"}, &tasuki.InsertOpts{Delay: time.Hour})
	running(t, w)
	ktBeatReady(t, pool)
	exec(t, pool, "UPDATE tasuki_job SET kind = 'kt_beta', scheduled_at = now() WHERE id = $1", toBeta)
	exec(t, pool, "UPDATE tasuki_job SET kind = 'kt_gamma', scheduled_at = now() WHERE id = $1", toGamma)
	eventually(t, "the job moved to the handled kind", func() bool { return jobStatus(t, ca, toBeta) == tasuki.StatusCompleted })
	// A poll round later, the other is untouched.
	beat := ktBeat(t, pool)
	eventually(t, "a rescue round", func() bool { return ktBeat(t, pool).After(beat) })
	g := rawJob(t, pool, toGamma)
	assert.Equal(t, "pending", string(g.Status))
	assert.Equal(t, int32(0), g.Attempts)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, map[int64]string{toBeta: "kt_beta"}, got)
}

// 6. A handler that panics for one kind does not affect the other kind.
func TestKindsPanicInOneKindSparesTheOther(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	var betaRan atomic.Int64
	w := ktNew(t, pool, worker.Config{Concurrency: 3, PollInterval: 20 * time.Millisecond},
		worker.HandleFunc(func(context.Context, *tasuki.Job[ktAlpha]) error { panic("alpha explodes") }),
		worker.HandleFunc(func(context.Context, *tasuki.Job[ktBeta]) error { betaRan.Add(1); return nil }),
	)
	ca := ktClient[ktAlpha](t, pool, "default")
	cb := ktClient[ktBeta](t, pool, "default")
	running(t, w)
	for i := range 15 {
		insert(t, ca, ktAlpha{N: i, A: "a"}, &tasuki.InsertOpts{MaxAttempts: 1})
		insert(t, cb, ktBeta{M: i, B: "b"}, nil)
	}
	eventually(t, "every job to finish", func() bool {
		return ktCount(t, pool, "SELECT count(*) FROM tasuki_job WHERE status IN ('completed', 'failed')") == 30
	})
	assert.Equal(t, int64(15), betaRan.Load())
	assert.Equal(t, 15, ktCount(t, pool, "SELECT count(*) FROM tasuki_job WHERE kind = 'kt_beta' AND status = 'completed' AND attempts = 1"))
	assert.Equal(t, 15, ktCount(t, pool, "SELECT count(*) FROM tasuki_job WHERE kind = 'kt_alpha' AND status = 'failed' AND errors::text LIKE '%alpha explodes%'"))
}

// 6. Shutdown with jobs of several kinds in several queues running: every
// one goes back to pending with its attempt given back, and a new worker
// runs them all.
func TestKindsShutdownWithSeveralKindsRunning(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	var started atomic.Int64
	block := func(ctx context.Context) error {
		started.Add(1)
		<-ctx.Done()
		return ctx.Err()
	}
	cfg := worker.Config{
		Queues:          map[string]worker.QueueConfig{"a": {Concurrency: 3}, "b": {Concurrency: 3}},
		ShutdownTimeout: -1,
		PollInterval:    20 * time.Millisecond,
	}
	w := ktNew(t, pool, cfg,
		worker.HandleFunc(func(ctx context.Context, _ *tasuki.Job[ktAlpha]) error { return block(ctx) }),
		worker.HandleFunc(func(ctx context.Context, _ *tasuki.Job[ktBeta]) error { return block(ctx) }).With(worker.KindConfig{MaxConcurrency: 2}),
	)
	ca := ktClient[ktAlpha](t, pool, "a")
	cb := ktClient[ktBeta](t, pool, "a")
	for _, q := range []string{"a", "b"} {
		for i := range 4 {
			insert(t, ca, ktAlpha{N: i, A: "a"}, &tasuki.InsertOpts{Queue: q})
			insert(t, cb, ktBeta{M: i, B: "b"}, &tasuki.InsertOpts{Queue: q})
		}
	}
	stop := running(t, w)
	// a and b: 3 slots each, enough alpha jobs to fill them; beta at most
	// 2 in all.
	eventually(t, "6 handlers running", func() bool { return started.Load() == 6 })
	assert.Equal(t, 6, countStatus(t, pool, tasuki.StatusRunning))
	assert.LessOrEqual(t, ktCount(t, pool, "SELECT count(*) FROM tasuki_job WHERE kind = 'kt_beta' AND status = 'running'"), 2)
	stop()
	assert.Equal(t, 16, countStatus(t, pool, tasuki.StatusPending))
	assert.Equal(t, 0, ktCount(t, pool, "SELECT count(*) FROM tasuki_job WHERE attempts <> 0"))

	var done atomic.Int64
	w2 := ktNew(t, pool, worker.Config{Queues: cfg.Queues, PollInterval: 20 * time.Millisecond},
		worker.HandleFunc(func(context.Context, *tasuki.Job[ktAlpha]) error { done.Add(1); return nil }),
		worker.HandleFunc(func(context.Context, *tasuki.Job[ktBeta]) error { done.Add(1); return nil }),
	)
	running(t, w2)
	eventually(t, "every job to complete", func() bool { return countStatus(t, pool, tasuki.StatusCompleted) == 16 })
	assert.Equal(t, int64(16), done.Load())
}

// 6. A kind's limit is process-wide: the same kind in two queues runs at
// most its limit in all.
func TestKindsLimitSpansQueues(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	var g ktGauge
	perQueue := map[string]*ktGauge{"a": {}, "b": {}}
	release := make(chan struct{})
	w := ktNew(t, pool, worker.Config{
		Queues:       map[string]worker.QueueConfig{"a": {Concurrency: 5}, "b": {Concurrency: 5}},
		PollInterval: 20 * time.Millisecond,
	}, worker.HandleFunc(func(ctx context.Context, j *tasuki.Job[ktAlpha]) error {
		g.enter()
		perQueue[j.Queue].enter()
		defer g.leave()
		defer perQueue[j.Queue].leave()
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}).With(worker.KindConfig{MaxConcurrency: 3}))
	c := ktClient[ktAlpha](t, pool, "a")
	for i := range 10 {
		insert(t, c, ktAlpha{N: i, A: "a"}, &tasuki.InsertOpts{Queue: "a"})
		insert(t, c, ktAlpha{N: i, A: "a"}, &tasuki.InsertOpts{Queue: "b"})
	}
	running(t, w)
	eventually(t, "the kind at its limit", func() bool { return g.cur.Load() == 3 })
	// More wake-ups in both queues while at the limit.
	for i := range 5 {
		insert(t, c, ktAlpha{N: 100 + i, A: "a"}, &tasuki.InsertOpts{Queue: "a"})
		insert(t, c, ktAlpha{N: 100 + i, A: "a"}, &tasuki.InsertOpts{Queue: "b"})
	}
	beat := ktBeat(t, pool)
	eventually(t, "a rescue round", func() bool { return ktBeat(t, pool).After(beat) })
	assert.Equal(t, 3, countStatus(t, pool, tasuki.StatusRunning))
	close(release)
	eventually(t, "every job to complete", func() bool { return countStatus(t, pool, tasuki.StatusCompleted) == 30 })
	assert.Equal(t, int64(3), g.max.Load())
	assert.LessOrEqual(t, perQueue["a"].max.Load()+perQueue["b"].max.Load(), int64(6))
}

// 6. An expired job of a kind the process does not handle, in one of its
// queues, is rescued (back to pending) and not leased by it.
func TestKindsRescueOfUnhandledKind(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	cb := ktClient[ktBeta](t, pool, "default")
	id := insert(t, cb, ktBeta{M: 1, B: "b"}, nil)
	// A dead worker of kt_beta leased it with a lease that lapses at once.
	rows, err := leaseDirectKind(pool, "default", "kt_beta", time.Microsecond)
	require.NoError(t, err)
	require.Len(t, rows, 1)

	var ran atomic.Int64
	w := ktNew(t, pool, worker.Config{PollInterval: 20 * time.Millisecond},
		worker.HandleFunc(func(context.Context, *tasuki.Job[ktAlpha]) error { ran.Add(1); return nil }))
	running(t, w)
	eventually(t, "the expired job to be rescued", func() bool { return jobStatus(t, cb, id) == tasuki.StatusPending })
	// Later lease rounds do not take it.
	ca := ktClient[ktAlpha](t, pool, "default")
	for i := range 5 {
		insert(t, ca, ktAlpha{N: i, A: "a"}, nil)
	}
	eventually(t, "the alpha jobs", func() bool { return ran.Load() == 5 })
	j := rawJob(t, pool, id)
	assert.Equal(t, "pending", string(j.Status))
	assert.Equal(t, int32(1), j.Attempts, "the lost attempt counts; no new one")
	assert.Contains(t, string(j.Errors), "lease expired")
}

// 6. Per-kind limits larger than the queue's concurrency, and a kind in
// several queues with one queue full: the other queue's jobs of the kind
// still flow.
func TestKindsFullQueueDoesNotStopTheKindElsewhere(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	release := make(chan struct{})
	var bDone atomic.Int64
	w := ktNew(t, pool, worker.Config{
		Queues:       map[string]worker.QueueConfig{"a": {Concurrency: 1}, "b": {Concurrency: 2}},
		PollInterval: time.Hour,
	}, worker.HandleFunc(func(ctx context.Context, j *tasuki.Job[ktAlpha]) error {
		if j.Queue == "a" {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}
		bDone.Add(1)
		return nil
	}).With(worker.KindConfig{MaxConcurrency: 50}))
	c := ktClient[ktAlpha](t, pool, "a")
	for i := range 3 {
		insert(t, c, ktAlpha{N: i, A: "a"}, &tasuki.InsertOpts{Queue: "a"})
	}
	running(t, w)
	eventually(t, "queue a full", func() bool { return countStatus(t, pool, tasuki.StatusRunning) == 1 })
	for i := range 20 {
		insert(t, c, ktAlpha{N: i, A: "a"}, &tasuki.InsertOpts{Queue: "b"})
	}
	eventually(t, "queue b's jobs", func() bool { return bDone.Load() == 20 })
	assert.Equal(t, 2, ktCount(t, pool, "SELECT count(*) FROM tasuki_job WHERE queue = 'a' AND status = 'pending' AND attempts = 0"))
	close(release)
	eventually(t, "queue a's jobs, one after another, without polls", func() bool {
		return countStatus(t, pool, tasuki.StatusCompleted) == 23
	})
}

// leaseDirectKind leases one job of (queue, kind) as a worker that then
// dies would.
func leaseDirectKind(pool *pgxpool.Pool, queue, kind string, lease time.Duration) ([]*db.TasukiJob, error) {
	return db.New(pool).JobLease(context.Background(), testdb.Lease(db.JobLeaseParams{
		LeaseUs: lease.Microseconds(),
	}, queue, kind, 1))
}

// 6. A kind's limit used up by a row that the queue's limit then cuts:
// TestLimitCutBySomeoneElsesLimitIsReadAgain (limits_test.go) drives the
// leases by hand, which a whole worker cannot do without timing.
