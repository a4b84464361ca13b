package tasuki_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// Fuzz tests of option validation and payload handling. `go test` runs
// their seed corpus (f.Add and testdata/fuzz/<Name>/); `go test -fuzz
// FuzzInsertOpts ./tasuki/` explores. The promise they check: an input is
// either stored exactly or rejected with *tasuki.InvalidOptionError or
// *tasuki.InvalidPayloadError, writing nothing.

// fuzzQueueOK is the documented rule for a queue name: 1 to 128 characters
// of text PostgreSQL can store.
func fuzzQueueOK(q string) bool {
	n := utf8.RuneCountInString(q)
	return n >= 1 && n <= tasuki.MaxQueueLength && utf8.ValidString(q) && !strings.ContainsRune(q, 0)
}

// fuzzLazyPool is a pool that never connects: constructors only validate.
func fuzzLazyPool(f *testing.F) *pgxpool.Pool {
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	require.NoError(f, err)
	f.Cleanup(pool.Close)
	return pool
}

// NewClient accepts exactly the valid configurations, with defaults filled
// in, and rejects the others naming an invalid field. No database.
func FuzzClientConfig(f *testing.F) {
	f.Add("default", 0, 0)
	f.Add("", 25, 1<<20)
	f.Add("q", 1, -1)
	f.Add(strings.Repeat("é", 128), math.MaxInt32, math.MaxInt)
	f.Add(strings.Repeat("x", 129), -1, -2)
	f.Add("a\x00b", 0, 0)
	f.Add("\xff", 0, 0)
	f.Add("q", math.MaxInt32+1, 0)
	f.Add("q", 0, math.MinInt)
	pool := fuzzLazyPool(f)
	f.Fuzz(func(t *testing.T, queue string, maxAttempts, maxPayloadBytes int) {
		invalid := map[string]bool{}
		if queue != "" && !fuzzQueueOK(queue) {
			invalid["ClientConfig.Queue"] = true
		}
		if maxAttempts < 0 || maxAttempts > math.MaxInt32 {
			invalid["ClientConfig.MaxAttempts"] = true
		}
		if maxPayloadBytes < -1 {
			invalid["ClientConfig.MaxPayloadBytes"] = true
		}
		c, err := tasuki.NewClient[map[string]any](pool, tasuki.ClientConfig{Kind: "fuzz", Queue: queue, MaxAttempts: maxAttempts, MaxPayloadBytes: maxPayloadBytes})
		if len(invalid) == 0 {
			require.NoError(t, err)
			want := queue
			if want == "" {
				want = tasuki.DefaultQueue
			}
			assert.Equal(t, want, c.Queue())
			return
		}
		var opt *tasuki.InvalidOptionError
		if !errors.As(err, &opt) {
			t.Fatalf("want *InvalidOptionError for %v, got %v", invalid, err)
		}
		assert.True(t, invalid[opt.Option], "names an invalid field: %s not in %v", opt.Option, invalid)
	})
}

// fuzzJob is the payload type of the insert fuzz targets.
type fuzzJob struct {
	S string  `json:"s"`
	N int64   `json:"n"`
	F float64 `json:"f"`
}

func (fuzzJob) Kind() string { return "fuzz" }

// fuzzSchema is one migrated schema for a fuzz target's whole run.
func fuzzSchema(f *testing.F) *pgxpool.Pool {
	return testdb.New(f)
}

func fuzzCount(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM tasuki_job`).Scan(&n))
	return n
}

// PostgreSQL's timestamptz range: from 4714-11-24 BC (Go's year -4713)
// up to, not including, 294277-01-01 AD, in UTC.
var (
	fuzzMinTime = time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC)
	fuzzEndTime = time.Date(294277, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Insert with any options: valid ones store the job as asked, invalid ones
// give *InvalidOptionError and write nothing.
func FuzzInsertOpts(f *testing.F) {
	f.Add("", 0, 0, int64(0), int64(0), int64(0), false)
	f.Add("emails", 32767, 1, int64(time.Hour), int64(0), int64(0), false)
	f.Add("キュー🚀", 5, 3, int64(0), time.Now().Add(time.Hour).Unix(), int64(123456789), true)
	f.Add(`'); DROP TABLE tasuki_job; --`, 0, 0, int64(0), int64(0), int64(0), false)
	f.Add(strings.Repeat("z", 129), 0, 0, int64(0), int64(0), int64(0), false)
	f.Add("q", -1, -1, int64(-1), int64(0), int64(0), false)
	f.Add("q", 32768, 0, int64(time.Second), int64(1), int64(0), true)
	f.Add("q\x00", 0, 0, int64(0), int64(0), int64(0), false)
	f.Add("q", 0, 1<<32+3, int64(0), int64(0), int64(0), false)
	f.Add("q", 0, 0, int64(0), int64(9_000_000_000_000), int64(0), true)
	f.Add("q", 0, 0, int64(math.MaxInt64), int64(0), int64(0), false)
	pool := fuzzSchema(f)
	client, err := tasuki.NewClient[fuzzJob](pool, tasuki.ClientConfig{})
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, queue string, priority, maxAttempts int, delay, runAtSec, runAtNsec int64, setRunAt bool) {
		ctx := context.Background()
		opts := &tasuki.InsertOpts{Queue: queue, Priority: priority, MaxAttempts: maxAttempts, Delay: time.Duration(delay)}
		if setRunAt {
			opts.RunAt = time.Unix(runAtSec, runAtNsec%1e9).UTC()
		}
		invalid := map[string]bool{}
		if queue != "" && !fuzzQueueOK(queue) {
			invalid["InsertOpts.Queue"] = true
		}
		if priority < 0 || priority > tasuki.MaxPriority {
			invalid["InsertOpts.Priority"] = true
		}
		if maxAttempts < 0 || maxAttempts > math.MaxInt32 {
			invalid["InsertOpts.MaxAttempts"] = true
		}
		if delay < 0 {
			invalid["InsertOpts.Delay"] = true
		}
		if delay > 0 && setRunAt && !opts.RunAt.IsZero() {
			invalid["InsertOpts.RunAt"] = true
		}
		outOfRange := setRunAt && !opts.RunAt.IsZero() && (opts.RunAt.Before(fuzzMinTime) || !opts.RunAt.Before(fuzzEndTime))
		if outOfRange {
			invalid["InsertOpts.RunAt"] = true
		}

		before := fuzzCount(t, pool)
		job, err := client.Insert(ctx, fuzzJob{S: "x"}, opts)
		written := fuzzCount(t, pool) - before
		if job != nil {
			_, _ = pool.Exec(ctx, `DELETE FROM tasuki_job WHERE id = $1`, job.ID) // keep the table small
		}
		if len(invalid) == 0 {
			require.NoError(t, err)
			wantQueue := queue
			if wantQueue == "" {
				wantQueue = tasuki.DefaultQueue
			}
			assert.Equal(t, wantQueue, job.Queue)
			assert.Equal(t, priority, job.Priority)
			wantAttempts := maxAttempts
			if wantAttempts == 0 {
				wantAttempts = tasuki.DefaultMaxAttempts
			}
			assert.Equal(t, wantAttempts, job.MaxAttempts)
			if setRunAt && !opts.RunAt.IsZero() {
				assert.True(t, opts.RunAt.Truncate(time.Microsecond).Equal(job.ScheduledAt), "scheduled at %s, want %s", job.ScheduledAt, opts.RunAt)
			}
			return
		}
		var opt *tasuki.InvalidOptionError
		if errors.As(err, &opt) && written == 0 {
			assert.True(t, invalid[opt.Option], "names an invalid field: %s not in %v", opt.Option, invalid)
			return
		}
		t.Fatalf("want *InvalidOptionError for %v and nothing written; got %d written and %v", invalid, written, err)
	})
}

// Insert and InsertMany with any payload: one that encodes, is within the
// size limit and holds no NUL is stored and read back as encoding/json
// round-trips it; any other gives *InvalidPayloadError and writes nothing.
func FuzzPayload(f *testing.F) {
	f.Add("hello", int64(1), 1.5)
	f.Add("", int64(0), 0.0)
	f.Add("a\x00b", int64(-1), -0.0)
	f.Add(`\u0000`, int64(math.MaxInt64), math.MaxFloat64)
	f.Add("\xff\xfe invalid UTF-8", int64(math.MinInt64), math.SmallestNonzeroFloat64)
	f.Add("\"quotes\" and \\backslashes\\ and </script>", int64(42), 1e300)
	f.Add(strings.Repeat("big", 200), int64(7), 0.1)
	f.Add("emoji 🚀 and \u2028 separators", int64(3), math.Inf(1))
	pool := fuzzSchema(f)
	const limit = 512
	client, err := tasuki.NewClient[fuzzJob](pool, tasuki.ClientConfig{MaxPayloadBytes: limit})
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, s string, n int64, fl float64) {
		ctx := context.Background()
		p := fuzzJob{S: s, N: n, F: fl}
		encoded, encErr := json.Marshal(p)
		storable := encErr == nil && len(encoded) <= limit && !strings.ContainsRune(s, 0)

		before := fuzzCount(t, pool)
		job, err := client.Insert(ctx, p, nil)
		_, manyErr := client.InsertMany(ctx, []fuzzJob{{S: "ok"}, p}, nil)
		written := fuzzCount(t, pool) - before
		_, _ = pool.Exec(ctx, `DELETE FROM tasuki_job`)

		if !storable {
			var payloadErr *tasuki.InvalidPayloadError
			require.ErrorAs(t, err, &payloadErr)
			require.ErrorAs(t, manyErr, &payloadErr)
			require.Zero(t, written, "nothing written")
			return
		}
		require.NoError(t, err)
		require.NoError(t, manyErr)
		require.Equal(t, 3, written)
		var want fuzzJob
		require.NoError(t, json.Unmarshal(encoded, &want))
		assert.Equal(t, want, job.Payload, "stored as encoding/json round-trips it")
	})
}

// Insert raw JSON: invalid JSON and JSON holding \u0000 give
// *InvalidPayloadError; other JSON is stored as PostgreSQL's jsonb reads
// it. JSON that jsonb itself rejects must give *InvalidPayloadError too.
func FuzzRawPayload(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `null`, `"text"`, `{"a": [1, 2.5, -3e10, true, null]}`,
		`{"a": 1, "a": 2}`, `{"k": "\u00e9\ud83d\ude80"}`, `"\u0000"`, `{"\u0000": 1}`, `"\\u0000"`,
		`{"a":`, `nul`, `"\ud800"`, `1e1000000`, `  {"spaced" : 1 }  `,
	} {
		f.Add([]byte(s))
	}
	pool := fuzzSchema(f)
	client, err := tasuki.NewClient[json.RawMessage](pool, tasuki.ClientConfig{Kind: "raw", MaxPayloadBytes: 4096})
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, raw []byte) {
		ctx := context.Background()
		before := fuzzCount(t, pool)
		job, err := client.Insert(ctx, json.RawMessage(raw), nil)
		written := fuzzCount(t, pool) - before
		var payloadErr *tasuki.InvalidPayloadError
		switch {
		case errors.As(err, &payloadErr):
			require.Zero(t, written)
			// Rejected: it must be invalid JSON, too large, or JSON that
			// PostgreSQL's jsonb itself rejects.
			if json.Valid(raw) && len(raw) <= 4096 {
				var ok bool
				pgErr := pool.QueryRow(ctx, `SELECT $1::text::jsonb IS NOT NULL`, string(raw)).Scan(&ok)
				assert.Error(t, pgErr, "rejected JSON that jsonb stores: %s", err)
			}
		case err != nil:
			require.Zero(t, written)
			// Does PostgreSQL itself reject it? Then tasuki should have
			// said so with *InvalidPayloadError.
			var ok bool
			if pgErr := pool.QueryRow(ctx, `SELECT $1::text::jsonb IS NOT NULL`, string(raw)).Scan(&ok); pgErr != nil {
				t.Fatalf("JSON that jsonb rejects gave %v, want *InvalidPayloadError", err)
			}
			t.Fatalf("valid, storable JSON rejected: %v", err)
		default:
			require.Equal(t, 1, written)
			var same bool
			require.NoError(t, pool.QueryRow(ctx, `SELECT payload = $2::text::jsonb FROM tasuki_job WHERE id = $1`, job.ID, string(raw)).Scan(&same))
			assert.True(t, same, "stored as jsonb reads it")
			_, err := pool.Exec(ctx, `DELETE FROM tasuki_job WHERE id = $1`, job.ID)
			require.NoError(t, err)
		}
	})
}

// fuzzHoldsNUL reports whether a decoded JSON value has a NUL in any string
// or key.
func fuzzHoldsNUL(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.ContainsRune(v, 0)
	case []any:
		for _, e := range v {
			if fuzzHoldsNUL(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range v {
			if strings.ContainsRune(k, 0) || fuzzHoldsNUL(e) {
				return true
			}
		}
	}
	return false
}
