package faults

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// trackedPool is a pool whose connections report their backend pids, so a
// test can terminate exactly its own connections, not those of parallel
// tests. A worker's listener connects with a copy of the pool's settings,
// hooks included, so its connections are tracked too.
type trackedPool struct {
	*pgxpool.Pool
	mu   sync.Mutex
	pids []backend
}

type backend struct {
	pid      uint32
	listener bool
}

func newTrackedPool(t *testing.T, url string) *trackedPool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = 8
	tp := &trackedPool{}
	cfg.ConnConfig.AfterConnect = func(_ context.Context, c *pgconn.PgConn) error {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		tp.pids = append(tp.pids, backend{pid: c.PID(), listener: c.ParameterStatus("application_name") == "tasuki-listener"})
		return nil
	}
	tp.Pool, err = pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(tp.Close)
	return tp
}

// backends returns the pids of every connection the pool (or its worker's
// listener) opened, listeners last.
func (tp *trackedPool) backends() (pool, listeners []int32) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, b := range tp.pids {
		if b.listener {
			listeners = append(listeners, int32(b.pid))
		} else {
			pool = append(pool, int32(b.pid))
		}
	}
	return pool, listeners
}

// listening returns the pid of the newest listener connection once it has
// run LISTEN, or 0.
func (tp *trackedPool) listening(t *testing.T, admin *pgxpool.Pool) int32 {
	t.Helper()
	_, ls := tp.backends()
	if len(ls) == 0 {
		return 0
	}
	pid := ls[len(ls)-1]
	var ok bool
	require.NoError(t, admin.QueryRow(context.Background(), `
		SELECT EXISTS (SELECT FROM pg_stat_activity
		               WHERE pid = $1 AND state = 'idle' AND query LIKE '%LISTEN tasuki_jobs%')`, pid).Scan(&ok))
	if !ok {
		return 0
	}
	return pid
}

// terminateAll ends every live backend of the pool and its listener, as a
// network failure, a server crash or an administrator would, and returns
// how many it ended.
func (tp *trackedPool) terminateAll(t *testing.T, admin *pgxpool.Pool) int {
	t.Helper()
	pool, listeners := tp.backends()
	var n int
	require.NoError(t, admin.QueryRow(context.Background(),
		`SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid = ANY($1)`,
		append(pool, listeners...)).Scan(&n))
	return n
}
