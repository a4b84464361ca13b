package tasukitest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/tasukitest"
)

// Every failure names what was wanted and what was found, and stops the
// test; the helpers then return nil.

func testFailNoJobOfKind(t *testing.T, pool *pgxpool.Pool) {
	ctx := tasukitest.WithScope(context.Background(), t)
	neighbours(t, pool, same, SendSMS{Number: "1"})
	ins := newInserter(t, pool, scoped)
	_, err := ins.InsertMany(ctx, []tasuki.InsertManyParams{{Payload: SendSMS{Number: "1"}}, {Payload: Resize{}}})
	require.NoError(t, err)
	jobs := tasukitest.RequireManyInserted(ctx, t, pool, []tasukitest.Want{{Kind: "send_sms"}, {Kind: "resize"}})

	rec := &recorder{}
	require.Nil(t, tasukitest.RequireInserted[SendEmail](ctx, rec, pool, &tasukitest.Want{Payload: SendEmail{To: "a"}}))
	containsAll(t, rec.failed(t),
		`tasukitest: RequireInserted: want exactly one job of kind "send_email" with payload containing {"to":"a"}, in test scope "`+tasukitest.ScopeOfForTest(ctx)+`"`,
		`found no job of kind "send_email".`,
		fmt.Sprintf(`Jobs of other kinds in test scope %q: 2: %d (send_sms), %d (resize).`, tasukitest.ScopeOfForTest(ctx), jobs[0].ID, jobs[1].ID))

	// In a transaction, too.
	tx := begin(t, pool)
	_, err = ins.InsertManyTx(ctx, tx, []tasuki.InsertManyParams{{Payload: SendSMS{Number: "1"}}})
	require.NoError(t, err)
	rec = &recorder{}
	tasukitest.RequireInsertedTx[SendEmail](ctx, rec, tx, nil)
	containsAll(t, rec.failed(t), `found no job of kind "send_email". Jobs of other kinds inserted by this transaction: 1: `, " (send_sms).")
}

func testFailNoneMatching(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	neighbours(t, pool, SendEmail{To: "a@example.com"})
	client := newClient[SendEmail](t, pool, tasuki.ClientConfig{})
	tx := begin(t, pool)
	far, err := client.InsertTx(ctx, tx, SendEmail{To: "b@example.com", Subject: "x"}, &tasuki.InsertOpts{Queue: "other", Priority: 4})
	require.NoError(t, err)
	near, err := client.InsertTx(ctx, tx, SendEmail{To: "b@example.com", Subject: "hi"}, &tasuki.InsertOpts{Queue: "mail"})
	require.NoError(t, err)
	rec := &recorder{}
	one := 1
	require.Nil(t, tasukitest.RequireInsertedTx[SendEmail](ctx, rec, tx, &tasukitest.Want{
		Payload: SendEmail{To: "a@example.com"}, Queue: "mail", Priority: &one}))
	containsAll(t, rec.failed(t),
		`want exactly one job of kind "send_email" with payload containing {"to":"a@example.com"}, queue "mail", priority 1, inserted by this transaction; found none matching, of 2 of the kind: `,
		fmt.Sprintf("%d (send_email), %d (send_email)", far.ID, near.ID),
		fmt.Sprintf("The nearest, job %d (kind \"send_email\", queue \"mail\", status pending, priority 0,", near.ID),
		`payload: want one containing {"to":"a@example.com"}, have {"to": "b@example.com", "subject": "hi"}`,
		"priority: want 1, have 0")
	require.NotContains(t, rec.messages[0], "queue: want")

	rec = &recorder{}
	tasukitest.RequireInsertedTx[SendEmail](ctx, rec, tx, &tasukitest.Want{Status: tasuki.StatusCompleted, MaxAttempts: 2,
		Metadata: map[string]any{"k": "v"}})
	containsAll(t, rec.failed(t), "status: want completed, have pending", "max attempts: want 2, have 25",
		`metadata: want one containing {"k":"v"}, have {}`)
}

func testFailMoreThanOne(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	client := newClient[SendEmail](t, pool, tasuki.ClientConfig{})
	tx := begin(t, pool)
	a, err := client.InsertTx(ctx, tx, same, nil)
	require.NoError(t, err)
	b, err := client.InsertTx(ctx, tx, same, nil)
	require.NoError(t, err)
	_, err = client.InsertTx(ctx, tx, SendEmail{To: "other"}, nil)
	require.NoError(t, err)
	rec := &recorder{}
	require.Nil(t, tasukitest.RequireInsertedTx[SendEmail](ctx, rec, tx, &tasukitest.Want{Payload: same}))
	containsAll(t, rec.failed(t), "found 2 matching, of 3 of the kind:",
		fmt.Sprintf("job %d (kind \"send_email\"", a.ID), fmt.Sprintf("job %d (kind \"send_email\"", b.ID),
		"Narrow the want (Payload, Queue, …), or assert them all with RequireManyInserted.")
}

func testFailNotInserted(t *testing.T, pool *pgxpool.Pool) {
	ctx := tasukitest.WithScope(context.Background(), t)
	neighbours(t, pool, same)
	client := newClient[SendEmail](t, pool, scoped)
	job, err := client.Insert(ctx, same, nil)
	require.NoError(t, err)
	tasukitest.RequireNotInserted[SendEmail](ctx, t, pool, &tasukitest.Want{Queue: "elsewhere"})
	rec := &recorder{}
	tasukitest.RequireNotInserted[SendEmail](ctx, rec, pool, &tasukitest.Want{Payload: map[string]any{"subject": "hello"}})
	containsAll(t, rec.failed(t), `RequireNotInserted: want no job of kind "send_email" with payload containing {"subject":"hello"}, in test scope`,
		"; found 1:", fmt.Sprintf("job %d (kind \"send_email\"", job.ID))

	tx := begin(t, pool)
	_, err = client.InsertTx(ctx, tx, same, nil)
	require.NoError(t, err)
	rec = &recorder{}
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, rec, tx, nil)
	containsAll(t, rec.failed(t), `RequireNotInsertedTx: want no job of kind "send_email", inserted by this transaction; found 1:`)
}

func testFailMany(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	neighbours(t, pool, same, SendSMS{Number: "1"})
	tx := begin(t, pool)
	_, err := newInserter(t, pool, tasuki.ClientConfig{}).InsertManyTx(ctx, tx, []tasuki.InsertManyParams{
		{Payload: SendSMS{Number: "1"}}, {Payload: same}, {Payload: SendSMS{Number: "2"}},
	})
	require.NoError(t, err)
	jobs := tasukitest.RequireManyInsertedTx(ctx, t, tx, []tasukitest.Want{{Kind: "send_sms"}, {Kind: "send_email"}, {Kind: "send_sms"}})

	// Out of order, one missing.
	rec := &recorder{}
	require.Nil(t, tasukitest.RequireManyInsertedTx(ctx, rec, tx, []tasukitest.Want{
		{Payload: SendSMS{Number: "1"}}, {Payload: SendSMS{Number: "2"}}, {Payload: SendEmail{To: same.To}}, {Kind: "send_sms"},
	}))
	containsAll(t, rec.failed(t),
		`RequireManyInsertedTx: want 4 jobs of kinds ["send_sms" "send_email"], inserted by this transaction, in this order; found 3 of those kinds:`,
		fmt.Sprintf("\t1: job %d matches", jobs[0].ID),
		fmt.Sprintf("\t2: job %d (kind \"send_email\"", jobs[1].ID),
		`does not match the want of kind "send_sms" with payload containing {"number":"2"}:`,
		`kind: want "send_sms", have "send_email"`,
		`payload: want one containing {"number":"2"}, have {"to": "same@example.com", "subject": "hello"}`,
		fmt.Sprintf("\t3: job %d (kind \"send_sms\"", jobs[2].ID),
		"\t4: missing: want kind \"send_sms\"")

	// One more than wanted.
	rec = &recorder{}
	tasukitest.RequireManyInsertedTx(ctx, rec, tx, []tasukitest.Want{{Kind: "send_sms"}})
	containsAll(t, rec.failed(t), "want 1 job of kinds [\"send_sms\"]", "found 2 of those kinds:",
		fmt.Sprintf("\t1: job %d matches", jobs[0].ID), fmt.Sprintf("\t2: unwanted: job %d (kind \"send_sms\"", jobs[2].ID))
}

type unencodable struct {
	C chan int `json:"c"`
}

func (unencodable) Kind() string { return "send_email" }

func testFailArguments(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	tx := begin(t, pool)
	for _, c := range []struct {
		want *tasukitest.Want
		msg  string
	}{
		{&tasukitest.Want{Status: "done"}, `RequireInsertedTx: Want.Status "done" is not a job status: use one of [pending running completed failed canceled], or leave it empty for any`},
		{&tasukitest.Want{ScheduledAfter: time.Unix(10, 0), ScheduledBefore: time.Unix(5, 0)},
			"Want.ScheduledAfter (1970-01-01T00:00:10Z) is after ScheduledBefore (1970-01-01T00:00:05Z): no job can match; swap them"},
		{&tasukitest.Want{Payload: unencodable{}}, "Want.Payload (tasukitest_test.unencodable) does not encode as JSON: json: unsupported type: chan int"},
		{&tasukitest.Want{Metadata: map[string]any{"f": func() {}}}, "Want.Metadata does not encode as JSON"},
		{&tasukitest.Want{ScheduledAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, "Want: a scheduled time cannot be encoded"},
		{&tasukitest.Want{Kind: string([]byte{0xff})}, "Want.Kind"},
	} {
		rec := &recorder{}
		require.Nil(t, tasukitest.RequireInsertedTx[SendEmail](ctx, rec, tx, c.want))
		containsAll(t, rec.failed(t), c.msg)
		rec = &recorder{}
		tasukitest.RequireNotInsertedTx[SendEmail](ctx, rec, tx, c.want)
		containsAll(t, rec.failed(t), "RequireNotInsertedTx: ")
		rec = &recorder{}
		want := *c.want
		if want.Kind == "" {
			want.Kind = "send_email"
		}
		tasukitest.RequireManyInsertedTx(ctx, rec, tx, []tasukitest.Want{{Kind: "send_email"}, want})
		containsAll(t, rec.failed(t), "RequireManyInsertedTx: ", "wants[1]")
	}

	rec := &recorder{}
	tasukitest.RequireInserted[SendEmail](ctx, rec, nil, nil)
	containsAll(t, rec.failed(t), "RequireInserted: the database is nil: pass the pool, connection or transaction the code under test inserts with")
	rec = &recorder{}
	tasukitest.RequireInserted[SendEmail](ctx, rec, (*pgxpool.Pool)(nil), nil)
	containsAll(t, rec.failed(t), "RequireInserted: the database is nil")
	rec = &recorder{}
	tasukitest.RequireInsertedTx[SendEmail](ctx, rec, nil, nil)
	containsAll(t, rec.failed(t), "RequireInsertedTx: the database is nil")
	rec = &recorder{}
	tasukitest.RequireManyInserted(ctx, rec, (*pgx.Conn)(nil), []tasukitest.Want{{Kind: "a"}})
	containsAll(t, rec.failed(t), "RequireManyInserted: the database is nil")
	rec = &recorder{}
	tasukitest.RequireManyInsertedTx(ctx, rec, tx, nil)
	containsAll(t, rec.failed(t), "RequireManyInsertedTx: no wants: name the jobs you expect; to require that there are none, use RequireNotInserted")
}

// A job of the kind whose payload does not decode into T.
func testFailUndecodable(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	tx := begin(t, pool)
	_, err := newInserter(t, pool, tasuki.ClientConfig{}).InsertManyTx(ctx, tx, []tasuki.InsertManyParams{
		{Kind: "send_email", Payload: map[string]any{"to": 5}},
	})
	require.NoError(t, err)
	rec := &recorder{}
	require.Nil(t, tasukitest.RequireInsertedTx[SendEmail](ctx, rec, tx, nil))
	containsAll(t, rec.failed(t), "; it is job ", "but: tasuki: payload of job ", "does not decode into tasukitest_test.SendEmail")
}

// A statement that fails: here, in a transaction already failed.
func testFailQueryError(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	tx := begin(t, pool)
	_, err := tx.Exec(ctx, "SELECT 1/0")
	require.Error(t, err)
	rec := &recorder{}
	tasukitest.RequireInsertedTx[SendEmail](ctx, rec, tx, nil)
	containsAll(t, rec.failed(t), "tasukitest: RequireInsertedTx: read the jobs: ", "current transaction is aborted")
}

func testFailDifferences(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	tx := begin(t, pool)
	runAt := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	long := strings.Repeat("x", 400)
	_, err := newClient[SendEmail](t, pool, tasuki.ClientConfig{}).InsertTx(ctx, tx, SendEmail{To: long}, &tasuki.InsertOpts{Queue: "q", RunAt: runAt})
	require.NoError(t, err)

	rec := &recorder{}
	tasukitest.RequireInsertedTx[SendEmail](ctx, rec, tx, &tasukitest.Want{Queue: "other", ScheduledAfter: runAt.Add(time.Second)})
	msg := rec.failed(t)
	containsAll(t, msg, `queue: want "other", have "q"`,
		"scheduled at: want at or after 2030-01-02T03:04:06Z, have 2030-01-02T03:04:05Z",
		`payload {"to": "`+long[:292]+"…, metadata {}")
	require.NotContains(t, msg, long)

	rec = &recorder{}
	tasukitest.RequireInsertedTx[SendEmail](ctx, rec, tx, &tasukitest.Want{ScheduledBefore: runAt.Add(-time.Second)})
	containsAll(t, rec.failed(t), "scheduled at: want at or before 2030-01-02T03:04:04Z, have 2030-01-02T03:04:05Z")
}

// Of many jobs of other kinds, a failure lists the first 20.
func testFailManyOtherKinds(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	tx := begin(t, pool)
	params := make([]tasuki.InsertManyParams, 25)
	for i := range params {
		params[i] = tasuki.InsertManyParams{Payload: SendSMS{Number: fmt.Sprint(i)}}
	}
	_, err := newInserter(t, pool, tasuki.ClientConfig{}).InsertManyTx(ctx, tx, params)
	require.NoError(t, err)
	wants := make([]tasukitest.Want, 25)
	for i := range wants {
		wants[i].Kind = "send_sms"
	}
	jobs := tasukitest.RequireManyInsertedTx(ctx, t, tx, wants)
	rec := &recorder{}
	tasukitest.RequireInsertedTx[SendEmail](ctx, rec, tx, nil)
	msg := rec.failed(t)
	containsAll(t, msg, fmt.Sprintf("Jobs of other kinds inserted by this transaction: more than 20; the first 20: %d (send_sms), ", jobs[0].ID),
		fmt.Sprintf(", %d (send_sms).", jobs[19].ID))
	require.NotContains(t, msg, fmt.Sprintf("%d (send_sms)", jobs[20].ID))
}
