package tasuki_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

func countJobs(t *testing.T, pool *pgxpool.Pool, where string) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM tasuki_job WHERE "+where).Scan(&n))
	return n
}

// 50 goroutines on two pools (as two processes) insert the same unique job
// at once: one row, one job inserted, every other insert returns it as a
// duplicate.
func TestUniqueUnderConcurrency(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	other, err := pgxpool.NewWithConfig(context.Background(), pool.Config())
	require.NoError(t, err)
	t.Cleanup(other.Close)
	clients := []*tasuki.Client[email]{newClient(t, pool, tasuki.ClientConfig{}), newClient(t, other, tasuki.ClientConfig{})}

	opts := &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{ByArgs: true}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ids := map[int64]int{}
	fresh := 0
	start := make(chan struct{})
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			job, err := clients[i%2].Insert(context.Background(), email{To: "a@example.com"}, opts)
			if !assert.NoError(t, err) {
				return
			}
			mu.Lock()
			ids[job.ID]++
			if !job.Duplicate {
				fresh++
			}
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	assert.Len(t, ids, 1, "every insert returns the one job")
	assert.Equal(t, 1, fresh, "one insert inserted it")
	assert.Equal(t, 1, countJobs(t, pool, "kind = 'email'"))
}

// What a unique insert counts decides what is a duplicate.
func TestUniqueCountsWhatItIsAskedTo(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	raw, err := tasuki.NewClient[json.RawMessage](pool, tasuki.ClientConfig{Kind: "raw"})
	require.NoError(t, err)
	insert := func(payload string, u *tasuki.UniqueOpts, queue string) *tasuki.Job[json.RawMessage] {
		t.Helper()
		job, err := raw.Insert(ctx, json.RawMessage(payload), &tasuki.InsertOpts{Unique: u, Queue: queue})
		require.NoError(t, err)
		return job
	}

	first := insert(`{"a": 1, "b": [1, 2]}`, &tasuki.UniqueOpts{ByArgs: true}, "")
	assert.False(t, first.Duplicate)
	same := insert(`{"b":[1,2],"a":1}`, &tasuki.UniqueOpts{ByArgs: true}, "")
	assert.True(t, same.Duplicate, "key order and whitespace do not count")
	assert.Equal(t, first.ID, same.ID)
	assert.JSONEq(t, `{"a": 1, "b": [1, 2]}`, string(same.Payload), "the existing job is returned")
	assert.False(t, insert(`{"a": 2, "b": [1, 2]}`, &tasuki.UniqueOpts{ByArgs: true}, "").Duplicate, "other arguments")
	assert.False(t, insert(`{"a": 1.0, "b": [1, 2]}`, &tasuki.UniqueOpts{ByArgs: true}, "").Duplicate, "numbers count by their text")

	assert.True(t, insert(`{"x": 1}`, &tasuki.UniqueOpts{ByArgs: true}, "elsewhere").ID != 0)
	assert.True(t, insert(`{"x": 1}`, &tasuki.UniqueOpts{ByArgs: true}, "").Duplicate, "the queue does not count unless asked")
	assert.False(t, insert(`{"y": 1}`, &tasuki.UniqueOpts{ByArgs: true, ByQueue: true}, "q1").Duplicate)
	assert.False(t, insert(`{"y": 1}`, &tasuki.UniqueOpts{ByArgs: true, ByQueue: true}, "q2").Duplicate, "by queue")
	assert.True(t, insert(`{"y": 1}`, &tasuki.UniqueOpts{ByArgs: true, ByQueue: true}, "q2").Duplicate)

	assert.False(t, insert(`{"n": 1}`, &tasuki.UniqueOpts{Key: "order-7"}, "").Duplicate)
	assert.True(t, insert(`{"n": 2}`, &tasuki.UniqueOpts{Key: "order-7"}, "").Duplicate, "the caller's key, whatever the payload")
	assert.False(t, insert(`{"n": 1}`, &tasuki.UniqueOpts{Key: "order-8"}, "").Duplicate)
	assert.False(t, insert(`{"n": 1}`, &tasuki.UniqueOpts{Key: "order-7", ByArgs: true}, "").Duplicate, "other parts counted, another key")

	other, err := tasuki.NewClient[json.RawMessage](pool, tasuki.ClientConfig{Kind: "other"})
	require.NoError(t, err)
	job, err := other.Insert(ctx, json.RawMessage(`{"n": 1}`), &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{Key: "order-7"}})
	require.NoError(t, err)
	assert.False(t, job.Duplicate, "the kind always counts")
}

// ByPeriod: jobs scheduled in the same period match, in the next one not.
func TestUniqueByPeriod(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	c := newClient(t, pool, tasuki.ClientConfig{})
	hour := time.Date(2030, 5, 1, 10, 0, 0, 0, time.UTC)
	insert := func(at time.Time) *tasuki.Job[email] {
		t.Helper()
		job, err := c.Insert(context.Background(), email{To: "report"}, &tasuki.InsertOpts{RunAt: at, Unique: &tasuki.UniqueOpts{ByPeriod: time.Hour}})
		require.NoError(t, err)
		return job
	}
	a := insert(hour.Add(time.Minute))
	assert.True(t, insert(hour.Add(59*time.Minute+59*time.Second)).Duplicate, "the same hour")
	b := insert(hour.Add(time.Hour))
	assert.False(t, b.Duplicate, "the next hour begins a new period")
	assert.NotEqual(t, a.ID, b.ID)
	assert.True(t, insert(hour.Add(90*time.Minute).In(time.FixedZone("x", 5*3600))).Duplicate, "periods are counted in UTC")
}

// Which statuses block: by default pending, running and completed; a
// failed or canceled job does not, unless asked.
func TestUniqueStatuses(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	c := newClient(t, pool, tasuki.ClientConfig{})
	insert := func(to string, statuses ...tasuki.Status) *tasuki.Job[email] {
		t.Helper()
		job, err := c.Insert(ctx, email{To: to}, &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{ByArgs: true, Statuses: statuses}})
		require.NoError(t, err)
		return job
	}
	set := func(id int64, status string) {
		t.Helper()
		_, err := pool.Exec(ctx, `UPDATE tasuki_job SET status = $2::tasuki_job_status, finished_at = CASE WHEN $2 <> 'running' THEN now() END,
			lease_token = CASE WHEN $2 = 'running' THEN gen_random_uuid() END,
			lease_expires_at = CASE WHEN $2 = 'running' THEN now() + interval '1 hour' END WHERE id = $1`, id, status)
		require.NoError(t, err)
	}
	for _, tc := range []struct {
		status   string
		statuses []tasuki.Status
		blocks   bool
	}{
		{"running", nil, true},
		{"completed", nil, true},
		{"failed", nil, false},
		{"canceled", nil, false},
		{"failed", []tasuki.Status{tasuki.StatusPending, tasuki.StatusRunning, tasuki.StatusFailed}, true},
		{"completed", []tasuki.Status{tasuki.StatusPending, tasuki.StatusRunning}, false},
	} {
		to := tc.status + "-" + strings.Repeat("x", len(tc.statuses))
		first := insert(to, tc.statuses...)
		require.False(t, first.Duplicate)
		set(first.ID, tc.status)
		again := insert(to, tc.statuses...)
		assert.Equal(t, tc.blocks, again.Duplicate, "a %s job with statuses %v", tc.status, tc.statuses)
	}
}

// A unique insert inside a transaction: the job it inserted blocks its
// duplicates in the same transaction, and a rollback leaves nothing that
// blocks.
func TestUniqueInsertTx(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	c := newClient(t, pool, tasuki.ClientConfig{})
	opts := &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{Key: "k"}}
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // rolled back below; this is for a failed assertion
	first, err := c.InsertTx(ctx, tx, email{To: "a"}, opts)
	require.NoError(t, err)
	again, err := c.InsertTx(ctx, tx, email{To: "b"}, opts)
	require.NoError(t, err)
	assert.True(t, again.Duplicate)
	assert.Equal(t, first.ID, again.ID)
	require.NoError(t, tx.Rollback(ctx))

	job, err := c.Insert(ctx, email{To: "c"}, opts)
	require.NoError(t, err)
	assert.False(t, job.Duplicate, "the rolled back job blocks nothing")
	require.NoError(t, c.Flush(ctx))
}

// A batch with duplicates, among themselves and of existing jobs, inserts
// the rest, with Client.InsertMany and Inserter.InsertManyTx.
func TestUniqueInsertMany(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	c := newClient(t, pool, tasuki.ClientConfig{})
	byArgs := &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{ByArgs: true}}
	_, err := c.Insert(ctx, email{To: "existing"}, byArgs)
	require.NoError(t, err)
	n, err := c.InsertMany(ctx, []email{{To: "existing"}, {To: "new"}, {To: "new"}, {To: "other"}}, byArgs)
	require.NoError(t, err)
	assert.EqualValues(t, 2, n, "new and other")
	assert.Equal(t, 3, countJobs(t, pool, "kind = 'email'"))

	ins := newInserter(t, pool, tasuki.ClientConfig{})
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // committed below; this is for a failed assertion
	n, err = ins.InsertManyTx(ctx, tx, []tasuki.InsertManyParams{
		{Payload: email{To: "plain"}},
		{Payload: email{To: "new"}, InsertOpts: byArgs},
		{Payload: email{To: "plain"}},
		{Payload: email{To: "fresh"}, InsertOpts: byArgs},
	})
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	assert.EqualValues(t, 3, n, "two plain jobs and fresh")
	assert.Equal(t, 2, countJobs(t, pool, "payload->>'to' = 'plain'"))
	assert.Equal(t, 1, countJobs(t, pool, "payload->>'to' = 'new'"))
	assert.Equal(t, 1, countJobs(t, pool, "payload->>'to' = 'fresh' AND unique_key IS NOT NULL"))
	require.NoError(t, ins.Flush(ctx))
	require.NoError(t, c.Flush(ctx))
}

// Every unique option is checked.
func TestUniqueOptionsValidated(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	c := newClient(t, pool, tasuki.ClientConfig{})
	for _, tc := range []struct {
		option string
		u      tasuki.UniqueOpts
	}{
		{"InsertOpts.Unique.Statuses", tasuki.UniqueOpts{Statuses: []tasuki.Status{tasuki.StatusPending}}},
		{"InsertOpts.Unique.Statuses", tasuki.UniqueOpts{Statuses: []tasuki.Status{tasuki.StatusPending, tasuki.StatusRunning, "done"}}},
		{"InsertOpts.Unique.ByPeriod", tasuki.UniqueOpts{ByPeriod: 500 * time.Millisecond}},
		{"InsertOpts.Unique.ByPeriod", tasuki.UniqueOpts{ByPeriod: -time.Hour}},
		{"InsertOpts.Unique.Key", tasuki.UniqueOpts{Key: strings.Repeat("k", tasuki.MaxUniqueKeyLength+1)}},
		{"InsertOpts.Unique.Key", tasuki.UniqueOpts{Key: "\xff"}},
	} {
		u := tc.u
		_, err := c.Insert(context.Background(), email{}, &tasuki.InsertOpts{Unique: &u})
		var opt *tasuki.InvalidOptionError
		require.ErrorAs(t, err, &opt, "%+v", tc.u)
		assert.Equal(t, tc.option, opt.Option)
		_, err = c.InsertMany(context.Background(), []email{{}}, &tasuki.InsertOpts{Unique: &u})
		require.ErrorAs(t, err, &opt, "InsertMany %+v", tc.u)
	}
	assert.Zero(t, countJobs(t, pool, "true"))
}

// Metadata is stored as given and read back; what cannot be stored is
// refused.
func TestMetadataRoundTrip(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	c := newClient(t, pool, tasuki.ClientConfig{})
	job, err := c.Insert(ctx, email{}, &tasuki.InsertOpts{Metadata: map[string]any{"tenant": "acme", "n": 3}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"tenant": "acme", "n": 3}`, string(job.Metadata))
	got, err := c.Get(ctx, job.ID)
	require.NoError(t, err)
	assert.JSONEq(t, `{"tenant": "acme", "n": 3}`, string(got.Metadata))
	_, err = c.InsertMany(ctx, []email{{To: "m"}}, &tasuki.InsertOpts{Metadata: map[string]any{"batch": true}})
	require.NoError(t, err)
	assert.Equal(t, 1, countJobs(t, pool, `metadata = '{"batch": true}'`))
	plain, err := c.Insert(ctx, email{}, nil)
	require.NoError(t, err)
	assert.JSONEq(t, `{}`, string(plain.Metadata))

	for _, bad := range []map[string]any{
		{"ch": make(chan int)},
		{"nul": "a\x00b"},
		{"big": strings.Repeat("x", tasuki.MaxMetadataBytes)},
	} {
		_, err := c.Insert(ctx, email{}, &tasuki.InsertOpts{Metadata: bad})
		var opt *tasuki.InvalidOptionError
		require.ErrorAs(t, err, &opt)
		assert.Equal(t, "InsertOpts.Metadata", opt.Option)
	}
	require.NoError(t, c.Flush(ctx))
	_ = pgx.ErrNoRows
}
