package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// slowTracer makes every statement of the pool it is set on take at least
// delay, and records the most statements it saw in flight at once on
// connections other than the listener's.
type slowTracer struct {
	delay time.Duration

	mu       sync.Mutex
	inFlight int
	most     int
	total    int
}

type slowTracerKey struct{}

func (s *slowTracer) TraceQueryStart(ctx context.Context, c *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	if c.PgConn().ParameterStatus("application_name") == "tasuki-listener" {
		return ctx
	}
	s.mu.Lock()
	s.inFlight++
	s.total++
	s.most = max(s.most, s.inFlight)
	s.mu.Unlock()
	time.Sleep(s.delay)
	return context.WithValue(ctx, slowTracerKey{}, true)
}

func (s *slowTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if ctx.Value(slowTracerKey{}) == nil {
		return
	}
	s.mu.Lock()
	s.inFlight--
	s.mu.Unlock()
}

func (s *slowTracer) read() (most, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.most, s.total
}

func (s *slowTracer) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.most, s.total = s.inFlight, 0
}

// An idle worker runs one statement at a time, also when its statements
// are slow enough that the rescue of expired leases leaves the polls for
// the sweeper and the cleaner rounds come often: the sweeper's and the
// cleaner's statements wait for the poll's instead of opening a second
// connection beside it. Counted in flight, not timed: every statement is
// made slow so that overlaps, if the worker allows them, are all but
// certain.
func TestIdleWorkerRunsOneStatementAtATime(t *testing.T) {
	t.Parallel()
	_, url := testdb.Schema(t)
	admin := testdb.Pool(t, url)
	testdb.MigrateUp(t, admin)

	tracer := &slowTracer{delay: 60 * time.Millisecond} // above the inline rescue's budget
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.ConnConfig.Tracer = batchAsQuery{tracer}
	app, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(app.Close)

	w := ktNew(t, app, worker.Config{
		Queues:        map[string]worker.QueueConfig{"q1": {Concurrency: 2}, "q2": {Concurrency: 2}},
		PollInterval:  20 * time.Millisecond,
		LeaseDuration: 2 * time.Second, // a rescue every second
		CleanInterval: 100 * time.Millisecond,
	},
		worker.HandleFunc(func(context.Context, *tasuki.Job[ktAlpha]) error { return nil }),
		worker.HandleFunc(func(context.Context, *tasuki.Job[ktBeta]) error { return nil }),
	)
	stop := running(t, w)
	ktBeatReady(t, admin)
	tracer.reset()
	// Long enough for several rescues and many cleaner rounds beside the
	// polls; the count, not the time, is what is checked.
	eventuallyWithin(t, 2*time.Minute, "statements of the idle worker", func() bool {
		_, total := tracer.read()
		return total >= 150
	})
	most, total := tracer.read()
	stop()
	assert.Equal(t, 1, most, "statements in flight at once in %d statements of an idle worker", total)
}
