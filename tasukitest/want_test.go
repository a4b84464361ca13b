package tasukitest_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/tasukitest"
)

func testWantFields(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	client := newClient[SendEmail](t, pool, tasuki.ClientConfig{})
	tx := begin(t, pool)
	for _, p := range []int{0, 1, 2} {
		_, err := client.InsertTx(ctx, tx, SendEmail{To: "x"}, &tasuki.InsertOpts{Priority: p, MaxAttempts: 5 + p, Queue: []string{"q0", "q1", "q2"}[p],
			Metadata: map[string]any{"p": p, "tags": []string{"a", "b"}[:p]}})
		require.NoError(t, err)
	}
	for p := range 3 {
		prio := p
		for _, want := range []*tasukitest.Want{
			{Priority: &prio},
			{MaxAttempts: 5 + p},
			{Queue: []string{"q0", "q1", "q2"}[p]},
			{Metadata: map[string]any{"p": p}},
			{Metadata: map[string]any{"p": float64(p)}}, // numbers compare by value
		} {
			job := tasukitest.RequireInsertedTx[SendEmail](ctx, t, tx, want)
			require.Equal(t, p, job.Priority)
		}
	}
	// Arrays contain their elements, in any order.
	tasukitest.RequireInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{Metadata: map[string]any{"tags": []string{"b"}}})
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{Metadata: map[string]any{"tags": []string{"c"}}})
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{Status: tasuki.StatusCompleted})
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{Metadata: map[string]any{"p": 3}})
	zero := 0
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{Priority: &zero, Queue: "q1"})
	rec := &recorder{}
	tasukitest.RequireInsertedTx[SendEmail](ctx, rec, tx, &tasukitest.Want{Status: tasuki.StatusPending})
	containsAll(t, rec.failed(t), "found 3 matching, of 3 of the kind")
}

func testWantPayload(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	neighbours(t, pool, Resize{Width: 10, Height: 20}, SendEmail{To: "a"})
	tx := begin(t, pool)
	_, err := newClient[Resize](t, pool, tasuki.ClientConfig{}).InsertTx(ctx, tx, Resize{Width: 10, Height: 20}, nil)
	require.NoError(t, err)
	_, err = newClient[SendEmail](t, pool, tasuki.ClientConfig{}).InsertTx(ctx, tx, SendEmail{To: "a", Subject: "s"}, nil)
	require.NoError(t, err)

	tasukitest.RequireInsertedTx[Resize](ctx, t, tx, &tasukitest.Want{Payload: Resize{Width: 10, Height: 20}})
	tasukitest.RequireInsertedTx[Resize](ctx, t, tx, &tasukitest.Want{Payload: map[string]any{"width": 10}})
	tasukitest.RequireInsertedTx[Resize](ctx, t, tx, &tasukitest.Want{Payload: json.RawMessage(`{"height": 20.0}`)})
	// Height has no omitempty: its zero is compared.
	tasukitest.RequireNotInsertedTx[Resize](ctx, t, tx, &tasukitest.Want{Payload: Resize{Width: 10}})
	// Subject has omitempty: left out, it is not compared.
	tasukitest.RequireInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{Payload: SendEmail{To: "a"}})
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{Payload: SendEmail{To: "a", Subject: "other"}})
}

func testWantSchedule(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	client := newClient[SendEmail](t, pool, tasuki.ClientConfig{})
	tx := begin(t, pool)
	runAt := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.FixedZone("x", 3600))
	_, err := client.InsertTx(ctx, tx, SendEmail{To: "at"}, &tasuki.InsertOpts{RunAt: runAt})
	require.NoError(t, err)
	// The bounds of a delayed job, by the database's clock.
	clock := func() time.Time {
		var now time.Time
		require.NoError(t, tx.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now))
		return now
	}
	before := clock()
	_, err = client.InsertTx(ctx, tx, SendEmail{To: "delay"}, &tasuki.InsertOpts{Delay: time.Hour})
	require.NoError(t, err)
	after := clock()

	tasukitest.RequireInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{ScheduledAt: runAt, Payload: SendEmail{To: "at"}})
	tasukitest.RequireInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{ScheduledAt: runAt.UTC().Truncate(time.Microsecond)})
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{ScheduledAt: runAt.Add(time.Microsecond)})
	job := tasukitest.RequireInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{
		ScheduledAfter: before.Add(time.Hour), ScheduledBefore: after.Add(time.Hour)})
	require.Equal(t, "delay", job.Payload.To)
	tasukitest.RequireInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{ScheduledAfter: runAt, Payload: SendEmail{To: "at"}})
	tasukitest.RequireInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{ScheduledBefore: runAt, Payload: SendEmail{To: "at"}})
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{ScheduledAfter: runAt.Add(time.Microsecond), Payload: SendEmail{To: "at"}})

	rec := &recorder{}
	tasukitest.RequireInsertedTx[SendEmail](ctx, rec, tx, &tasukitest.Want{ScheduledAt: runAt.Add(time.Second), Payload: SendEmail{To: "at"}})
	containsAll(t, rec.failed(t), "scheduled at: want 2031-05-06T06:08:10.123456Z, have 2031-05-06T06:08:09.123456Z")
}

// A payload type without a Kind method names its kind in the Want, as in
// the client's configuration.
func testWantKindWithoutMethod(t *testing.T, pool *pgxpool.Pool) {
	type charge struct {
		Cents int `json:"cents"`
	}
	ctx := context.Background()
	tx := begin(t, pool)
	_, err := newClient[charge](t, pool, tasuki.ClientConfig{Kind: "charge"}).InsertTx(ctx, tx, charge{Cents: 5}, nil)
	require.NoError(t, err)
	job := tasukitest.RequireInsertedTx[charge](ctx, t, tx, &tasukitest.Want{Kind: "charge"})
	require.Equal(t, 5, job.Payload.Cents)
	tasukitest.RequireManyInsertedTx(ctx, t, tx, []tasukitest.Want{{Kind: "charge", Payload: charge{Cents: 5}}})

	rec := &recorder{}
	require.Nil(t, tasukitest.RequireInsertedTx[charge](ctx, rec, tx, nil))
	containsAll(t, rec.failed(t), "RequireInsertedTx:", "has no Kind() string method", "set Want.Kind")
	rec = &recorder{}
	tasukitest.RequireManyInsertedTx(ctx, rec, tx, []tasukitest.Want{{Kind: "charge"}, {Payload: charge{Cents: 5}}})
	containsAll(t, rec.failed(t), "wants[1] names no kind: its Payload (tasukitest_test.charge) has no Kind() string method; set wants[1].Kind")
}
