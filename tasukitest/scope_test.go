package tasukitest_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/tasukitest"
)

func testScopeOwnJobsOnly(t *testing.T, pool *pgxpool.Pool) {
	ctx := tasukitest.WithScope(context.Background(), t)
	neighbours(t, pool, same, SendSMS{Number: "1"})
	client := newClient[SendEmail](t, pool, scoped)
	inserted, err := client.Insert(ctx, same, &tasuki.InsertOpts{Metadata: map[string]any{"tenant": "a"}})
	require.NoError(t, err)
	neighbours(t, pool, same, SendSMS{Number: "1"})

	job := tasukitest.RequireInserted[SendEmail](ctx, t, pool, nil)
	require.Equal(t, inserted.ID, job.ID)
	var md map[string]any
	require.NoError(t, json.Unmarshal(job.Metadata, &md))
	require.Equal(t, "a", md["tenant"])
	require.Contains(t, md[tasukitest.ScopeKey], t.Name()+"#")
	tasukitest.RequireInserted[SendEmail](ctx, t, pool, &tasukitest.Want{Payload: same, Metadata: map[string]any{"tenant": "a"}})
	tasukitest.RequireNotInserted[SendSMS](ctx, t, pool, nil)

	// A context derived from the scope's is in it; a new scope is another.
	derived, cancel := context.WithCancel(ctx)
	defer cancel()
	tasukitest.RequireInserted[SendEmail](derived, t, pool, nil)
	tasukitest.RequireNotInserted[SendEmail](tasukitest.WithScope(ctx, t), t, pool, nil)
	// An insert without the scope's context is not in it.
	_, err = client.Insert(context.Background(), same, nil)
	require.NoError(t, err)
	tasukitest.RequireInserted[SendEmail](ctx, t, pool, nil)
}

func testScopeInsertMany(t *testing.T, pool *pgxpool.Pool) {
	ctx := tasukitest.WithScope(context.Background(), t)
	neighbours(t, pool, same, SendSMS{Number: "1"}, Resize{Width: 1, Height: 2})
	ins := newInserter(t, pool, scoped)
	_, err := ins.InsertMany(ctx, []tasuki.InsertManyParams{
		{Payload: same}, {Payload: Resize{Width: 1, Height: 2}}, {Payload: SendSMS{Number: "1"}}, {Payload: same},
	})
	require.NoError(t, err)
	jobs := tasukitest.RequireManyInserted(ctx, t, pool, []tasukitest.Want{
		{Payload: SendEmail{To: same.To}}, {Payload: &SendSMS{Number: "1"}}, {Kind: "send_email", Queue: "default"},
	})
	require.Equal(t, []string{"send_email", "send_sms", "send_email"}, kindsOf(jobs))
	require.Less(t, jobs[0].ID, jobs[1].ID)
	require.Less(t, jobs[1].ID, jobs[2].ID)
}

// A job inserted in an open transaction with a scope: the transaction
// sees it, the pool does not yet.
func testScopeInTx(t *testing.T, pool *pgxpool.Pool) {
	ctx := tasukitest.WithScope(context.Background(), t)
	neighbours(t, pool, same)
	client := newClient[SendEmail](t, pool, scoped)
	tx := begin(t, pool)
	_, err := client.InsertTx(ctx, tx, same, nil)
	require.NoError(t, err)
	tasukitest.RequireInserted[SendEmail](ctx, t, tx, nil)
	tasukitest.RequireInsertedTx[SendEmail](ctx, t, tx, nil)
	tasukitest.RequireNotInserted[SendEmail](ctx, t, pool, nil)
	require.NoError(t, tx.Commit(ctx))
	tasukitest.RequireInserted[SendEmail](ctx, t, pool, nil)
}

// Without a scope, the assertions see every job: for a database of the
// test's own.
func testScopeNoScopeInContext(t *testing.T, _ *pgxpool.Pool) {
	private := testdb.New(t)
	ctx := context.Background()
	client := newClient[SendEmail](t, private, scoped)
	for _, c := range []context.Context{ctx, tasukitest.WithScope(ctx, t), tasukitest.WithScope(ctx, t)} {
		_, err := client.Insert(c, same, nil)
		require.NoError(t, err)
	}
	jobs := tasukitest.RequireManyInserted(ctx, t, private, []tasukitest.Want{{Payload: same}, {Payload: same}, {Payload: same}})
	require.Len(t, jobs, 3)
	rec := &recorder{}
	tasukitest.RequireInserted[SendEmail](ctx, rec, private, nil)
	containsAll(t, rec.failed(t), "in the whole database (ctx carries no tasukitest.WithScope scope)", "found 3 matching, of 3 of the kind")
}
