package waker

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// listenQueues returns a function that waits for the next insert
// notification and returns its queue.
func listenQueues(t *testing.T, pool *pgxpool.Pool) func(ctx context.Context) (string, error) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	require.NoError(t, db.New(conn).ListenJobs(ctx))
	return func(ctx context.Context) (string, error) {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return "", err
		}
		var msg struct {
			Q string `json:"q"`
		}
		return msg.Q, json.Unmarshal([]byte(n.Payload), &msg)
	}
}

// committedXact commits a transaction and returns its id.
func committedXact(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	var id int64
	require.NoError(t, pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
		return tx.QueryRow(context.Background(), "SELECT pg_current_xact_id()::text::bigint").Scan(&id)
	}))
	return id
}

// A watched id this server has not reached (a transaction of another
// server, or one lost in a failover to a replica that was behind), which
// pg_xact_status refuses, does not stall the other watched transactions:
// it is woken for and dropped.
func TestUnknownXactDoesNotStallTheOthers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	next := listenQueues(t, pool)
	w := New(pool)

	var current int64
	require.NoError(t, pool.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint").Scan(&current))
	var schema string
	require.NoError(t, pool.QueryRow(ctx, "SELECT current_schema()").Scan(&schema))
	w.Watch(current+1_000_000, Target{Schema: schema, Queue: "foreign"}, Head{})

	w.Watch(committedXact(t, pool), Target{Schema: schema, Queue: "mine"}, Head{})
	waitCtx, cancel := context.WithTimeout(ctx, 15*time.Second) // bounds a broken test
	defer cancel()
	got := map[string]bool{}
	for range 2 {
		q, err := next(waitCtx)
		require.NoError(t, err, "the committed transaction's wake-up was never sent")
		got[q] = true
	}
	assert.Equal(t, map[string]bool{"mine": true, "foreign": true}, got)
	require.NoError(t, w.Flush(waitCtx))
}

// Flush reports a wake-up that could not be sent.
func TestFlushReportsFailedWakeUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig("postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=5")
	require.NoError(t, err)
	pool, err := pgxpool.NewWithConfig(ctx, cfg) // connects lazily
	require.NoError(t, err)
	defer pool.Close()
	w := New(pool)
	w.WakeSoon(Target{Schema: "s", Queue: "q"}, Head{})
	assert.Error(t, w.Flush(ctx), "Flush reported a wake-up that was never sent as done")
}

// A wake-up names, per priority, the earliest scheduled time of the jobs it
// announces, over every insert it covers: a worker that leases from where
// it stopped moves back there, for jobs whose transaction committed after
// it passed that point.
//
// Not parallel: the other tests count every wake-up of the database.
func TestWakeUpCarriesEarliestHeadPerPriority(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig)
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.NoError(t, db.New(conn).ListenJobs(ctx))

	w := New(pool)
	target := Target{Schema: "s", Queue: "heads"}
	base := time.Date(2026, 12, 2, 3, 0, 0, 123456000, time.UTC)
	w.Watch(committedXact(t, pool), target, Head{Kind: "a", Priority: 1, ScheduledAt: base.Add(3 * time.Second)})
	w.WakeSoon(target, Head{Kind: "a", Priority: 0, ScheduledAt: base.Add(2 * time.Second)})
	w.WakeSoon(target, Head{Kind: "a", Priority: 0, ScheduledAt: base})
	w.WakeSoon(target, Head{Kind: "a", Priority: 1, ScheduledAt: base.Add(5 * time.Second)})
	w.WakeSoon(target, Head{Kind: "b", Priority: 1, ScheduledAt: base.Add(time.Second)})
	require.NoError(t, w.Flush(ctx))

	want := map[headKey]int64{
		{"a", 0}: base.UnixMicro(), {"a", 1}: base.Add(3 * time.Second).UnixMicro(),
		{"b", 1}: base.Add(time.Second).UnixMicro(),
	}
	got := map[headKey]int64{}
	waitCtx, cancel := context.WithTimeout(ctx, 15*time.Second) // bounds a broken test
	defer cancel()
	for !assert.ObjectsAreEqual(want, got) {
		n, err := conn.WaitForNotification(waitCtx)
		require.NoError(t, err, "the wake-ups named %v, not %v", got, want)
		var msg struct {
			Q string          `json:"q"`
			R json.RawMessage `json:"r"`
		}
		require.NoError(t, json.Unmarshal([]byte(n.Payload), &msg))
		if msg.Q != "heads" {
			continue
		}
		for k, at := range decodeHeads(t, string(msg.R)) {
			if old, ok := got[k]; !ok || at < old {
				got[k] = at
			}
		}
	}
}

// Wake-ups asked together are merged into one per target, with the
// earliest head of each priority.
func TestMergeKeepsEarliestHeadPerPriority(t *testing.T) {
	base := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	a, b := Target{Schema: "s", Queue: "a"}, Target{Schema: "s", Queue: "b"}
	dst := map[Target]heads{}
	merge(dst, a, heads{{"", 0}: base.Add(time.Second), {"", 2}: base})
	merge(dst, a, heads{{"", 0}: base, {"", 2}: base.Add(time.Second), {"", 7}: base.Add(time.Hour)})
	merge(dst, b, heads{{"", 0}: base.Add(time.Minute)})
	assert.Equal(t, map[Target]heads{
		a: {{"", 0}: base, {"", 2}: base, {"", 7}: base.Add(time.Hour)},
		b: {{"", 0}: base.Add(time.Minute)},
	}, dst)
	assert.Equal(t, map[headKey]int64{{"", 0}: base.Add(time.Minute).UnixMicro()}, decodeHeads(t, dst[b].json()))
}

// decodeHeads decodes a wake-up's "r" field.
func decodeHeads(t *testing.T, r string) map[headKey]int64 {
	t.Helper()
	var raw [][3]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(r), &raw))
	out := make(map[headKey]int64)
	for _, h := range raw {
		var k headKey
		var at int64
		require.NoError(t, json.Unmarshal(h[0], &k.priority))
		require.NoError(t, json.Unmarshal(h[1], &at))
		require.NoError(t, json.Unmarshal(h[2], &k.kind))
		out[k] = at
	}
	return out
}
