package tasuki_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// tagging returns middleware that records each call's jobs and tags each
// job's metadata with name, so that a stored job shows every middleware
// it passed, in order.
func tagging(name string, calls *[]string, mu *sync.Mutex) tasuki.InsertMiddleware {
	return func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		mu.Lock()
		*calls = append(*calls, fmt.Sprintf("%s:%d", name, len(jobs)))
		mu.Unlock()
		for _, j := range jobs {
			prev, _ := j.Opts.Metadata["path"].(string)
			j.Opts.Metadata["path"] = prev + "/" + name
		}
		return next(ctx)
	}
}

type storedMeta struct {
	Queue    string
	Priority int
	Metadata map[string]any
}

func storedMetas(t *testing.T, pool *pgxpool.Pool, kind string) []storedMeta {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT queue, priority, metadata FROM tasuki_job WHERE kind = $1 ORDER BY id", kind)
	require.NoError(t, err)
	var out []storedMeta
	for rows.Next() {
		var s storedMeta
		var meta []byte
		require.NoError(t, rows.Scan(&s.Queue, &s.Priority, &meta))
		require.NoError(t, json.Unmarshal(meta, &s.Metadata))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

func TestInsertMiddlewareRunsOnEveryInsertPathInOrder(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	var calls []string
	var mu sync.Mutex
	cfg := tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{tagging("a", &calls, &mu), tagging("b", &calls, &mu)}}
	c, err := tasuki.NewClient[email](pool, cfg)
	require.NoError(t, err)
	ins, err := tasuki.NewInserter(pool, cfg)
	require.NoError(t, err)

	job, err := c.Insert(ctx, email{To: "a"}, &tasuki.InsertOpts{Metadata: map[string]any{"caller": 1}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"caller":1,"path":"/a/b"}`, string(job.Metadata), "the returned job shows what was stored")
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := c.InsertTx(ctx, tx, email{To: "b"}, nil); err != nil {
			return err
		}
		if _, err := c.InsertManyTx(ctx, tx, []email{{To: "c"}, {To: "d"}}, nil); err != nil {
			return err
		}
		_, err := ins.InsertManyTx(ctx, tx, []tasuki.InsertManyParams{{Payload: email{To: "e"}}})
		return err
	}))
	n, err := c.InsertMany(ctx, []email{{To: "f"}, {To: "g"}, {To: "h"}}, nil)
	require.NoError(t, err)
	assert.EqualValues(t, 3, n)
	_, err = ins.InsertMany(ctx, []tasuki.InsertManyParams{{Payload: email{To: "i"}}, {Payload: email{To: "j"}}})
	require.NoError(t, err)

	assert.Equal(t, []string{"a:1", "b:1", "a:1", "b:1", "a:2", "b:2", "a:1", "b:1", "a:3", "b:3", "a:2", "b:2"}, calls)
	stored := storedMetas(t, pool, "email")
	require.Len(t, stored, 10)
	for i, s := range stored {
		assert.Equal(t, "/a/b", s.Metadata["path"], "job %d", i)
	}
}

func TestInsertMiddlewareChangesOptionsAndTheyAreChecked(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	route := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		for _, j := range jobs {
			assert.Equal(t, "email", j.Kind)
			assert.JSONEq(t, `{"to":"x","subject":""}`, string(j.Payload))
			assert.Equal(t, tasuki.DefaultQueue, j.Opts.Queue, "the client's defaults are filled in")
			assert.Equal(t, tasuki.DefaultMaxAttempts, j.Opts.MaxAttempts)
			j.Opts.Queue = "mail"
			j.Opts.Priority = 7
		}
		return next(ctx)
	}
	c, err := tasuki.NewClient[email](pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{route}})
	require.NoError(t, err)
	job, err := c.Insert(ctx, email{To: "x"}, nil)
	require.NoError(t, err)
	assert.Equal(t, "mail", job.Queue)
	assert.Equal(t, 7, job.Priority)
	_, err = c.InsertMany(ctx, []email{{To: "x"}}, nil)
	require.NoError(t, err)
	assert.Equal(t, []storedMeta{{Queue: "mail", Priority: 7, Metadata: map[string]any{}}, {Queue: "mail", Priority: 7, Metadata: map[string]any{}}}, storedMetas(t, pool, "email"))

	bad := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		jobs[0].Opts.Priority = -1
		return next(ctx)
	}
	c, err = tasuki.NewClient[email](pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{bad}})
	require.NoError(t, err)
	var opt *tasuki.InvalidOptionError
	_, err = c.Insert(ctx, email{To: "x"}, nil)
	require.ErrorAs(t, err, &opt)
	assert.Equal(t, "InsertOpts.Priority", opt.Option)
	_, err = c.InsertMany(ctx, []email{{To: "x"}}, nil)
	require.ErrorAs(t, err, &opt)
	assert.Len(t, storedMetas(t, pool, "email"), 2, "nothing more was inserted")
}

func TestInsertMiddlewareDoesNotChangeTheCallersOptions(t *testing.T) {
	pool := testdb.New(t)
	mw := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		for _, j := range jobs {
			j.Opts.Metadata["added"] = true
			j.Opts.Unique.Statuses = append(j.Opts.Unique.Statuses, tasuki.StatusFailed)
		}
		return next(ctx)
	}
	c, err := tasuki.NewClient[email](pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{mw}})
	require.NoError(t, err)
	opts := &tasuki.InsertOpts{Metadata: map[string]any{"mine": 1}, Unique: &tasuki.UniqueOpts{ByArgs: true,
		Statuses: []tasuki.Status{tasuki.StatusPending, tasuki.StatusRunning}}}
	_, err = c.InsertMany(context.Background(), []email{{To: "a"}, {To: "b"}}, opts)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"mine": 1}, opts.Metadata)
	assert.Len(t, opts.Unique.Statuses, 2)
}

func TestInsertMiddlewareThatDoesNotCallNextInsertsNothing(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	refused := errors.New("refused by policy")
	deny := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		return refused
	}
	c, err := tasuki.NewClient[email](pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{deny}})
	require.NoError(t, err)
	_, err = c.Insert(ctx, email{To: "a"}, nil)
	assert.ErrorIs(t, err, refused)
	_, err = c.InsertMany(ctx, []email{{To: "a"}}, nil)
	assert.ErrorIs(t, err, refused)
	assert.Empty(t, storedMetas(t, pool, "email"))
}

func TestInsertMiddlewarePanicBeforeAndAfterNext(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	before := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		panic("before")
	}
	after := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		_ = next(ctx)
		panic("after")
	}
	var pe *tasuki.InsertPanicError
	c, err := tasuki.NewClient[email](pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{before}})
	require.NoError(t, err)
	_, err = c.Insert(ctx, email{To: "a"}, nil)
	require.ErrorAs(t, err, &pe)
	assert.False(t, pe.Inserted)
	assert.Empty(t, storedMetas(t, pool, "email"))

	c, err = tasuki.NewClient[email](pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{after}})
	require.NoError(t, err)
	_, err = c.InsertMany(ctx, []email{{To: "a"}}, nil)
	require.ErrorAs(t, err, &pe)
	assert.True(t, pe.Inserted, "the error says the jobs were inserted, so the caller does not insert them twice")
	assert.Len(t, storedMetas(t, pool, "email"), 1)
	// In the caller's transaction, rolling back undoes them.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = c.InsertTx(ctx, tx, email{To: "b"}, nil)
	require.ErrorAs(t, err, &pe)
	require.NoError(t, tx.Rollback(ctx))
	assert.Len(t, storedMetas(t, pool, "email"), 1)
}

type sms struct {
	To string `json:"to"`
}

func (sms) Kind() string { return "sms" }

func TestInsertMiddlewareForKindsSeesOnlyThose(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	var calls []string
	var mu sync.Mutex
	ins, err := tasuki.NewInserter(pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{
		tasuki.InsertMiddlewareFor(tagging("sms-only", &calls, &mu), "sms"),
	}})
	require.NoError(t, err)
	_, err = ins.InsertMany(ctx, []tasuki.InsertManyParams{{Payload: email{To: "a"}}, {Payload: sms{To: "1"}}, {Payload: sms{To: "2"}}})
	require.NoError(t, err)
	_, err = ins.InsertMany(ctx, []tasuki.InsertManyParams{{Payload: email{To: "b"}}})
	require.NoError(t, err)
	assert.Equal(t, []string{"sms-only:2"}, calls, "skipped for a batch without sms jobs")
	for _, s := range storedMetas(t, pool, "email") {
		assert.Nil(t, s.Metadata["path"])
	}
	for _, s := range storedMetas(t, pool, "sms") {
		assert.Equal(t, "/sms-only", s.Metadata["path"])
	}
}

func TestInsertMiddlewareSeesIDAndDuplicate(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	var seen []tasuki.InsertParams
	record := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		err := next(ctx)
		seen = append(seen, *jobs[0])
		return err
	}
	c, err := tasuki.NewClient[email](pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{record}})
	require.NoError(t, err)
	opts := &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{ByArgs: true}}
	first, err := c.Insert(ctx, email{To: "a"}, opts)
	require.NoError(t, err)
	second, err := c.Insert(ctx, email{To: "a"}, opts)
	require.NoError(t, err)
	assert.True(t, second.Duplicate)
	require.Len(t, seen, 2)
	assert.Equal(t, first.ID, seen[0].ID)
	assert.False(t, seen[0].Duplicate)
	assert.Equal(t, first.ID, seen[1].ID)
	assert.True(t, seen[1].Duplicate)
}

func TestInsertedEventsFromEveryPath(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	events := tasuki.NewEvents()
	sub := events.Subscribe(100, tasuki.EventInserted)
	defer sub.Close()
	c, err := tasuki.NewClient[email](pool, tasuki.ClientConfig{Events: events})
	require.NoError(t, err)
	ins, err := tasuki.NewInserter(pool, tasuki.ClientConfig{Events: events, Queue: "other"})
	require.NoError(t, err)
	unique := &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{ByArgs: true}}

	job, err := c.Insert(ctx, email{To: "a"}, unique)
	require.NoError(t, err)
	_, err = c.Insert(ctx, email{To: "a"}, unique) // a duplicate: no event
	require.NoError(t, err)
	_, err = c.InsertMany(ctx, []email{{To: "b"}, {To: "c"}}, nil)
	require.NoError(t, err)
	_, err = ins.InsertMany(ctx, []tasuki.InsertManyParams{{Payload: sms{To: "1"}, InsertOpts: unique}, {Payload: sms{To: "1"}, InsertOpts: unique}})
	require.NoError(t, err)

	var got []tasuki.Event
	for len(sub.C) > 0 {
		got = append(got, <-sub.C)
	}
	require.Len(t, got, 4)
	assert.Equal(t, job.ID, got[0].JobID)
	assert.Equal(t, "email", got[0].Kind)
	assert.Equal(t, tasuki.DefaultQueue, got[0].Queue)
	assert.Zero(t, got[1].JobID, "COPY reports no ids")
	assert.Equal(t, "email", got[2].Kind)
	assert.Equal(t, "sms", got[3].Kind)
	assert.Equal(t, "other", got[3].Queue)
	assert.NotZero(t, got[3].JobID, "a unique bulk insert reports its ids")
}
