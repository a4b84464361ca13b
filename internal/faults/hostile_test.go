package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// Hostile and bad input at the API's edges. Every rejection is a typed
// error and leaves nothing half-written: each case counts the job rows
// before and after.

// expect checks a documented promise.
func expect(t *testing.T, holds bool, format string, args ...any) {
	t.Helper()
	if !holds {
		t.Errorf(format, args...)
	}
}

// note is a payload with one string, for payload tests.
type note struct {
	S string `json:"s"`
}

func (note) Kind() string { return "note" }

func rowCount(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM tasuki_job`).Scan(&n))
	return n
}

func nop[T any](context.Context, *tasuki.Job[T]) error { return nil }

// Every invalid option of ClientConfig, InsertOpts and worker.Config gives
// an *InvalidOptionError naming the field, through every insert method,
// and writes nothing.
func TestInvalidOptionsWriteNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	long := strings.Repeat("q", tasuki.MaxQueueLength+1)

	t.Run("ClientConfig", func(t *testing.T) {
		for _, c := range []struct {
			name, option string
			cfg          tasuki.ClientConfig
		}{
			{name: "queue of 129 characters", option: "ClientConfig.Queue", cfg: tasuki.ClientConfig{Queue: long}},
			{name: "queue with NUL", option: "ClientConfig.Queue", cfg: tasuki.ClientConfig{Queue: "a\x00b"}},
			{name: "queue not UTF-8", option: "ClientConfig.Queue", cfg: tasuki.ClientConfig{Queue: "\xff\xfe"}},
			{name: "negative max attempts", option: "ClientConfig.MaxAttempts", cfg: tasuki.ClientConfig{MaxAttempts: -1}},
			{name: "max attempts beyond int32", option: "ClientConfig.MaxAttempts", cfg: tasuki.ClientConfig{MaxAttempts: math.MaxInt32 + 1}},
			{name: "max attempts wrapping to 3", option: "ClientConfig.MaxAttempts", cfg: tasuki.ClientConfig{MaxAttempts: 1<<32 + 3}},
			{name: "max payload bytes -2", option: "ClientConfig.MaxPayloadBytes", cfg: tasuki.ClientConfig{MaxPayloadBytes: -2}},
			{name: "max payload bytes minimum int", option: "ClientConfig.MaxPayloadBytes", cfg: tasuki.ClientConfig{MaxPayloadBytes: math.MinInt}},
		} {
			t.Run(c.name, func(t *testing.T) {
				before := rowCount(t, e.pool)
				client, err := tasuki.NewClient[faultJob](e.pool, c.cfg)
				if err == nil {
					// Accepted: then its inserts must be rejected, or
					// stored exactly as configured.
					job, ierr := client.Insert(ctx, faultJob{}, nil)
					e.removeJobs()
					var opt *tasuki.InvalidOptionError
					expect(t, errors.As(ierr, &opt) || (ierr == nil && job.MaxAttempts == c.cfg.MaxAttempts && job.Queue == c.cfg.Queue),
						"NewClient accepted %s; Insert gave %v", c.name, ierr)
					return
				}
				var opt *tasuki.InvalidOptionError
				require.ErrorAs(t, err, &opt)
				assert.Equal(t, c.option, opt.Option)
				assert.Equal(t, before, rowCount(t, e.pool))
			})
		}
		_, err := tasuki.NewClient[faultJob](nil, tasuki.ClientConfig{})
		var opt *tasuki.InvalidOptionError
		require.ErrorAs(t, err, &opt)
		assert.Equal(t, "pool", opt.Option)
	})

	t.Run("InsertOpts", func(t *testing.T) {
		inserts := map[string]func(*tasuki.InsertOpts) error{
			"Insert": func(o *tasuki.InsertOpts) error {
				_, err := e.client.Insert(ctx, faultJob{}, o)
				return err
			},
			"InsertTx": func(o *tasuki.InsertOpts) error {
				return pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
					_, err := e.client.InsertTx(ctx, tx, faultJob{}, o)
					return err
				})
			},
			"InsertMany": func(o *tasuki.InsertOpts) error {
				_, err := e.client.InsertMany(ctx, []faultJob{{N: 1}, {N: 2}}, o)
				return err
			},
			"InsertManyTx": func(o *tasuki.InsertOpts) error {
				return pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
					_, err := e.client.InsertManyTx(ctx, tx, []faultJob{{N: 1}, {N: 2}}, o)
					return err
				})
			},
		}
		for _, c := range []struct {
			name, option string
			opts         tasuki.InsertOpts
		}{
			{name: "queue of 129 characters", option: "InsertOpts.Queue", opts: tasuki.InsertOpts{Queue: long}},
			{name: "queue with NUL", option: "InsertOpts.Queue", opts: tasuki.InsertOpts{Queue: "\x00"}},
			{name: "queue not UTF-8", option: "InsertOpts.Queue", opts: tasuki.InsertOpts{Queue: "q\xc3"}},
			{name: "priority -1", option: "InsertOpts.Priority", opts: tasuki.InsertOpts{Priority: -1}},
			{name: "priority 32768", option: "InsertOpts.Priority", opts: tasuki.InsertOpts{Priority: tasuki.MaxPriority + 1}},
			{name: "priority huge", option: "InsertOpts.Priority", opts: tasuki.InsertOpts{Priority: math.MaxInt}},
			{name: "max attempts -1", option: "InsertOpts.MaxAttempts", opts: tasuki.InsertOpts{MaxAttempts: -1}},
			{name: "max attempts beyond int32", option: "InsertOpts.MaxAttempts", opts: tasuki.InsertOpts{MaxAttempts: math.MaxInt32 + 1}},
			{name: "max attempts wrapping to 3", option: "InsertOpts.MaxAttempts", opts: tasuki.InsertOpts{MaxAttempts: 1<<32 + 3}},
			{name: "negative delay", option: "InsertOpts.Delay", opts: tasuki.InsertOpts{Delay: -time.Nanosecond}},
			{name: "run at and delay", option: "InsertOpts.RunAt", opts: tasuki.InsertOpts{Delay: time.Second, RunAt: time.Now()}},
			{name: "run at year 300000", option: "InsertOpts.RunAt", opts: tasuki.InsertOpts{RunAt: time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC)}},
			{name: "run at 5000 BC", option: "InsertOpts.RunAt", opts: tasuki.InsertOpts{RunAt: time.Date(-5000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		} {
			for how, insert := range inserts {
				t.Run(c.name+"/"+how, func(t *testing.T) {
					opts := c.opts
					err := insert(&opts)
					written := e.removeJobs()
					var opt *tasuki.InvalidOptionError
					expect(t, written == 0 && errors.As(err, &opt),
						"%s with %s: want *InvalidOptionError and nothing written; got %d jobs written and %T: %v", how, c.name, written, err, err)
					assert.Equal(t, c.option, opt.Option)
				})
			}
		}
		// The largest values that are valid are stored as given.
		job, err := e.client.Insert(ctx, faultJob{}, &tasuki.InsertOpts{
			Priority: tasuki.MaxPriority, MaxAttempts: math.MaxInt32, Delay: time.Duration(math.MaxInt64)})
		require.NoError(t, err)
		assert.Equal(t, tasuki.MaxPriority, job.Priority)
		assert.Equal(t, math.MaxInt32, job.MaxAttempts)
		_, err = e.pool.Exec(ctx, `DELETE FROM tasuki_job WHERE id = $1`, job.ID)
		require.NoError(t, err)
	})

	t.Run("worker.Config", func(t *testing.T) {
		for _, c := range []struct {
			name, option string
			cfg          worker.Config
		}{
			{name: "queue of 129 characters", option: "Config.Queue", cfg: worker.Config{Queue: long}},
			{name: "queue with NUL", option: "Config.Queue", cfg: worker.Config{Queue: "a\x00"}},
			{name: "queue not UTF-8", option: "Config.Queue", cfg: worker.Config{Queue: "\x80"}},
			{name: "concurrency -1", option: "Config.Concurrency", cfg: worker.Config{Concurrency: -1}},
			{name: "concurrency 100001", option: "Config.Concurrency", cfg: worker.Config{Concurrency: 100_001}},
			{name: "lease under 1s", option: "Config.LeaseDuration", cfg: worker.Config{LeaseDuration: 999 * time.Millisecond}},
			{name: "negative lease", option: "Config.LeaseDuration", cfg: worker.Config{LeaseDuration: -time.Second}},
			{name: "negative heartbeat", option: "Config.HeartbeatInterval", cfg: worker.Config{HeartbeatInterval: -1}},
			{name: "heartbeat equal to the lease", option: "Config.HeartbeatInterval", cfg: worker.Config{LeaseDuration: 2 * time.Second, HeartbeatInterval: 2 * time.Second}},
			{name: "heartbeat beyond the default lease", option: "Config.HeartbeatInterval", cfg: worker.Config{HeartbeatInterval: time.Minute}},
			{name: "poll under 10ms", option: "Config.PollInterval", cfg: worker.Config{PollInterval: 9 * time.Millisecond}},
			{name: "negative poll", option: "Config.PollInterval", cfg: worker.Config{PollInterval: -time.Second}},
			{name: "shutdown timeout -2", option: "Config.ShutdownTimeout", cfg: worker.Config{ShutdownTimeout: -2}},
			{name: "listen URL not a URL", option: "Config.ListenURL", cfg: worker.Config{ListenURL: "postgres://u:hunter2@host:notaport/db"}},
			{name: "listen URL bad setting", option: "Config.ListenURL", cfg: worker.Config{ListenURL: "host=x password=hunter2 sslmode=bogus"}},
			{name: "listen URL and listen disabled", option: "Config.ListenURL", cfg: worker.Config{ListenURL: "postgres://u:hunter2@localhost/db", DisableListen: true}},
			{name: "listen URL with a quoted value ending in a backslash", option: "Config.ListenURL", cfg: worker.Config{ListenURL: `password=hunter2 host='\`}},
		} {
			t.Run(c.name, func(t *testing.T) {
				var w *worker.Worker
				var err error
				func() {
					defer func() {
						if p := recover(); p != nil {
							expect(t, false, "worker.New panicked: %v", p)
						}
					}()
					w, err = worker.New(e.pool, c.cfg, worker.Handle(worker.HandlerFunc[faultJob](nop[faultJob])))
				}()
				var opt *tasuki.InvalidOptionError
				expect(t, errors.As(err, &opt), "worker.New accepted %s (%v)", c.name, w != nil)
				assert.Equal(t, c.option, opt.Option)
				assert.NotContains(t, err.Error(), "hunter2", "the error never shows a password")
				assert.NotContains(t, fmt.Sprint(opt.Value), "hunter2")
			})
		}
		_, err := worker.New(nil, worker.Config{}, worker.Handle(worker.HandlerFunc[faultJob](nop[faultJob])))
		var opt *tasuki.InvalidOptionError
		require.ErrorAs(t, err, &opt)
		assert.Equal(t, "pool", opt.Option)
		_, err = worker.New(e.pool, worker.Config{}, worker.Handle[faultJob](nil))
		require.ErrorAs(t, err, &opt)
		assert.Equal(t, "handlers[0]", opt.Option)
		// DisableListen alone, and the defaults, are valid.
		_, err = worker.New(e.pool, worker.Config{DisableListen: true}, worker.Handle(worker.HandlerFunc[faultJob](nop[faultJob])))
		require.NoError(t, err)
	})
	assert.Zero(t, rowCount(t, e.pool))
}

// Queue names with quotes, SQL, Unicode, control characters and up to 128
// characters of four bytes each round-trip exactly through every insert
// method, and a worker on each queue runs its jobs, woken by NOTIFY (the
// poll interval is a minute). Empty means the default queue; 129
// characters is rejected.
func TestQueueNamesRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	names := []string{
		`it's`,
		`"quoted"`,
		`'); DROP TABLE tasuki_job; --`,
		`$1 %s %_ \\ \x00`,
		"キュー🚀",
		"e\u0301 Å Å",         // combining and precomposed forms stay distinct
		"tab\tnew\nline\rend", // control characters other than NUL
		"  spaced  ",
		"DEFAULT",
		"{\"k\":\"json\"}",
		strings.Repeat("é", tasuki.MaxQueueLength), // 128 characters, 256 bytes
		strings.Repeat("🚀", tasuki.MaxQueueLength), // 128 characters, 512 bytes
	}
	var ran atomic.Int64
	for i, q := range names {
		t.Run(fmt.Sprintf("queue %d", i), func(t *testing.T) {
			w, err := worker.New(e.pool, worker.Config{Queue: q, PollInterval: time.Minute, Logger: quietLogger()}, worker.Handle(worker.HandlerFunc[faultJob](func(ctx context.Context, job *tasuki.Job[faultJob]) error {
				if job.Queue != q {
					return tasuki.Cancel(fmt.Errorf("queue %q, not %q", job.Queue, q))
				}
				ran.Add(1)
				return nil
			})))
			require.NoError(t, err)
			require.Equal(t, q, w.Config().Queue)
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- w.Run(runCtx) }()
			defer func() {
				stop()
				require.NoError(t, <-done)
			}()

			viaOpts, err := e.client.Insert(ctx, faultJob{N: i}, &tasuki.InsertOpts{Queue: q})
			require.NoError(t, err)
			assert.Equal(t, q, viaOpts.Queue)
			client, err := tasuki.NewClient[faultJob](e.pool, tasuki.ClientConfig{Queue: q})
			require.NoError(t, err)
			viaConfig, err := client.Insert(ctx, faultJob{N: i}, nil)
			require.NoError(t, err)
			assert.Equal(t, q, viaConfig.Queue)
			n, err := client.InsertMany(ctx, []faultJob{{N: i}, {N: i}}, nil)
			require.NoError(t, err)
			assert.EqualValues(t, 2, n)

			waitUntil(t, "the queue's jobs to complete", 30*time.Second, func() bool {
				return e.count(`SELECT count(*) FROM tasuki_job WHERE queue = $1 AND status = 'completed'`, q) == 4
			})
			got := e.job(viaOpts.ID)
			assert.Equal(t, q, got.Queue)
			var stored string
			require.NoError(t, e.pool.QueryRow(ctx, `SELECT queue FROM tasuki_job WHERE id = $1`, viaConfig.ID).Scan(&stored))
			assert.Equal(t, q, stored, "stored byte for byte")
		})
	}
	assert.EqualValues(t, 4*len(names), ran.Load())

	// Empty: the default queue.
	job, err := e.client.Insert(ctx, faultJob{}, &tasuki.InsertOpts{Queue: ""})
	require.NoError(t, err)
	assert.Equal(t, tasuki.DefaultQueue, job.Queue)
	w, err := worker.New(e.pool, worker.Config{Queue: ""}, worker.Handle(worker.HandlerFunc[faultJob](nop[faultJob])))
	require.NoError(t, err)
	assert.Equal(t, tasuki.DefaultQueue, w.Config().Queue)

	// 129 characters, even of one byte each, is one too many.
	before := rowCount(t, e.pool)
	var opt *tasuki.InvalidOptionError
	_, err = e.client.Insert(ctx, faultJob{}, &tasuki.InsertOpts{Queue: strings.Repeat("a", 129)})
	require.ErrorAs(t, err, &opt)
	_, err = tasuki.NewClient[faultJob](e.pool, tasuki.ClientConfig{Queue: strings.Repeat("🚀", 129)})
	require.ErrorAs(t, err, &opt)
	_, err = worker.New(e.pool, worker.Config{Queue: strings.Repeat("x", 129)}, worker.Handle(worker.HandlerFunc[faultJob](nop[faultJob])))
	require.ErrorAs(t, err, &opt)
	assert.Equal(t, before, rowCount(t, e.pool))
}

// Payloads that cannot be stored: too large for the client's limit, or
// holding \u0000, which jsonb rejects. Each gives *InvalidPayloadError and
// writes nothing, whichever insert method, and one bad payload in a batch
// stops the whole batch.
func TestUnstorablePayloadsWriteNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()

	small, err := tasuki.NewClient[note](e.pool, tasuki.ClientConfig{MaxPayloadBytes: 100})
	require.NoError(t, err)
	atLimit := note{S: strings.Repeat("x", 100-len(`{"s":""}`))}
	overLimit := note{S: atLimit.S + "x"}
	nul := note{S: "before\x00after"}

	var payloadErr *tasuki.InvalidPayloadError
	for _, c := range []struct {
		name string
		bad  note
	}{{"over the limit", overLimit}, {"NUL", nul}} {
		t.Run(c.name, func(t *testing.T) {
			before := rowCount(t, e.pool)
			_, err := small.Insert(ctx, c.bad, nil)
			require.ErrorAs(t, err, &payloadErr)
			_, err = small.InsertMany(ctx, []note{atLimit, atLimit, c.bad, atLimit}, nil)
			require.ErrorAs(t, err, &payloadErr)
			assert.Contains(t, err.Error(), "payload 2 of 4")
			// In a transaction the rejected insert sends nothing, so the
			// transaction is still good and commits what it did insert.
			tx, err := e.pool.Begin(ctx)
			require.NoError(t, err)
			_, err = small.InsertTx(ctx, tx, c.bad, nil)
			require.ErrorAs(t, err, &payloadErr)
			_, err = small.InsertManyTx(ctx, tx, []note{atLimit, c.bad}, nil)
			require.ErrorAs(t, err, &payloadErr)
			ok, err := small.InsertTx(ctx, tx, atLimit, nil)
			require.NoError(t, err)
			require.NoError(t, tx.Commit(ctx))
			assert.Equal(t, before+1, rowCount(t, e.pool), "only the valid insert of the transaction")
			assert.Equal(t, atLimit, ok.Payload)
		})
	}
	// A literal backslash before u0000 is text, not a NUL: stored as is.
	job, err := small.Insert(ctx, note{S: `\u0000`}, nil)
	require.NoError(t, err)
	assert.Equal(t, `\u0000`, e.payloadOf(job.ID, new(note)).(*note).S)

	// The default limit is 1 MiB; -1 lifts it.
	def, err := tasuki.NewClient[note](e.pool, tasuki.ClientConfig{})
	require.NoError(t, err)
	huge := note{S: strings.Repeat("y", tasuki.DefaultMaxPayloadBytes)}
	_, err = def.Insert(ctx, huge, nil)
	require.ErrorAs(t, err, &payloadErr)
	unlimited, err := tasuki.NewClient[note](e.pool, tasuki.ClientConfig{MaxPayloadBytes: -1})
	require.NoError(t, err)
	big, err := unlimited.Insert(ctx, huge, nil)
	require.NoError(t, err)
	assert.Len(t, big.Payload.S, tasuki.DefaultMaxPayloadBytes)

	// Raw JSON: \u0000 anywhere, key or value, escaped or in a batch.
	raw, err := tasuki.NewClient[json.RawMessage](e.pool, tasuki.ClientConfig{Kind: "fault"})
	require.NoError(t, err)
	for _, p := range []string{`"\u0000"`, `{"\u0000":1}`, `["a", {"b": "x\u0000y"}]`, `"\\\u0000"`} {
		before := rowCount(t, e.pool)
		_, err := raw.Insert(ctx, json.RawMessage(p), nil)
		require.ErrorAs(t, err, &payloadErr, p)
		_, err = raw.InsertMany(ctx, []json.RawMessage{json.RawMessage(`{}`), json.RawMessage(p)}, nil)
		require.ErrorAs(t, err, &payloadErr, p)
		assert.Equal(t, before, rowCount(t, e.pool), p)
	}
	// JSON that is not JSON does not encode.
	_, err = raw.Insert(ctx, json.RawMessage(`{"a":`), nil)
	require.ErrorAs(t, err, &payloadErr)

	// Other JSON that jsonb refuses.
	for _, p := range []string{`"\ud800"`, `{"a":"\udc00"}`, `1e1000000`} {
		t.Run("jsonb refuses "+p, func(t *testing.T) {
			before := rowCount(t, e.pool)
			_, err := raw.Insert(ctx, json.RawMessage(p), nil)
			require.Error(t, err)
			assert.Equal(t, before, rowCount(t, e.pool))
			expect(t, errors.As(err, &payloadErr), "%s: want *InvalidPayloadError, got %v", p, err)
		})
	}
}

// removeJobs deletes every job and returns how many there were.
func (e *env) removeJobs() int {
	e.t.Helper()
	tag, err := e.pool.Exec(context.Background(), `DELETE FROM tasuki_job`)
	require.NoError(e.t, err)
	return int(tag.RowsAffected())
}

// payloadOf decodes a stored payload into v.
func (e *env) payloadOf(id int64, v any) any {
	e.t.Helper()
	var b []byte
	require.NoError(e.t, e.pool.QueryRow(context.Background(), `SELECT payload FROM tasuki_job WHERE id = $1`, id).Scan(&b))
	require.NoError(e.t, json.Unmarshal(b, v))
	return v
}

// Stored payloads that do not decode into the worker's type: the worker
// fails each job at once (no retries) and never calls its handler;
// Client.Get returns the job with a *PayloadDecodeError.
func TestUndecodablePayloadsFailAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	raw, err := tasuki.NewClient[json.RawMessage](e.pool, tasuki.ClientConfig{Kind: "fault"})
	require.NoError(t, err)
	payloads := []string{`"a string"`, `[1, 2]`, `{"n": "seven"}`, `{"n": 1.5}`, `{"n": 1e400}`, `true`, `{"sleep_ms": {}}`}
	var ids []int64
	for _, p := range payloads {
		job, err := raw.Insert(ctx, json.RawMessage(p), nil)
		require.NoError(t, err)
		ids = append(ids, job.ID)
		_, err = e.client.Get(ctx, job.ID)
		var decodeErr *tasuki.PayloadDecodeError
		require.ErrorAs(t, err, &decodeErr, p)
		assert.Equal(t, job.ID, decodeErr.JobID)
	}
	var called atomic.Int64
	w, err := worker.New(e.pool, worker.Config{PollInterval: 50 * time.Millisecond, Logger: quietLogger()}, worker.Handle(worker.HandlerFunc[faultJob](func(context.Context, *tasuki.Job[faultJob]) error {
		called.Add(1)
		return nil
	})))
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	waitUntil(t, "every job to fail", bound, func() bool { return e.counts()[tasuki.StatusFailed] == len(payloads) })
	stop()
	require.NoError(t, <-done)
	assert.Zero(t, called.Load(), "the handler never ran")
	for i, id := range ids {
		job, err := raw.Get(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, 1, job.Attempt, payloads[i])
		if assert.Len(t, job.Errors, 1, payloads[i]) {
			assert.Contains(t, job.Errors[0].Error, "does not decode", payloads[i])
		}
	}
}

// Unknown job ids, including 0, negative and the largest, give
// ErrJobNotFound from Get and Cancel, and change nothing.
func TestUnknownJobIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	known, err := e.client.Insert(ctx, faultJob{N: 1}, nil)
	require.NoError(t, err)
	for _, id := range []int64{0, -1, math.MinInt64, known.ID + 1, 1 << 40, math.MaxInt64} {
		_, err := e.client.Get(ctx, id)
		assert.ErrorIs(t, err, tasuki.ErrJobNotFound, "Get(%d)", id)
		_, err = e.client.Cancel(ctx, id)
		assert.ErrorIs(t, err, tasuki.ErrJobNotFound, "Cancel(%d)", id)
		var finished *tasuki.JobFinishedError
		assert.False(t, errors.As(err, &finished))
	}
	assert.Equal(t, 1, rowCount(t, e.pool))
	assert.Equal(t, tasuki.StatusPending, e.job(known.ID).Status)
}
