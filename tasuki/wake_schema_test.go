package tasuki_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// A multi-tenant program keeps one Client and picks the tenant's schema
// inside each transaction (SET LOCAL search_path). InsertTx inserts the job
// into the tenant's tasuki_job, and the wake-up, sent by the client on its
// own pool, names the tenant's schema, not the pool's.
func TestInsertTxWakesTheSchemaOfTheTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clientPool := testdb.New(t)
	tenantPool := testdb.New(t)
	var tenant string
	require.NoError(t, tenantPool.QueryRow(ctx, "SELECT current_schema()").Scan(&tenant))
	next := listen(t, tenantPool)

	c := newClient(t, clientPool, tasuki.ClientConfig{Queue: "tenant-queue"})
	var id int64
	err := pgx.BeginFunc(ctx, clientPool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", tenant); err != nil {
			return err
		}
		job, err := c.InsertTx(ctx, tx, email{To: "tenant"}, nil)
		if err != nil {
			return err
		}
		id = job.ID
		return nil
	})
	require.NoError(t, err)
	var inTenant int
	require.NoError(t, tenantPool.QueryRow(ctx, "SELECT count(*) FROM tasuki_job WHERE id = $1", id).Scan(&inTenant))
	require.Equal(t, 1, inTenant, "the job went to the tenant's schema")

	require.NoError(t, c.Flush(ctx))
	notifyMarker(t, tenantPool)
	assert.Equal(t, "tenant-queue", nextNote(t, next)["q"],
		"the tenant's workers were not woken for the job inserted in their schema")
}

// Flush waits for the wake-ups of the jobs inserted before it was called,
// not until the client has nothing at all to do: while other goroutines
// keep inserting in transactions that overlap, it still returns.
func TestFlushWaitsOnlyForWhatCameBefore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	next := listen(t, pool)
	c := newClient(t, pool, tasuki.ClientConfig{})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(p) * 10 * time.Millisecond) // staggered
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					if _, err := c.InsertTx(ctx, tx, email{To: fmt.Sprint(p)}, &tasuki.InsertOpts{Queue: "background"}); err != nil {
						return err
					}
					time.Sleep(40 * time.Millisecond) // transactions overlap
					return nil
				})
			}
		}()
	}
	t.Cleanup(func() { close(stop); wg.Wait() })

	_, err := c.Insert(ctx, email{To: "mine"}, &tasuki.InsertOpts{Queue: "mine"})
	require.NoError(t, err)
	for nextNote(t, next)["q"] != "mine" {
	}
	// Mine went out; the background transactions open at this call end
	// within 40 ms each. Later ones are not "so far".
	flushCtx, cancel := context.WithTimeout(ctx, 15*time.Second) // bounds a broken test
	defer cancel()
	assert.NoError(t, c.Flush(flushCtx), "Flush waited for transactions that began after it was called")
}

// A transaction in another database than the client's pool (the client's
// notifications could not reach that database's workers) wakes them by a
// NOTIFY inside the transaction itself.
func TestInsertTxInAnotherDatabaseWakesItsWorkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, testdb.URL())
	require.NoError(t, err)
	defer admin.Close(ctx)
	name := fmt.Sprintf("tasuki_otherdb_%d", time.Now().UnixNano())
	_, err = admin.Exec(ctx, "CREATE DATABASE "+name)
	require.NoError(t, err)
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), testdb.URL())
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)")
			c.Close(context.Background())
		}
	})
	cfg, err := pgx.ParseConfig(testdb.URL())
	require.NoError(t, err)
	cfg.Database = name
	otherPool := testdb.Pool(t, cfg.ConnString())
	require.NoError(t, tasuki.Migrate(ctx, otherPool))
	next := listen(t, otherPool)

	c := newClient(t, testdb.New(t), tasuki.ClientConfig{Queue: "elsewhere"})
	err = pgx.BeginFunc(ctx, otherPool, func(tx pgx.Tx) error {
		_, err := c.InsertTx(ctx, tx, email{To: "other database"}, nil)
		return err
	})
	require.NoError(t, err)
	require.NoError(t, c.Flush(ctx))
	notifyMarker(t, otherPool)
	assert.Equal(t, "elsewhere", nextNote(t, next)["q"], "the other database's workers were woken")
	assert.Equal(t, "marker", nextNote(t, next)["q"])
}
