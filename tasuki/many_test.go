package tasuki_test

import (
	"context"
	"fmt"
	"sort"
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

func newInserter(t *testing.T, pool *pgxpool.Pool, cfg tasuki.ClientConfig) *tasuki.Inserter {
	t.Helper()
	ins, err := tasuki.NewInserter(pool, cfg)
	require.NoError(t, err)
	return ins
}

// storedJob is what a test checks of a stored job.
type storedJob struct {
	Queue, Kind, Payload string
	Priority             int
	Delayed              bool
}

// storedJobs returns every job of the test's schema, in insertion order.
func storedJobs(t *testing.T, pool *pgxpool.Pool) []storedJob {
	t.Helper()
	rows, err := pool.Query(context.Background(),
		"SELECT queue, kind, payload::text, priority, scheduled_at > now() + interval '1 minute' FROM tasuki_job ORDER BY id")
	require.NoError(t, err)
	jobs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (storedJob, error) {
		var j storedJob
		err := r.Scan(&j.Queue, &j.Kind, &j.Payload, &j.Priority, &j.Delayed)
		return j, err
	})
	require.NoError(t, err)
	return jobs
}

// wakeUps flushes ins and returns the heads of the wake-ups received
// since next began listening, by queue, as "kind/priority", sorted. A
// marker sent after the flush ends the wait: every wake-up the flush
// waited for came before it.
func wakeUps(t *testing.T, pool *pgxpool.Pool, ins *tasuki.Inserter, next func(context.Context) (map[string]any, error)) map[string][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, ins.Flush(ctx))
	require.NoError(t, db.New(pool).NotifyInsert(ctx, "marker"))
	got := map[string][]string{}
	for {
		n, err := next(ctx)
		require.NoError(t, err)
		q, _ := n["q"].(string)
		if q == "marker" {
			break
		}
		heads, _ := n["r"].([]any)
		require.NotEmpty(t, heads, "a wake-up of queue %s names where its jobs begin", q)
		for _, h := range heads {
			h := h.([]any) // [priority, microseconds, kind]
			require.Len(t, h, 3)
			got[q] = append(got[q], fmt.Sprintf("%s/%v", h[2], h[0]))
		}
	}
	for q := range got {
		sort.Strings(got[q])
	}
	return got
}

// plainPayload has no Kind method.
type plainPayload struct {
	N int `json:"n"`
}

// emptyKind's Kind method returns no kind.
type emptyKind struct{}

func (emptyKind) Kind() string { return "" }

// panicKind's Kind method reads through its nil receiver.
type panicKind struct{ name *string }

func (p panicKind) Kind() string { return *p.name }

func TestInserterMixedBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	next := listen(t, pool)
	ins := newInserter(t, pool, tasuki.ClientConfig{Queue: "outbox"})

	n, err := ins.InsertMany(ctx, []tasuki.InsertManyParams{
		// The kind of each job from its payload's Kind method, declared
		// on the value or on the pointer, given as a value or a pointer.
		{Payload: sendEmail{To: "a@example.com"}},
		{Payload: &sendSMS{Number: "+1"}, InsertOpts: &tasuki.InsertOpts{Queue: "sms", Priority: 3}},
		{Payload: sendSMS{Number: "+2"}, InsertOpts: &tasuki.InsertOpts{Queue: "sms", Priority: 3}},
		{Payload: &sendEmail{To: "b@example.com"}, InsertOpts: &tasuki.InsertOpts{Priority: 1}},
		// Or given: for a type without one, or to override it.
		{Payload: plainPayload{N: 7}, Kind: "plain", InsertOpts: &tasuki.InsertOpts{Queue: "sms"}},
		{Payload: sendEmail{To: "c@example.com"}, Kind: "send_email_v2"},
		// Scheduled later: nobody is woken for it.
		{Payload: sendSMS{Number: "+3"}, InsertOpts: &tasuki.InsertOpts{Queue: "sms", Delay: time.Hour}},
	})
	require.NoError(t, err)
	assert.Equal(t, int64(7), n)

	assert.Equal(t, []storedJob{
		{Queue: "outbox", Kind: "send_email", Payload: `{"to": "a@example.com"}`},
		{Queue: "sms", Kind: "send_sms", Payload: `{"number": "+1"}`, Priority: 3},
		{Queue: "sms", Kind: "send_sms", Payload: `{"number": "+2"}`, Priority: 3},
		{Queue: "outbox", Kind: "send_email", Payload: `{"to": "b@example.com"}`, Priority: 1},
		{Queue: "sms", Kind: "plain", Payload: `{"n": 7}`},
		{Queue: "outbox", Kind: "send_email_v2", Payload: `{"to": "c@example.com"}`},
		{Queue: "sms", Kind: "send_sms", Payload: `{"number": "+3"}`, Delayed: true},
	}, storedJobs(t, pool))

	// Each queue touched is woken, with the heads of each kind and
	// priority of its runnable jobs.
	assert.Equal(t, map[string][]string{
		"outbox": {"send_email/0", "send_email/1", "send_email_v2/0"},
		"sms":    {"plain/0", "send_sms/3"},
	}, wakeUps(t, pool, ins, next))

	// A job read back is decoded by its kind's type.
	adm, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	page, err := adm.List(ctx, tasuki.ListParams{Queue: "sms", Kind: "send_sms"})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 3)
	job, err := tasuki.Decode[sendSMS](page.Jobs[0])
	require.NoError(t, err)
	assert.Equal(t, "+3", job.Payload.Number)

	n, err = ins.InsertMany(ctx, nil)
	require.NoError(t, err)
	assert.Zero(t, n)
}

func TestInserterInsertManyTx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	next := listen(t, pool)
	ins := newInserter(t, pool, tasuki.ClientConfig{})
	batch := []tasuki.InsertManyParams{
		{Payload: sendEmail{To: "a@example.com"}, InsertOpts: &tasuki.InsertOpts{Queue: "emails"}},
		{Payload: sendSMS{Number: "+1"}, InsertOpts: &tasuki.InsertOpts{Queue: "sms", Priority: 2}},
	}

	// Rolled back: nothing lands, and nobody is woken.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	n, err := ins.InsertManyTx(ctx, tx, batch)
	require.NoError(t, err)
	assert.Equal(t, int64(2), n)
	var inTx int
	require.NoError(t, tx.QueryRow(ctx, "SELECT count(*) FROM tasuki_job").Scan(&inTx))
	assert.Equal(t, 2, inTx, "the transaction sees its jobs")
	require.NoError(t, tx.Rollback(ctx))
	assert.Empty(t, storedJobs(t, pool))
	assert.Empty(t, wakeUps(t, pool, ins, next))

	// Committed: the jobs land, and both queues are woken after the
	// commit.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		n, err = ins.InsertManyTx(ctx, tx, batch)
		return err
	})
	require.NoError(t, err)
	assert.Equal(t, int64(2), n)
	assert.Equal(t, []storedJob{
		{Queue: "emails", Kind: "send_email", Payload: `{"to": "a@example.com"}`},
		{Queue: "sms", Kind: "send_sms", Payload: `{"number": "+1"}`, Priority: 2},
	}, storedJobs(t, pool))
	assert.Equal(t, map[string][]string{
		"emails": {"send_email/0"},
		"sms":    {"send_sms/2"},
	}, wakeUps(t, pool, ins, next))
}

// One invalid job inserts nothing, and the error names it.
func TestInserterInvalidJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	ins := newInserter(t, pool, tasuki.ClientConfig{MaxPayloadBytes: 100})
	valid := tasuki.InsertManyParams{Payload: sendEmail{To: "a@example.com"}}

	for _, tc := range []struct {
		name    string
		job     tasuki.InsertManyParams
		option  string // of the *InvalidOptionError; "" for an *InvalidPayloadError
		message string
	}{
		{"no kind method", tasuki.InsertManyParams{Payload: plainPayload{N: 1}},
			"InsertManyParams[1].Kind", "the payload type tasuki_test.plainPayload has no Kind() string method: add one that returns a stable name for its jobs, or set Kind"},
		{"nil payload", tasuki.InsertManyParams{},
			"InsertManyParams[1].Kind", "the payload is nil, so it names no kind: set Kind"},
		{"kind too long", tasuki.InsertManyParams{Payload: plainPayload{}, Kind: strings.Repeat("k", tasuki.MaxKindLength+1)},
			"InsertManyParams[1].Kind", "a kind has 1 to 128 characters"},
		{"kind method gives none", tasuki.InsertManyParams{Payload: emptyKind{}},
			"InsertManyParams[1].Payload: tasuki_test.emptyKind.Kind()", "a kind has 1 to 128 characters"},
		{"kind method panics", tasuki.InsertManyParams{Payload: panicKind{}},
			"InsertManyParams[1].Kind", "has no Kind() string method"},
		{"invalid options", tasuki.InsertManyParams{Payload: sendEmail{}, InsertOpts: &tasuki.InsertOpts{Priority: -1}},
			"InsertManyParams[1].InsertOpts.Priority", "must be between 0"},
		{"invalid queue", tasuki.InsertManyParams{Payload: sendEmail{}, InsertOpts: &tasuki.InsertOpts{Queue: strings.Repeat("q", 129)}},
			"InsertManyParams[1].InsertOpts.Queue", "a queue name has 1 to 128 characters"},
		{"payload too large", tasuki.InsertManyParams{Payload: sendEmail{To: strings.Repeat("x", 200)}},
			"", "tasuki: payload 1 of 3 (InsertManyParams[1].Payload): tasuki: cannot store payload of type tasuki_test.sendEmail: it encodes to"},
		{"payload not JSON", tasuki.InsertManyParams{Payload: make(chan int), Kind: "chan"},
			"", "does not encode to JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := ins.InsertMany(ctx, []tasuki.InsertManyParams{valid, tc.job, valid})
			require.Error(t, err)
			assert.Zero(t, n)
			if tc.option != "" {
				var opt *tasuki.InvalidOptionError
				require.ErrorAs(t, err, &opt)
				assert.Equal(t, tc.option, opt.Option)
			} else {
				var payload *tasuki.InvalidPayloadError
				require.ErrorAs(t, err, &payload)
			}
			assert.Contains(t, err.Error(), tc.message)
			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			defer tx.Rollback(ctx)
			_, err = ins.InsertManyTx(ctx, tx, []tasuki.InsertManyParams{valid, tc.job, valid})
			require.Error(t, err)
			assert.Empty(t, storedJobs(t, pool))
		})
	}
}

func TestNewInserterValidation(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	for _, tc := range []struct {
		pool   *pgxpool.Pool
		cfg    tasuki.ClientConfig
		option string
	}{
		{nil, tasuki.ClientConfig{}, "pool"},
		{pool, tasuki.ClientConfig{Kind: "send_email"}, "ClientConfig.Kind"},
		{pool, tasuki.ClientConfig{Queue: strings.Repeat("q", 129)}, "ClientConfig.Queue"},
		{pool, tasuki.ClientConfig{MaxAttempts: -1}, "ClientConfig.MaxAttempts"},
		{pool, tasuki.ClientConfig{MaxPayloadBytes: -2}, "ClientConfig.MaxPayloadBytes"},
	} {
		_, err := tasuki.NewInserter(tc.pool, tc.cfg)
		var opt *tasuki.InvalidOptionError
		require.ErrorAs(t, err, &opt, tc.option)
		assert.Equal(t, tc.option, opt.Option)
	}
}
