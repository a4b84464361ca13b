package tasuki_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// A delay counts from the insert, by the database clock, even in a
// transaction that has been open for a while: a job inserted with a 2 s
// delay into a transaction that began a second earlier is not due until
// 2 s after the insert statement.
func TestDelayCountsFromTheInsert(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	c := newClient(t, pool, tasuki.ClientConfig{})
	const delay = 2 * time.Second

	for name, insert := range map[string]func(tx pgx.Tx) (time.Time, error){
		"InsertTx": func(tx pgx.Tx) (time.Time, error) {
			job, err := c.InsertTx(ctx, tx, email{To: "a"}, &tasuki.InsertOpts{Delay: delay})
			if err != nil {
				return time.Time{}, err
			}
			return job.ScheduledAt, nil
		},
		"InsertManyTx": func(tx pgx.Tx) (time.Time, error) {
			if _, err := c.InsertManyTx(ctx, tx, []email{{To: "b"}}, &tasuki.InsertOpts{Delay: delay}); err != nil {
				return time.Time{}, err
			}
			var at time.Time
			err := tx.QueryRow(ctx, "SELECT scheduled_at FROM tasuki_job WHERE payload->>'to' = 'b'").Scan(&at)
			return at, err
		},
	} {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		var began time.Time
		require.NoError(t, tx.QueryRow(ctx, "SELECT now()").Scan(&began))
		_, err = tx.Exec(ctx, "SELECT pg_sleep(1)")
		require.NoError(t, err)
		at, err := insert(tx)
		require.NoError(t, err, name)
		require.NoError(t, tx.Commit(ctx))
		// pg_sleep guarantees a second passed between the transaction's
		// start and the insert.
		assert.GreaterOrEqual(t, at.Sub(began), delay+time.Second, "%s: the delay counts from the insert, not from the transaction's start", name)
	}
}

// Every Admin input is validated like the client's, with an
// *InvalidOptionError, before it reaches PostgreSQL.
func TestAdminValidatesEveryInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newAdmin(t, testdb.New(t))
	nul := "bad\x00queue"
	long := strings.Repeat("q", 200)
	farFuture := time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC)
	farPast := time.Date(-5000, 1, 1, 0, 0, 0, 0, time.UTC)
	invalidUTF8 := string([]byte{0xff, 0xfe})

	calls := map[string]func() error{
		"CancelMany NUL queue": func() error { _, err := a.CancelMany(ctx, tasuki.JobFilter{Queue: nul}); return err },
		"CancelMany long queue": func() error {
			_, err := a.CancelMany(ctx, tasuki.JobFilter{Queue: long})
			return err
		},
		"RetryMany NUL queue": func() error { _, err := a.RetryMany(ctx, tasuki.JobFilter{Queue: nul}); return err },
		"RetryMany invalid UTF-8 queue": func() error {
			_, err := a.RetryMany(ctx, tasuki.JobFilter{Queue: invalidUTF8, IDs: []int64{1}})
			return err
		},
		"List NUL queue":           func() error { _, err := a.List(ctx, tasuki.ListParams{Queue: nul}); return err },
		"List CreatedAfter future": func() error { _, err := a.List(ctx, tasuki.ListParams{CreatedAfter: farFuture}); return err },
		"List CreatedBefore past":  func() error { _, err := a.List(ctx, tasuki.ListParams{CreatedBefore: farPast}); return err },
		"Clean FinishedBefore future": func() error {
			_, err := a.Clean(ctx, tasuki.CleanParams{FinishedBefore: farFuture})
			return err
		},
		"Clean FinishedBefore past": func() error {
			_, err := a.Clean(ctx, tasuki.CleanParams{FinishedBefore: farPast})
			return err
		},
		"CleanCount NUL queue": func() error {
			_, err := a.CleanCount(ctx, tasuki.CleanParams{FinishedBefore: time.Now(), Queue: nul})
			return err
		},
		"PauseQueue NUL":  func() error { _, err := a.PauseQueue(ctx, nul); return err },
		"ResumeQueue NUL": func() error { _, err := a.ResumeQueue(ctx, nul); return err },
		"SetRetention NUL": func() error {
			return a.SetRetention(ctx, nul, tasuki.Retention{})
		},
	}
	for name, call := range calls {
		err := call()
		var invalid *tasuki.InvalidOptionError
		assert.ErrorAs(t, err, &invalid, "%s: %v", name, err)
	}
}
