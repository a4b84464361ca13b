package waker

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
)

// One transaction inserted jobs of many priorities into one queue (or many
// transactions did, and their wake-ups were merged into one round). The
// wake-up names a head per priority, and PostgreSQL refuses a NOTIFY payload
// of 8000 bytes or more: the whole WakeQueues statement fails, and with it
// the wake-up of every queue in the round, here an unrelated queue with a
// single job. Before the heads were added, the payload had a fixed, small
// size.
func TestWakeUpWithManyPrioritiesIsSent(t *testing.T) {
	// Not parallel: TestUnknownXactDoesNotStallTheOthers counts every wake-up of the database.
	ctx := context.Background()
	pool := testdb.New(t)
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig)
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.NoError(t, db.New(conn).ListenJobs(ctx))

	var schema string
	require.NoError(t, pool.QueryRow(ctx, "SELECT current_schema()").Scan(&schema))
	w := New(pool)
	many := Target{Schema: schema, Queue: "many-priorities"}
	other := Target{Schema: schema, Queue: "bystander"}
	// One caller's transaction, as InsertTx in a loop would watch it: one
	// watch per xact, merged per priority.
	xact := committedXact(t, pool)
	at := time.Now().Add(-time.Minute)
	for p := range 500 {
		w.Watch(xact, many, Head{Priority: int16(p), ScheduledAt: at})
	}
	w.Watch(xact, other, Head{Priority: 0, ScheduledAt: at})

	flushCtx, cancel := context.WithTimeout(ctx, 60*time.Second) // bounds a broken test
	defer cancel()
	assert.NoError(t, w.Flush(flushCtx), "the wake-up statement failed")

	got := map[string]bool{}
	waitCtx, cancel2 := context.WithTimeout(ctx, 15*time.Second) // bounds a broken test
	defer cancel2()
	for len(got) < 2 {
		n, err := conn.WaitForNotification(waitCtx)
		if !assert.NoError(t, err, "wake-ups received: %v; want both queues", got) {
			return
		}
		var msg struct {
			Q string `json:"q"`
		}
		require.NoError(t, json.Unmarshal([]byte(n.Payload), &msg))
		got[msg.Q] = true
	}
}
