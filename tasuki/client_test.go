package tasuki_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

type email struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
}

func (email) Kind() string { return "email" }

func newClient(t *testing.T, pool *pgxpool.Pool, cfg tasuki.ClientConfig) *tasuki.Client[email] {
	t.Helper()
	c, err := tasuki.NewClient[email](pool, cfg)
	require.NoError(t, err)
	return c
}

// listen subscribes a connection on the test's schema to tasuki's channel
// and returns a function that waits for the next notification from that
// schema.
func listen(t *testing.T, pool *pgxpool.Pool) func(ctx context.Context) (map[string]any, error) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	require.NoError(t, db.New(conn).ListenJobs(ctx))
	var schema string
	require.NoError(t, conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema))
	return func(ctx context.Context) (map[string]any, error) {
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				return nil, err
			}
			var payload map[string]any
			if err := json.Unmarshal([]byte(n.Payload), &payload); err != nil {
				return nil, err
			}
			if payload["s"] == schema {
				return payload, nil
			}
		}
	}
}

func TestInsert(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	c := newClient(t, pool, tasuki.ClientConfig{})
	next := listen(t, pool)

	job, err := c.Insert(ctx, email{To: "a@example.com", Subject: "hi"}, nil)
	require.NoError(t, err)
	assert.Positive(t, job.ID)
	assert.Equal(t, "default", job.Queue)
	assert.Equal(t, tasuki.StatusPending, job.Status)
	assert.Equal(t, 0, job.Priority)
	assert.Equal(t, 25, job.MaxAttempts)
	assert.Equal(t, 0, job.Attempt)
	assert.Equal(t, email{To: "a@example.com", Subject: "hi"}, job.Payload)
	assert.Empty(t, job.Errors)
	assert.Nil(t, job.FinishedAt)

	got, err := c.Get(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, job.Payload, got.Payload)
	assert.Equal(t, tasuki.StatusPending, got.Status)

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := next(wctx)
	require.NoError(t, err, "an insert sends a NOTIFY")
	assert.Equal(t, "insert", n["k"])
	assert.Equal(t, "default", n["q"])
}

func TestInsertOptions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	c := newClient(t, pool, tasuki.ClientConfig{Queue: "mail", MaxAttempts: 3})

	job, err := c.Insert(ctx, email{To: "x"}, nil)
	require.NoError(t, err)
	assert.Equal(t, "mail", job.Queue)
	assert.Equal(t, 3, job.MaxAttempts)

	runAt := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	job, err = c.Insert(ctx, email{To: "y"}, &tasuki.InsertOpts{Queue: "other", Priority: 7, MaxAttempts: 9, RunAt: runAt})
	require.NoError(t, err)
	assert.Equal(t, "other", job.Queue)
	assert.Equal(t, 7, job.Priority)
	assert.Equal(t, 9, job.MaxAttempts)
	assert.True(t, runAt.Equal(job.ScheduledAt), "scheduled %v, want %v", job.ScheduledAt, runAt)

	job, err = c.Insert(ctx, email{To: "z"}, &tasuki.InsertOpts{Delay: time.Hour})
	require.NoError(t, err)
	assert.WithinDuration(t, job.CreatedAt.Add(time.Hour), job.ScheduledAt, time.Second)
}

func TestInsertTxCommitted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	c := newClient(t, pool, tasuki.ClientConfig{})
	next := listen(t, pool)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	job, err := c.InsertTx(ctx, tx, email{To: "in-tx"}, nil)
	require.NoError(t, err)

	// Not visible outside the transaction before it commits.
	_, err = c.Get(ctx, job.ID)
	require.ErrorIs(t, err, tasuki.ErrJobNotFound)

	require.NoError(t, tx.Commit(ctx))
	got, err := c.Get(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, "in-tx", got.Payload.To)

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = next(wctx)
	require.NoError(t, err, "a committed insert wakes workers")
}

func TestInsertTxRolledBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	c := newClient(t, pool, tasuki.ClientConfig{})
	next := listen(t, pool)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	job, err := c.InsertTx(ctx, tx, email{To: "never"}, &tasuki.InsertOpts{Queue: "rolled-back"})
	require.NoError(t, err)
	n, err := c.InsertManyTx(ctx, tx, []email{{To: "never-1"}, {To: "never-2"}}, &tasuki.InsertOpts{Queue: "rolled-back"})
	require.NoError(t, err)
	assert.EqualValues(t, 2, n)
	require.NoError(t, tx.Rollback(ctx))

	_, err = c.Get(ctx, job.ID)
	require.ErrorIs(t, err, tasuki.ErrJobNotFound)
	var count int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM tasuki_job").Scan(&count))
	assert.Zero(t, count)

	// Notifications arrive in commit order, so if the rolled-back inserts
	// had sent one, it would come before this committed insert's. Flush:
	// the client has decided about the rolled-back transaction.
	require.NoError(t, c.Flush(ctx))
	_, err = c.Insert(ctx, email{To: "committed"}, &tasuki.InsertOpts{Queue: "committed"})
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	got, err := next(wctx)
	require.NoError(t, err)
	assert.Equal(t, "committed", got["q"], "a rolled-back insert must not wake workers")
}

func TestInsertMany(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	c := newClient(t, pool, tasuki.ClientConfig{})
	next := listen(t, pool)

	payloads := make([]email, 10_000)
	for i := range payloads {
		payloads[i] = email{To: fmt.Sprintf("user%d@example.com", i)}
	}
	n, err := c.InsertMany(ctx, payloads, &tasuki.InsertOpts{Queue: "bulk", Priority: 2})
	require.NoError(t, err)
	assert.EqualValues(t, 10_000, n)

	var count, distinct int
	require.NoError(t, pool.QueryRow(ctx,
		"SELECT count(*), count(DISTINCT payload->>'to') FROM tasuki_job WHERE queue = 'bulk' AND priority = 2 AND status = 'pending'").
		Scan(&count, &distinct))
	assert.Equal(t, 10_000, count)
	assert.Equal(t, 10_000, distinct)

	// One NOTIFY for the whole batch.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	got, err := next(wctx)
	require.NoError(t, err)
	assert.Equal(t, "bulk", got["q"])
	_, err = c.Insert(ctx, email{}, &tasuki.InsertOpts{Queue: "marker"})
	require.NoError(t, err)
	got, err = next(wctx)
	require.NoError(t, err)
	assert.Equal(t, "marker", got["q"], "the COPY sent exactly one notification")

	n, err = c.InsertMany(ctx, nil, nil)
	require.NoError(t, err)
	assert.Zero(t, n)
}

func TestInsertManyDelayed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	c := newClient(t, pool, tasuki.ClientConfig{})
	_, err := c.InsertMany(ctx, []email{{To: "a"}, {To: "b"}}, &tasuki.InsertOpts{Delay: time.Hour})
	require.NoError(t, err)
	var early int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM tasuki_job WHERE scheduled_at < now() + interval '59 minutes'").Scan(&early))
	assert.Zero(t, early)
}

// A delayed job is not leased before its time: the lease query takes the
// database clock, overridden here to move time forward.
func TestDelayedJobNotRunnableEarly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	c := newClient(t, pool, tasuki.ClientConfig{})
	job, err := c.Insert(ctx, email{To: "later"}, &tasuki.InsertOpts{Delay: time.Hour})
	require.NoError(t, err)

	q := db.New(pool)
	lease := func(now time.Time) []*db.TasukiJob {
		rows, err := q.JobLease(ctx, testdb.Lease(db.JobLeaseParams{LeaseUs: time.Minute.Microseconds(), Now: &now}, "default", "email", 10))
		require.NoError(t, err)
		return rows
	}
	assert.Empty(t, lease(job.CreatedAt), "not runnable at insert time")
	assert.Empty(t, lease(job.CreatedAt.Add(59*time.Minute)), "not runnable a minute early")
	rows := lease(job.CreatedAt.Add(61 * time.Minute))
	require.Len(t, rows, 1)
	assert.Equal(t, job.ID, rows[0].ID)
	assert.Equal(t, db.TasukiJobStatusRunning, rows[0].Status)
	assert.EqualValues(t, 1, rows[0].Attempts)
}

func TestLeaseOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	c := newClient(t, pool, tasuki.ClientConfig{})
	low, err := c.Insert(ctx, email{To: "low"}, &tasuki.InsertOpts{Priority: 5})
	require.NoError(t, err)
	first, err := c.Insert(ctx, email{To: "first"}, nil)
	require.NoError(t, err)
	second, err := c.Insert(ctx, email{To: "second"}, nil)
	require.NoError(t, err)

	var ids []int64
	for range 3 {
		rows, err := db.New(pool).JobLease(ctx, testdb.Lease(db.JobLeaseParams{LeaseUs: time.Minute.Microseconds()}, "default", "email", 1))
		require.NoError(t, err)
		require.Len(t, rows, 1)
		ids = append(ids, rows[0].ID)
	}
	assert.Equal(t, []int64{first.ID, second.ID, low.ID}, ids)
}

func TestClientConfigValidation(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	cases := map[string]struct {
		pool   *pgxpool.Pool
		cfg    tasuki.ClientConfig
		option string
	}{
		"nil pool":          {nil, tasuki.ClientConfig{}, "pool"},
		"queue too long":    {pool, tasuki.ClientConfig{Queue: strings.Repeat("q", 129)}, "ClientConfig.Queue"},
		"negative attempts": {pool, tasuki.ClientConfig{MaxAttempts: -1}, "ClientConfig.MaxAttempts"},
		"bad payload limit": {pool, tasuki.ClientConfig{MaxPayloadBytes: -2}, "ClientConfig.MaxPayloadBytes"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := tasuki.NewClient[email](tc.pool, tc.cfg)
			var oe *tasuki.InvalidOptionError
			require.ErrorAs(t, err, &oe)
			assert.Equal(t, tc.option, oe.Option)
			assert.NotEmpty(t, oe.Reason)
		})
	}
	_, err := tasuki.NewClient[email](pool, tasuki.ClientConfig{Queue: strings.Repeat("é", 128)})
	assert.NoError(t, err, "128 characters is allowed, whatever their byte length")
}

func TestInsertOptsValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	c := newClient(t, pool, tasuki.ClientConfig{})
	cases := map[string]struct {
		opts   tasuki.InsertOpts
		option string
	}{
		"queue too long":     {tasuki.InsertOpts{Queue: strings.Repeat("q", 129)}, "InsertOpts.Queue"},
		"negative priority":  {tasuki.InsertOpts{Priority: -1}, "InsertOpts.Priority"},
		"priority too large": {tasuki.InsertOpts{Priority: 40000}, "InsertOpts.Priority"},
		"negative attempts":  {tasuki.InsertOpts{MaxAttempts: -3}, "InsertOpts.MaxAttempts"},
		"negative delay":     {tasuki.InsertOpts{Delay: -time.Second}, "InsertOpts.Delay"},
		"delay and run at":   {tasuki.InsertOpts{Delay: time.Second, RunAt: time.Now()}, "InsertOpts.RunAt"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			for _, insert := range []func() error{
				func() error { _, err := c.Insert(ctx, email{}, &tc.opts); return err },
				func() error { _, err := c.InsertMany(ctx, []email{{}}, &tc.opts); return err },
			} {
				err := insert()
				var oe *tasuki.InvalidOptionError
				require.ErrorAs(t, err, &oe)
				assert.Equal(t, tc.option, oe.Option)
			}
		})
	}
	var count int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM tasuki_job").Scan(&count))
	assert.Zero(t, count, "invalid options write nothing")
}

type failingPayload struct{}

func (failingPayload) Kind() string { return "failing" }

func (failingPayload) MarshalJSON() ([]byte, error) { return nil, errors.New("cannot encode") }

func TestInvalidPayloads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)

	small, err := tasuki.NewClient[map[string]string](pool, tasuki.ClientConfig{Kind: "map", MaxPayloadBytes: 64})
	require.NoError(t, err)
	var pe *tasuki.InvalidPayloadError
	_, err = small.Insert(ctx, map[string]string{"k": strings.Repeat("x", 100)}, nil)
	require.ErrorAs(t, err, &pe)
	assert.Contains(t, err.Error(), "over the limit of 64")

	_, err = small.Insert(ctx, map[string]string{"k": "a\x00b"}, nil)
	require.ErrorAs(t, err, &pe)
	assert.Contains(t, err.Error(), "NUL")

	// A literal backslash followed by u0000 is not a NUL.
	_, err = small.Insert(ctx, map[string]string{"k": `\u0000`}, nil)
	require.NoError(t, err)

	_, err = small.InsertMany(ctx, []map[string]string{{"k": "ok"}, {"k": "\x00"}}, nil)
	require.ErrorAs(t, err, &pe)

	bad, err := tasuki.NewClient[failingPayload](pool, tasuki.ClientConfig{})
	require.NoError(t, err)
	_, err = bad.Insert(ctx, failingPayload{}, nil)
	require.ErrorAs(t, err, &pe)
	assert.Contains(t, err.Error(), "failingPayload")

	var count int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM tasuki_job").Scan(&count))
	assert.Equal(t, 1, count, "only the valid payload was stored")
}

func TestGetUnknownAndUndecodable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	c := newClient(t, pool, tasuki.ClientConfig{})
	_, err := c.Get(ctx, 424242)
	require.ErrorIs(t, err, tasuki.ErrJobNotFound)

	other, err := tasuki.NewClient[string](pool, tasuki.ClientConfig{Kind: "text"})
	require.NoError(t, err)
	job, err := other.Insert(ctx, "just a string", nil)
	require.NoError(t, err)
	_, err = c.Get(ctx, job.ID)
	var de *tasuki.PayloadDecodeError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, job.ID, de.JobID)
	assert.Contains(t, de.Error(), "tasuki_test.email")
}

func TestSchemaMissing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.NewEmpty(t)
	c := newClient(t, pool, tasuki.ClientConfig{})
	_, err := c.Insert(ctx, email{}, nil)
	require.ErrorIs(t, err, tasuki.ErrSchemaMissing)
	assert.Contains(t, err.Error(), "tasuki.Migrate")
	assert.Contains(t, err.Error(), "migrate up")
	_, err = c.InsertMany(ctx, []email{{}}, nil)
	require.ErrorIs(t, err, tasuki.ErrSchemaMissing)
	_, err = c.Get(ctx, 1)
	require.ErrorIs(t, err, tasuki.ErrSchemaMissing)
}
