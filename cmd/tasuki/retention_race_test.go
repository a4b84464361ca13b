package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/tasuki"
)

// Two operators set different statuses of one queue at the same time:
// `tasuki retention emails --completed 48h` and `tasuki retention emails
// --failed 30d`. A status whose flag is not given keeps its setting, so
// both changes take effect, whichever writes second. Here both runs wait
// to write on a transaction that holds the queue's row for a moment, as
// any concurrent write to it would.
func TestRetentionConcurrentFlagsBothTakeEffect(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool := migrated(t)
	adm, err := tasuki.NewAdmin(pool)
	require.NoError(t, err)
	require.NoError(t, adm.SetRetention(ctx, "emails", tasuki.Retention{Canceled: time.Hour}))

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, "SELECT 1 FROM tasuki_queue WHERE name = 'emails' FOR UPDATE")
	require.NoError(t, err)

	var wg sync.WaitGroup
	results := make([]result, 2)
	for i, flags := range [][]string{{"--completed", "48h"}, {"--failed", "30d"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runCLI(t, url, append([]string{"retention", "emails"}, flags...)...)
		}()
	}
	// Both runs have read the setting and wait to write it.
	deadline := time.Now().Add(time.Minute)
	for {
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%QueueChangeRetention%'`).Scan(&n))
		if n == 2 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the two runs never both waited to write")
		time.Sleep(5 * time.Millisecond)
	}
	require.NoError(t, tx.Rollback(ctx))
	wg.Wait()
	for _, r := range results {
		requireOK(t, r)
	}

	own, err := adm.QueueRetention(ctx, "emails")
	require.NoError(t, err)
	assert.Equal(t, tasuki.Retention{Completed: 48 * time.Hour, Canceled: time.Hour, Failed: 30 * 24 * time.Hour}, own,
		"each run set one status and said the others keep their setting; one run's status was reverted")
}
