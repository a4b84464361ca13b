package tasuki_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // the DST case below loads a zone

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// rawUniqueViolation reports whether err carries PostgreSQL's raw
// unique_violation: what a caller should never have to decode.
func rawUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" ||
		err != nil && strings.Contains(err.Error(), "SQLSTATE 23505")
}

func jobStatusOf(t *testing.T, pool *pgxpool.Pool, id int64) tasuki.Status {
	t.Helper()
	var s string
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT status::text FROM tasuki_job WHERE id = $1", id).Scan(&s))
	return tasuki.Status(s)
}

// Guards against raw SQLSTATE 23505, Admin.Retry: a unique job that failed
// (the default Statuses do not block on failed) lets a newer job with the
// same key in; retrying the failed one then puts it back to pending, into
// the unique index, where the newer one is. Admin.Retry fails with
// "tasuki: retry job 1: ERROR: duplicate key value violates unique
// constraint "tasuki_job_unique_idx" (SQLSTATE 23505)": a raw database
// error that neither names the job in the way nor says what to do, and no
// typed error to tell it from an outage. Retry should check for a live
// duplicate (in the statement, as JobInsert does with ON CONFLICT) and
// return a typed error naming it (the existing job's id), as
// JobStatusError does for a wrong status.
func TestAttackUniqueAdminRetryWithNewerDuplicate(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	c := newClient(t, pool, tasuki.ClientConfig{})
	adm := newAdmin(t, pool)
	opts := &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{Key: "invoice-7"}}
	old, err := c.Insert(ctx, email{To: "a"}, opts)
	require.NoError(t, err)
	setStatus(t, pool, tasuki.StatusFailed, old.ID)
	newer, err := c.Insert(ctx, email{To: "a"}, opts)
	require.NoError(t, err)
	require.False(t, newer.Duplicate, "a failed job does not block by default")

	_, err = adm.Retry(ctx, old.ID)
	require.Error(t, err, "retrying must not make two live jobs with one key")
	assert.False(t, rawUniqueViolation(err), "Admin.Retry returns a raw unique violation: %v", err)
	assert.Contains(t, err.Error(), fmt.Sprint(newer.ID), "the error names the job in the way")
	assert.Equal(t, tasuki.StatusFailed, jobStatusOf(t, pool, old.ID))
}

// Guards against (raw SQLSTATE 23505, Admin.RetryMany; one job blocks them all):
// RetryMany updates every matching failed or canceled job in one
// statement. One of them whose key a newer live job holds, or two failed
// jobs with the same key, make the whole statement fail with the raw
// unique violation, and none of the other jobs is retried: an operator's
// "retry every failed job of this kind" retries nothing. RetryMany should
// skip (and count apart, or report) the jobs a live duplicate blocks, and
// retry one job per key.
func TestAttackUniqueAdminRetryManyWithDuplicates(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	c := newClient(t, pool, tasuki.ClientConfig{})
	adm := newAdmin(t, pool)
	byArgs := &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{ByArgs: true}}
	ins := func(to string) int64 {
		t.Helper()
		job, err := c.Insert(ctx, email{To: to}, byArgs)
		require.NoError(t, err)
		require.False(t, job.Duplicate)
		return job.ID
	}
	a, b, cc := ins("a"), ins("b"), ins("c")
	setStatus(t, pool, tasuki.StatusFailed, a, b, cc)
	ins("b") // a newer live b
	d1 := ins("d")
	setStatus(t, pool, tasuki.StatusFailed, d1)
	d2 := ins("d")
	setStatus(t, pool, tasuki.StatusCanceled, d2) // two dead jobs with one key

	n, err := adm.RetryMany(ctx, tasuki.JobFilter{Kind: "email"})
	assert.False(t, rawUniqueViolation(err), "Admin.RetryMany returns a raw unique violation: %v", err)
	assert.Equal(t, tasuki.StatusPending, jobStatusOf(t, pool, a), "a has no live duplicate, yet it was not retried (n=%d, err=%v)", n, err)
	assert.Equal(t, tasuki.StatusPending, jobStatusOf(t, pool, cc), "c has no live duplicate, yet it was not retried")
	assert.Equal(t, 1, countJobs(t, pool, "payload->>'to' = 'd' AND status = 'pending'"), "one of the two d jobs is retried")
	assert.Equal(t, 1, countJobs(t, pool, "payload->>'to' = 'b' AND status = 'pending'"), "b keeps one live job")
}

// Whose Statuses count: the existing job's, given when it was inserted
// and stored with it (as documented on UniqueOpts.Statuses), not the
// inserting call's. A completed job inserted with the default blocks an
// insert that leaves completed out; a completed job inserted with
// {pending, running} does not block an insert that asks the default.
func TestAttackUniqueStatusesAreTheExistingJobs(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	c := newClient(t, pool, tasuki.ClientConfig{})
	live := []tasuki.Status{tasuki.StatusPending, tasuki.StatusRunning}
	withStatuses := func(s []tasuki.Status) *tasuki.InsertOpts {
		return &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{ByArgs: true, Statuses: s}}
	}

	first, err := c.Insert(ctx, email{To: "relaxed"}, withStatuses(nil))
	require.NoError(t, err)
	setStatus(t, pool, tasuki.StatusCompleted, first.ID)
	again, err := c.Insert(ctx, email{To: "relaxed"}, withStatuses(live))
	require.NoError(t, err)
	assert.True(t, again.Duplicate, "the completed job's own Statuses include completed")

	first, err = c.Insert(ctx, email{To: "tightened"}, withStatuses(live))
	require.NoError(t, err)
	setStatus(t, pool, tasuki.StatusCompleted, first.ID)
	again, err = c.Insert(ctx, email{To: "tightened"}, withStatuses(nil))
	require.NoError(t, err)
	assert.False(t, again.Duplicate, "the completed job's own Statuses leave completed out")
}

type numbered struct {
	N int `json:"n"`
}

func (numbered) Kind() string { return "numbered" }

// Guards against deadlock between bulk inserts: JobInsertUniqueMany inserts a
// batch's unique rows in batch order (ORDER BY j.ord), and an insert that
// meets another transaction's uncommitted row with its key waits for it.
// Two InsertMany calls whose batches hold the same unique jobs in a
// different order (a fan-out over a set in map order, say) each take one
// key and wait for the other's: PostgreSQL aborts one with "deadlock
// detected (SQLSTATE 40P01)", and its whole batch is lost (the caller gets
// an error for jobs that never conflicted with anything). The test makes
// the interleaving certain: a third transaction holds job 2 of both
// batches [1,2,3] and [3,2,1], so that each takes its first job and waits;
// once it rolls back, each needs the job the other holds. Every other
// bulk statement of tasuki locks in a fixed order ("so that two bulk
// cancels cannot deadlock"); this one should too: insert unique rows
// ordered by unique_key (and the COPY'd rows do not matter).
func TestAttackUniqueInsertManyCrossedBatchesDeadlock(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	cfg := pool.Config().Copy()
	app := fmt.Sprintf("attack-crossed-%d", time.Now().UnixNano())
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = app
	batchPool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(batchPool.Close)
	holder, err := tasuki.NewClient[numbered](pool, tasuki.ClientConfig{})
	require.NoError(t, err)
	batcher, err := tasuki.NewClient[numbered](batchPool, tasuki.ClientConfig{})
	require.NoError(t, err)
	opts := &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{ByArgs: true}}

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // rolled back below; this is for a failed assertion
	_, err = holder.InsertTx(ctx, tx, numbered{2}, opts)
	require.NoError(t, err)

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, batch := range [][]numbered{{{1}, {2}, {3}}, {{3}, {2}, {1}}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = batcher.InsertMany(ctx, batch, opts)
		}()
	}
	deadline := time.Now().Add(time.Minute) // only keeps a broken test from hanging
	for {
		var waiting int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND wait_event_type = 'Lock'`, app).Scan(&waiting))
		if waiting == 2 {
			break
		}
		require.True(t, time.Now().Before(deadline), "both batches wait for the held job")
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, tx.Rollback(ctx))
	wg.Wait()
	for i, err := range errs {
		assert.NoError(t, err, "batch %d: two InsertMany calls with the same unique jobs in another order", i)
	}
	assert.Equal(t, 3, countJobs(t, pool, "kind = 'numbered'"))
	require.NoError(t, batcher.Flush(ctx))
}

// Guards against validation gap, Metadata: InsertOpts.Metadata promises that
// its values "must encode as JSON that PostgreSQL stores" and that what
// cannot be stored is refused with an *InvalidOptionError. Two kinds of
// values pass the check (unstorableJSON) and reach the database, which
// refuses the insert with a raw error:
//   - a json.RawMessage (or a MarshalJSON) with invalid UTF-8: "invalid
//     byte sequence for encoding "UTF8": 0xff (SQLSTATE 22021)";
//   - a number with more than 16383 digits after the point, or 131072
//     before it, written without an exponent: "value overflows numeric
//     format (SQLSTATE 22003)" — only exponents are checked.
//
// unstorableJSON should check UTF-8 (utf8.Valid) and count the digits of
// numbers, not only their exponent.
func TestAttackMetadataUnstorableValuesAreRefused(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	c := newClient(t, pool, tasuki.ClientConfig{})
	for name, m := range map[string]map[string]any{
		"invalid UTF-8 in a json.RawMessage": {"r": json.RawMessage("\"\xff\"")},
		"a fraction of 17,000 digits":        {"x": json.Number("0." + strings.Repeat("1", 17000))},
	} {
		_, err := c.Insert(ctx, email{}, &tasuki.InsertOpts{Metadata: m})
		var opt *tasuki.InvalidOptionError
		assert.ErrorAs(t, err, &opt, "%s: the database refused it instead: %v", name, err)
		_, err = c.InsertMany(ctx, []email{{}}, &tasuki.InsertOpts{Metadata: m})
		assert.ErrorAs(t, err, &opt, "%s (InsertMany): the database refused it instead: %v", name, err)
	}
	assert.Zero(t, countJobs(t, pool, "true"))
}

// Guards against (validation gap, payloads; the same check, older than this
// change): InvalidPayloadError is documented as what a payload that
// cannot be stored gives, "Nothing was written". A payload of a type with
// its own MarshalJSON (json.RawMessage here) with invalid UTF-8, or a
// number of more than 131072 digits, passes encodePayload and the database
// refuses it with a raw SQLSTATE 22021 / 22003. Same fix as above.
func TestAttackPayloadUnstorableValuesAreRefused(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	raw, err := tasuki.NewClient[json.RawMessage](pool, tasuki.ClientConfig{Kind: "raw"})
	require.NoError(t, err)
	for name, p := range map[string]string{
		"invalid UTF-8":          "{\"s\": \"\xff\"}",
		"a 140,000-digit number": strings.Repeat("9", 140000),
	} {
		_, err := raw.Insert(ctx, json.RawMessage(p), nil)
		var bad *tasuki.InvalidPayloadError
		assert.ErrorAs(t, err, &bad, "%s: the database refused it instead: %v", name, err)
	}
	assert.Zero(t, countJobs(t, pool, "true"))
}

// Guards against error message: an *InvalidOptionError about InsertOpts.Metadata
// prints the whole map with %#v as its Value: every value of it (metadata
// is meant for trace contexts and who asked for the job) goes into the
// error text and whatever logs it, and a json.RawMessage is printed byte by
// byte ("0x73, 0x73, …", six characters a byte). A map of 60 KB with one
// NaN gives an error message of 60 KB. The over-64-KiB case already prints
// only the size; the others should name the offending key, not the map.
func TestAttackMetadataErrorDoesNotEchoTheMap(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	c := newClient(t, pool, tasuki.ClientConfig{})
	secret := "traceparent-" + strings.Repeat("s", 50_000)
	for name, m := range map[string]map[string]any{
		"NaN":            {"trace": secret, "ratio": math.NaN()},
		"RawMessage NUL": {"trace": json.RawMessage(`"` + secret + `"`), "bad": "a\x00b"},
	} {
		_, err := c.Insert(context.Background(), email{}, &tasuki.InsertOpts{Metadata: m})
		require.Error(t, err, name)
		assert.NotContains(t, err.Error(), secret, "%s: the error echoes the metadata's values", name)
		assert.Less(t, len(err.Error()), 1000, "%s: an error message of %d bytes", name, len(err.Error()))
	}
}

// Guards against error type, ByArgs: a payload nested deeper than
// encoding/json decodes (10,000 levels; json.Marshal of nested maps or
// slices writes it) makes a ByArgs insert fail with a plain
// "tasuki: unique by arguments: invalid character '[' exceeded max depth":
// not an *InvalidPayloadError (errors.As finds nothing to tell a bad
// payload from a failure), and "invalid character" misleads: the JSON is
// valid. canonicalJSON's errors should be *InvalidPayloadError with a
// reason ("nested deeper than 10000 levels").
func TestAttackUniqueByArgsDeepPayloadError(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	c, err := tasuki.NewClient[any](pool, tasuki.ClientConfig{Kind: "deep"})
	require.NoError(t, err)
	var v any = 1
	for range 10_001 {
		v = []any{v}
	}
	_, err = c.Insert(context.Background(), v, &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{ByArgs: true}})
	require.Error(t, err)
	var bad *tasuki.InvalidPayloadError
	assert.ErrorAs(t, err, &bad, "the error is a %T: %v", err, err)
	assert.NotContains(t, err.Error(), "invalid character")
}

// HOLDS: what a unique insert counts, for payloads of every JSON shape and
// text, keys, periods and transactions.
func TestAttackUniqueHolds(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	byArgs := &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{ByArgs: true}}

	raw, err := tasuki.NewClient[json.RawMessage](pool, tasuki.ClientConfig{Kind: "raw"})
	require.NoError(t, err)
	rawDup := func(a, b string) bool {
		t.Helper()
		_, err := pool.Exec(ctx, "DELETE FROM tasuki_job WHERE kind = 'raw'")
		require.NoError(t, err)
		first, err := raw.Insert(ctx, json.RawMessage(a), byArgs)
		require.NoError(t, err)
		require.False(t, first.Duplicate)
		again, err := raw.Insert(ctx, json.RawMessage(b), byArgs)
		require.NoError(t, err)
		return again.Duplicate
	}
	assert.True(t, rawDup(`{"s":"\u00e9"}`, `{"s":"é"}`), "escaped and literal é")
	assert.True(t, rawDup(`{"s":"<a&b>"}`, `{"s":"\u003ca\u0026b\u003e"}`), "HTML characters")
	assert.True(t, rawDup(`{"\u0061":1}`, `{"a":1}`), "escaped key")
	assert.False(t, rawDup(`{"n":12345678901234567890123}`, `{"n":12345678901234567890124}`), "large numbers keep their precision")
	assert.False(t, rawDup(`{"n":9007199254740993}`, `{"n":9007199254740992}`), "beyond float64's integers")
	assert.True(t, rawDup(`[1,{"b":2,"a":1}]`, `[1, {"a":1, "b":2}]`), "arrays")
	assert.False(t, rawDup(`[1,2]`, `[2,1]`), "array order counts")
	assert.True(t, rawDup(`"x"`, `"x"`), "strings")
	assert.True(t, rawDup(`null`, `null`), "null")
	assert.False(t, rawDup(`"1"`, `1`), "a string is not a number")

	ints, err := tasuki.NewClient[[]int](pool, tasuki.ClientConfig{Kind: "ints"})
	require.NoError(t, err)
	j1, err := ints.Insert(ctx, []int{1, 2}, byArgs)
	require.NoError(t, err)
	j2, err := ints.Insert(ctx, []int{1, 2}, byArgs)
	require.NoError(t, err)
	assert.True(t, j2.Duplicate)
	assert.Equal(t, j1.ID, j2.ID)
	assert.Equal(t, []int{1, 2}, j2.Payload)
	got, err := ints.Get(ctx, j1.ID)
	require.NoError(t, err)
	assert.False(t, got.Duplicate, "Get never sets Duplicate")

	// Key with NUL and unicode: hashed, never stored as text.
	c := newClient(t, pool, tasuki.ClientConfig{})
	keyed := func(k string) bool {
		t.Helper()
		job, err := c.Insert(ctx, email{}, &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{Key: k}})
		require.NoError(t, err)
		return job.Duplicate
	}
	assert.False(t, keyed("a\x00b"))
	assert.True(t, keyed("a\x00b"))
	assert.False(t, keyed("a\x00c"))
	assert.False(t, keyed("é"))
	assert.False(t, keyed("e\u0301"), "no Unicode normalization: the caller's key is bytes")

	// ByPeriod: Delay and RunAt into the same UTC day match; DST does not
	// move a UTC day.
	day := time.Now().UTC().AddDate(0, 0, 3).Truncate(24 * time.Hour)
	daily := func(o tasuki.InsertOpts) bool {
		t.Helper()
		o.Unique = &tasuki.UniqueOpts{Key: "report", ByPeriod: 24 * time.Hour}
		job, err := c.Insert(ctx, email{To: "daily"}, &o)
		require.NoError(t, err)
		return job.Duplicate
	}
	assert.False(t, daily(tasuki.InsertOpts{RunAt: day.Add(12 * time.Hour)}))
	assert.True(t, daily(tasuki.InsertOpts{Delay: time.Until(day.Add(13 * time.Hour))}), "Delay into the same day")
	assert.False(t, daily(tasuki.InsertOpts{Delay: time.Until(day.Add(37 * time.Hour))}), "Delay into the next day")
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	// 2030-03-10: New York springs forward at 02:00 local (07:00 UTC).
	assert.False(t, daily(tasuki.InsertOpts{RunAt: time.Date(2030, 3, 10, 1, 30, 0, 0, ny)}))
	assert.True(t, daily(tasuki.InsertOpts{RunAt: time.Date(2030, 3, 10, 3, 30, 0, 0, ny)}), "across the DST change, the same UTC day")
	assert.False(t, daily(tasuki.InsertOpts{RunAt: time.Date(2030, 3, 10, 20, 30, 0, 0, ny)}), "the next UTC day")

	// InsertManyTx after InsertTx in one transaction, with the same job
	// many times in the batch.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // committed below
	_, err = c.InsertTx(ctx, tx, email{To: "tx"}, byArgs)
	require.NoError(t, err)
	batch := make([]email, 50)
	for i := range batch {
		batch[i] = email{To: []string{"tx", "tx2"}[i%2]}
	}
	n, err := c.InsertManyTx(ctx, tx, batch, byArgs)
	require.NoError(t, err)
	assert.EqualValues(t, 1, n, "only tx2 is new")
	again, err := c.InsertTx(ctx, tx, email{To: "tx2"}, byArgs)
	require.NoError(t, err)
	assert.True(t, again.Duplicate)
	require.NoError(t, tx.Commit(ctx))
	assert.Equal(t, 2, countJobs(t, pool, "payload->>'to' IN ('tx', 'tx2')"))

	// REPEATABLE READ: a job committed after the snapshot gives a
	// serialization failure, as documented.
	rr, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	defer rr.Rollback(ctx) //nolint:errcheck // rolled back
	_, err = rr.Exec(ctx, "SELECT 1")
	require.NoError(t, err)
	_, err = c.Insert(ctx, email{To: "rr"}, byArgs)
	require.NoError(t, err)
	_, err = c.InsertTx(ctx, rr, email{To: "rr"}, byArgs)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "40001", pgErr.Code)

	// Metadata: nil and empty both store {}; NaN is refused.
	for _, m := range []map[string]any{nil, {}} {
		job, err := c.Insert(ctx, email{}, &tasuki.InsertOpts{Metadata: m})
		require.NoError(t, err)
		got, err := c.Get(ctx, job.ID)
		require.NoError(t, err)
		assert.JSONEq(t, `{}`, string(got.Metadata))
	}
	_, err = c.Insert(ctx, email{}, &tasuki.InsertOpts{Metadata: map[string]any{"x": math.Inf(1)}})
	var opt *tasuki.InvalidOptionError
	assert.ErrorAs(t, err, &opt)
	require.NoError(t, c.Flush(ctx))
	require.NoError(t, raw.Flush(ctx))
	require.NoError(t, ints.Flush(ctx))
}
