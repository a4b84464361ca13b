package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/tasukitest"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// An order inserts its charge and its email in the order's transaction:
// asserted on that transaction's own jobs alone.
func TestPlaceOrderInsertsChargeAndEmail(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	shop, err := NewShop(pool, quiet())
	require.NoError(t, err)
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)

	require.NoError(t, shop.PlaceOrder(ctx, tx, 7, "ann@example.com", 1_999))

	tasukitest.RequireManyInsertedTx(ctx, t, tx, []tasukitest.Want{
		{Payload: ChargeCard{Order: 7, Cents: 1_999}, Queue: "payments", MaxAttempts: 50},
		// A map names only the fields that matter; a struct compares its
		// zero fields too (unless they are omitempty).
		{Kind: "send_email", Payload: map[string]any{"to": "ann@example.com"}},
	})
	tasukitest.RequireNotInsertedTx[NightlyReport](ctx, t, tx, nil)
}

// A declined card cancels its charge instead of retrying it: run through
// the worker's real path (middleware, outcome recorded), without starting
// the worker.
func TestDeclinedChargeIsCanceled(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	shop, err := NewShop(pool, quiet())
	require.NoError(t, err)
	w, err := shop.NewWorker(nil, 24*time.Hour)
	require.NoError(t, err)
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return shop.PlaceOrder(ctx, tx, 8, "bob@example.com", 250_000) }))

	charge := tasukitest.RequireInserted[ChargeCard](ctx, t, pool, &tasukitest.Want{Payload: map[string]any{"order": 8}})
	res := tasukitest.Work(ctx, t, w, charge.ID)
	require.Equal(t, tasuki.EventCanceled, res.Event)
	require.ErrorIs(t, res.Err, errDeclined)
	require.Equal(t, tasuki.StatusCanceled, res.Job.Status)
}
