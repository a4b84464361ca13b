package tasukitest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/tasukitest"
)

var same = SendEmail{To: "same@example.com", Subject: "hello"}

func testTxOwnJobsOnly(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	neighbours(t, pool, same, SendSMS{Number: "1"})
	client := newClient[SendEmail](t, pool, tasuki.ClientConfig{})
	tx := begin(t, pool)
	inserted, err := client.InsertTx(ctx, tx, same, &tasuki.InsertOpts{Queue: "mail", Priority: 2, MaxAttempts: 3,
		Metadata: map[string]any{"tenant": "a", "n": 1}})
	require.NoError(t, err)
	neighbours(t, pool, same, SendSMS{Number: "1"})

	job := tasukitest.RequireInsertedTx[SendEmail](ctx, t, tx, nil)
	require.Equal(t, inserted.ID, job.ID)
	require.Equal(t, same, job.Payload)
	priority := 2
	job = tasukitest.RequireInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{
		Payload: SendEmail{To: same.To}, Queue: "mail", Priority: &priority, MaxAttempts: 3,
		Status: tasuki.StatusPending, Metadata: map[string]any{"tenant": "a"},
	})
	require.Equal(t, inserted.ID, job.ID)
	tasukitest.RequireNotInsertedTx[SendSMS](ctx, t, tx, nil)
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{Queue: "default"})
	// A test scope in ctx changes nothing in a transaction's scope.
	tasukitest.RequireInsertedTx[SendEmail](tasukitest.WithScope(ctx, t), t, tx, nil)
}

func testTxNothingInserted(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	neighbours(t, pool, same)
	tx := begin(t, pool)
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, t, tx, nil)
	rec := &recorder{}
	require.Nil(t, tasukitest.RequireInsertedTx[SendEmail](ctx, rec, tx, nil))
	containsAll(t, rec.failed(t), `RequireInsertedTx: want exactly one job of kind "send_email", inserted by this transaction`,
		`found no job of kind "send_email"`, "There is no job at all inserted by this transaction.")
	// Asking assigned the transaction no xid.
	var xid *string
	require.NoError(t, tx.QueryRow(ctx, "SELECT pg_current_xact_id_if_assigned()::text").Scan(&xid))
	require.Nil(t, xid)
}

func testTxSavepoints(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	neighbours(t, pool, SendEmail{To: "a"}, SendEmail{To: "b"}, SendEmail{To: "c"}, SendEmail{To: "d"})
	client := newClient[SendEmail](t, pool, tasuki.ClientConfig{})
	insert := func(tx pgx.Tx, to string) int64 {
		t.Helper()
		job, err := client.InsertTx(ctx, tx, SendEmail{To: to}, nil)
		require.NoError(t, err)
		return job.ID
	}
	want := func(tos ...string) []tasukitest.Want {
		w := make([]tasukitest.Want, len(tos))
		for i, to := range tos {
			w[i] = tasukitest.Want{Payload: SendEmail{To: to}}
		}
		return w
	}
	tx := begin(t, pool)
	a := insert(tx, "a")

	sp1, err := tx.Begin(ctx) // SAVEPOINT
	require.NoError(t, err)
	b := insert(sp1, "b")
	sp2, err := sp1.Begin(ctx)
	require.NoError(t, err)
	c := insert(sp2, "c")
	jobs := tasukitest.RequireManyInsertedTx(ctx, t, sp2, want("a", "b", "c"))
	require.Equal(t, []int64{a, b, c}, idsOf(jobs))
	require.NoError(t, sp2.Commit(ctx)) // RELEASE
	require.NoError(t, sp1.Commit(ctx))
	jobs = tasukitest.RequireManyInsertedTx(ctx, t, tx, want("a", "b", "c"))
	require.Equal(t, []int64{a, b, c}, idsOf(jobs))

	sp3, err := tx.Begin(ctx)
	require.NoError(t, err)
	insert(sp3, "d")
	tasukitest.RequireInsertedTx[SendEmail](ctx, t, sp3, &tasukitest.Want{Payload: SendEmail{To: "d"}})
	require.NoError(t, sp3.Rollback(ctx)) // ROLLBACK TO SAVEPOINT
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, t, tx, &tasukitest.Want{Payload: SendEmail{To: "d"}})
	jobs = tasukitest.RequireManyInsertedTx(ctx, t, tx, want("a", "b", "c"))
	require.Equal(t, []int64{a, b, c}, idsOf(jobs))
}

// More subtransactions than a backend's cache of them holds (64).
func testTxManySavepoints(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	client := newClient[SendEmail](t, pool, tasuki.ClientConfig{})
	tx := begin(t, pool)
	var want []tasukitest.Want
	var ids []int64
	for i := range 70 {
		sp, err := tx.Begin(ctx)
		require.NoError(t, err)
		job, err := client.InsertTx(ctx, sp, SendEmail{To: fmt.Sprint(i)}, nil)
		require.NoError(t, err)
		require.NoError(t, sp.Commit(ctx))
		ids = append(ids, job.ID)
		want = append(want, tasukitest.Want{Kind: "send_email", Payload: map[string]any{"to": fmt.Sprint(i)}})
	}
	neighbours(t, pool, SendEmail{To: "0"}, SendEmail{To: "69"})
	require.Equal(t, ids, idsOf(tasukitest.RequireManyInsertedTx(ctx, t, tx, want)))
}

// A repeatable read transaction reads one snapshot, taken before its
// savepoints got their xids.
func testTxRepeatableRead(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	client := newClient[SendEmail](t, pool, tasuki.ClientConfig{})
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, t, tx, nil) // takes the snapshot
	neighbours(t, pool, same)
	sp, err := tx.Begin(ctx)
	require.NoError(t, err)
	job, err := client.InsertTx(ctx, sp, same, nil)
	require.NoError(t, err)
	require.Equal(t, job.ID, tasukitest.RequireInsertedTx[SendEmail](ctx, t, sp, nil).ID)
	require.NoError(t, sp.Commit(ctx))
	require.Equal(t, job.ID, tasukitest.RequireInsertedTx[SendEmail](ctx, t, tx, nil).ID)
}

// A job another transaction inserted and committed is not this one's,
// even when that transaction was this test's own.
func testTxCommittedElsewhere(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	client := newClient[SendEmail](t, pool, tasuki.ClientConfig{})
	tx := begin(t, pool)
	later := begin(t, pool)
	_, err := client.InsertTx(ctx, later, same, nil)
	require.NoError(t, err)
	tasukitest.RequireInsertedTx[SendEmail](ctx, t, later, nil)
	require.NoError(t, later.Commit(ctx))
	// tx began first, so the job was created after it began; it sees the
	// job (read committed), but did not insert it.
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, t, tx, nil)
	_, err = client.InsertTx(ctx, tx, SendEmail{To: "mine"}, nil)
	require.NoError(t, err)
	tasukitest.RequireInsertedTx[SendEmail](ctx, t, tx, nil)
}

// A job the transaction only changed is not one it inserted.
func testTxChangedNotInserted(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	client := newClient[SendEmail](t, pool, tasuki.ClientConfig{})
	other, err := client.Insert(ctx, same, nil)
	require.NoError(t, err)
	tx := begin(t, pool)
	tag, err := tx.Exec(ctx, "UPDATE tasuki_job SET priority = 7 WHERE id = $1", other.ID)
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, t, tx, nil)
}

// Jobs inserted with COPY, through the middleware path and without.
func testTxInsertMany(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	neighbours(t, pool, same, SendSMS{Number: "1"}, Resize{Width: 1, Height: 2})
	for _, cfg := range []tasuki.ClientConfig{{}, scoped} {
		tx := begin(t, pool)
		_, err := newInserter(t, pool, cfg).InsertManyTx(ctx, tx, []tasuki.InsertManyParams{
			{Payload: SendSMS{Number: "1"}}, {Payload: same}, {Payload: Resize{Width: 1, Height: 2}}, {Payload: SendSMS{Number: "2"}},
		})
		require.NoError(t, err)
		jobs := tasukitest.RequireManyInsertedTx(ctx, t, tx, []tasukitest.Want{
			{Payload: SendSMS{Number: "1"}}, {Kind: "send_email"}, {Payload: SendSMS{Number: "2"}},
		})
		require.Equal(t, []string{"send_sms", "send_email", "send_sms"}, kindsOf(jobs))
		email, err := tasuki.Decode[SendEmail](jobs[1])
		require.NoError(t, err)
		require.Equal(t, same, email.Payload)
		require.NoError(t, tx.Rollback(ctx))
	}
}

func idsOf(jobs []*tasuki.Job[json.RawMessage]) []int64 {
	ids := make([]int64, len(jobs))
	for i, j := range jobs {
		ids[i] = j.ID
	}
	return ids
}

func kindsOf(jobs []*tasuki.Job[json.RawMessage]) []string {
	kinds := make([]string, len(jobs))
	for i, j := range jobs {
		kinds[i] = j.Kind
	}
	return kinds
}
