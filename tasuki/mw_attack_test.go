package tasuki_test

// Attacks on insert middleware and events: each test states what the API
// promises and checks it.

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// A middleware that returns nil without calling next, or that swallows the
// error next returned, must not crash the caller: the docs say "Not
// calling next inserts nothing". Insert and InsertTx dereference the
// result the insert never set.
func TestAttackInsertMiddlewareThatDropsOrSwallowsDoesNotPanic(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	drop := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		return nil // a sampling or dedup middleware dropping the job
	}
	swallow := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		_ = next(ctx) // a best-effort middleware that logs and goes on
		return nil
	}
	for name, mw := range map[string]tasuki.InsertMiddleware{"drop": drop, "swallow": swallow} {
		t.Run(name, func(t *testing.T) {
			c, err := tasuki.NewClient[email](pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{mw}})
			require.NoError(t, err)
			var job *tasuki.Job[email]
			assert.NotPanics(t, func() {
				job, err = c.Insert(ctx, email{To: "a"}, &tasuki.InsertOpts{Priority: -1}) // next fails: invalid
			}, "Insert")
			assert.True(t, err != nil || job != nil, "Insert returned neither a job nor an error")
			assert.NotPanics(t, func() {
				_ = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					_, err := c.InsertTx(ctx, tx, email{To: "b"}, &tasuki.InsertOpts{Priority: -1})
					return err
				})
			}, "InsertTx")
		})
	}
}

// InsertParams.Kind and .Payload are documented read only, and a change of
// the payload "changes nothing". On the bulk paths the row is built from
// them after the middleware ran, unchecked: middleware can store another
// kind, or a payload over MaxPayloadBytes.
func TestAttackInsertManyMiddlewareCannotChangeKindOrPayload(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	big := `{"to":"` + strings.Repeat("x", 4096) + `"}`
	rewrite := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		for _, j := range jobs {
			j.Kind = "sms"
			j.Payload = json.RawMessage(big)
		}
		return next(ctx)
	}
	cfg := tasuki.ClientConfig{MaxPayloadBytes: 1024, InsertMiddleware: []tasuki.InsertMiddleware{rewrite}}
	c, err := tasuki.NewClient[email](pool, cfg)
	require.NoError(t, err)
	ins, err := tasuki.NewInserter(pool, cfg)
	require.NoError(t, err)

	job, err := c.Insert(ctx, email{To: "one"}, nil)
	require.NoError(t, err)
	assert.Equal(t, "email", job.Kind, "Insert ignores the change, as documented")
	_, err = c.InsertMany(ctx, []email{{To: "many"}}, nil)
	require.NoError(t, err)
	_, err = ins.InsertMany(ctx, []tasuki.InsertManyParams{{Payload: email{To: "inserter"}}})
	require.NoError(t, err)

	rows, err := pool.Query(ctx, "SELECT kind, length(payload::text) FROM tasuki_job ORDER BY id")
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var kind string
		var n int
		require.NoError(t, rows.Scan(&kind, &n))
		assert.Equal(t, "email", kind, "the job's kind is the payload type's")
		assert.Less(t, n, 1024, "a payload over MaxPayloadBytes was stored")
	}
	require.NoError(t, rows.Err())
}

type traced struct {
	To string `json:"to"`
}

func (traced) Kind() string { return "traced" }

func (traced) InsertOpts() tasuki.InsertOpts {
	return tasuki.InsertOpts{Metadata: map[string]any{"headers": map[string]any{}}}
}

// stamp records the job's recipient in the nested "headers" map of its
// metadata: what a tracing middleware does with a carrier map.
func stamp(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
	for _, j := range jobs {
		var p struct{ To string }
		if err := json.Unmarshal(j.Payload, &p); err != nil {
			return err
		}
		h, _ := j.Opts.Metadata["headers"].(map[string]any)
		if h != nil {
			h[p.To] = true
		}
	}
	return next(ctx)
}

// InsertParams.Opts.Metadata "is the job's own copy", but the copy is
// shallow: a nested map is the caller's, or the client's DefaultOpts', and
// what middleware writes into it leaks into the caller's options and into
// every later job of the client (and races between concurrent inserts).
func TestAttackInsertMiddlewareNestedMetadataIsShared(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	cfg := tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{stamp}}

	tc, err := tasuki.NewClient[traced](pool, cfg)
	require.NoError(t, err)
	_, err = tc.Insert(ctx, traced{To: "x"}, nil)
	require.NoError(t, err)
	second, err := tc.Insert(ctx, traced{To: "y"}, nil)
	require.NoError(t, err)
	var meta map[string]any
	require.NoError(t, json.Unmarshal(second.Metadata, &meta))
	assert.Equal(t, map[string]any{"y": true}, meta["headers"], "the first job's header leaked into the second through DefaultOpts")

	ec, err := tasuki.NewClient[email](pool, cfg)
	require.NoError(t, err)
	headers := map[string]any{}
	opts := &tasuki.InsertOpts{Metadata: map[string]any{"headers": headers}}
	_, err = ec.Insert(ctx, email{To: "z"}, opts)
	require.NoError(t, err)
	assert.Empty(t, headers, "middleware changed the caller's nested metadata")
}

// Duplicate "is set when next returns if the insert was unique and met an
// existing job": on the bulk paths it never is.
func TestAttackInsertManyMiddlewareSeesDuplicate(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	var mu sync.Mutex
	var seen []tasuki.InsertParams
	record := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		err := next(ctx)
		mu.Lock()
		for _, j := range jobs {
			seen = append(seen, *j)
		}
		mu.Unlock()
		return err
	}
	c, err := tasuki.NewClient[email](pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{record}})
	require.NoError(t, err)
	opts := &tasuki.InsertOpts{Unique: &tasuki.UniqueOpts{ByArgs: true}}
	n, err := c.InsertMany(ctx, []email{{To: "a"}}, opts)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	n, err = c.InsertMany(ctx, []email{{To: "a"}}, opts)
	require.NoError(t, err)
	require.EqualValues(t, 0, n, "the second met the first")
	require.Len(t, seen, 2)
	assert.False(t, seen[0].Duplicate)
	assert.True(t, seen[1].Duplicate, "the bulk insert met an existing job: Duplicate should say so")
}

// A nil insert middleware is accepted by NewClient and NewInserter, and
// every insert then fails with an *InsertPanicError (a nil func call).
// worker.New rejects a nil worker.Middleware up front; these should too.
func TestAttackNilInsertMiddlewareRejectedUpFront(t *testing.T) {
	pool := testdb.New(t)
	cfg := tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{nil}}
	_, err := tasuki.NewClient[email](pool, cfg)
	var opt *tasuki.InvalidOptionError
	assert.ErrorAs(t, err, &opt, "NewClient")
	_, err = tasuki.NewInserter(pool, cfg)
	assert.ErrorAs(t, err, &opt, "NewInserter")
}

// Guard (passes): concurrent inserts through middleware that changes each
// job's metadata and unique statuses, all sharing one caller's
// InsertOpts, neither race (-race) nor change those options.
func TestAttackConcurrentInsertsShareOptsSafely(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	mw := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		for _, j := range jobs {
			j.Opts.Metadata["k"] = j.Kind
			j.Opts.Unique.Statuses = append(j.Opts.Unique.Statuses, tasuki.StatusFailed)
			j.Opts.Unique.Key += "x"
		}
		return next(ctx)
	}
	c, err := tasuki.NewClient[email](pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{mw}})
	require.NoError(t, err)
	opts := &tasuki.InsertOpts{Metadata: map[string]any{"mine": 1}, Unique: &tasuki.UniqueOpts{ByArgs: true,
		Statuses: make([]tasuki.Status, 2, 8)}}
	opts.Unique.Statuses[0], opts.Unique.Statuses[1] = tasuki.StatusPending, tasuki.StatusRunning
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				_, err := c.Insert(ctx, email{To: string(rune('a' + i))}, opts)
				assert.NoError(t, err)
			} else {
				_, err := c.InsertMany(ctx, []email{{To: string(rune('a' + i))}}, opts)
				assert.NoError(t, err)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, map[string]any{"mine": 1}, opts.Metadata)
	assert.Len(t, opts.Unique.Statuses, 2)
	assert.Empty(t, opts.Unique.Key)
}

// Guard (passes): middleware cannot slip invalid options past the checks:
// metadata over the limit or with a NUL, a bad queue, a Delay with a RunAt.
func TestAttackInsertMiddlewareCannotBypassValidation(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	bads := map[string]func(*tasuki.InsertOpts){
		"huge metadata": func(o *tasuki.InsertOpts) { o.Metadata["big"] = strings.Repeat("x", tasuki.MaxMetadataBytes) },
		"NUL metadata":  func(o *tasuki.InsertOpts) { o.Metadata["nul"] = "a\x00b" },
		"NUL queue":     func(o *tasuki.InsertOpts) { o.Queue = "q\x00" },
		"max attempts":  func(o *tasuki.InsertOpts) { o.MaxAttempts = -3 },
		"unique key":    func(o *tasuki.InsertOpts) { o.Unique = &tasuki.UniqueOpts{Key: strings.Repeat("k", 2000)} },
	}
	for name, bad := range bads {
		mw := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
			for _, j := range jobs {
				bad(&j.Opts)
			}
			return next(ctx)
		}
		cfg := tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{mw}}
		c, err := tasuki.NewClient[email](pool, cfg)
		require.NoError(t, err)
		ins, err := tasuki.NewInserter(pool, cfg)
		require.NoError(t, err)
		var opt *tasuki.InvalidOptionError
		_, err = c.Insert(ctx, email{To: "a"}, nil)
		assert.ErrorAs(t, err, &opt, "%s: Insert", name)
		_, err = c.InsertMany(ctx, []email{{To: "a"}}, nil)
		assert.ErrorAs(t, err, &opt, "%s: InsertMany", name)
		_, err = ins.InsertMany(ctx, []tasuki.InsertManyParams{{Payload: email{To: "a"}}})
		assert.ErrorAs(t, err, &opt, "%s: Inserter.InsertMany", name)
	}
	assert.Empty(t, storedMetas(t, pool, "email"))
}

// Guard (passes): Inserted is true exactly when next succeeded before the
// panic, whichever middleware of the chain panicked.
func TestAttackInsertPanicErrorInserted(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	pass := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		return next(ctx)
	}
	panicsAfter := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		err := next(ctx)
		panic(err)
	}
	failsThenPanics := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		jobs[0].Opts.Priority = -1
		_ = next(ctx)
		panic("after a failed insert")
	}
	var pe *tasuki.InsertPanicError
	c, err := tasuki.NewClient[email](pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{panicsAfter, pass}})
	require.NoError(t, err)
	_, err = c.Insert(ctx, email{To: "a"}, nil)
	require.ErrorAs(t, err, &pe)
	assert.True(t, pe.Inserted)
	c, err = tasuki.NewClient[email](pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{pass, failsThenPanics}})
	require.NoError(t, err)
	_, err = c.InsertMany(ctx, []email{{To: "b"}}, nil)
	require.ErrorAs(t, err, &pe)
	assert.False(t, pe.Inserted)
	assert.Len(t, storedMetas(t, pool, "email"), 1)
}

// Guard (passes): Publish racing with Subscribe and Close (twice) neither
// panics on a closed channel nor races (-race); a closed subscription's C
// ends; Subscribe(0) has the default buffer; a nil *Events is inert.
func TestAttackEventsPublishRacesClose(t *testing.T) {
	var nilEvents *tasuki.Events
	assert.NotPanics(t, func() { nilEvents.Publish(tasuki.Event{Type: tasuki.EventCompleted}) })
	assert.False(t, nilEvents.Active())

	events := tasuki.NewEvents()
	assert.Equal(t, tasuki.DefaultEventBuffer, cap(events.Subscribe(0).C))
	stop := make(chan struct{})
	var pubs sync.WaitGroup
	for range 4 {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for {
				select {
				case <-stop:
					return
				default:
					events.Publish(tasuki.Event{Type: tasuki.EventCompleted})
				}
			}
		}()
	}
	for range 200 {
		s := events.Subscribe(1)
		var closers sync.WaitGroup
		for range 2 {
			closers.Add(1)
			go func() { defer closers.Done(); s.Close() }()
		}
		closers.Wait()
		for range s.C { // drains, then ends: C is closed
		}
	}
	close(stop)
	pubs.Wait()
}

// Guard (passes): an error of the insert reaches the caller through a
// middleware that returns what next returned.
func TestAttackInsertErrorThroughMiddleware(t *testing.T) {
	pool := testdb.New(t)
	boom := errors.New("boom")
	mw := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		if err := next(ctx); err != nil {
			return errors.Join(boom, err)
		}
		return nil
	}
	c, err := tasuki.NewClient[email](pool, tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{mw}})
	require.NoError(t, err)
	_, err = c.Insert(context.Background(), email{To: "a"}, &tasuki.InsertOpts{Priority: -1})
	assert.ErrorIs(t, err, boom)
	var opt *tasuki.InvalidOptionError
	assert.ErrorAs(t, err, &opt)
}
