package worker

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

type limitAlpha struct{}

func (limitAlpha) Kind() string { return "alpha" }

type limitBeta struct{}

func (limitBeta) Kind() string { return "beta" }

// A kind's limit and a queue's are applied one after the other in one
// lease statement, so a kind's slot can go to a row that the queue's limit
// then drops. Queue a has one slot, b five; kind alpha is limited to 1.
// The first lease reads a-beta (first in a's order), a-alpha and b-alpha:
// alpha's slot goes to a-alpha, a's slot to a-beta, and no alpha job is
// leased although b-alpha could run. The sources it read must be read
// again at once, and the next lease takes b-alpha, instead of leaving it
// to the next poll.
func TestLimitCutBySomeoneElsesLimitIsReadAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	w, err := New(pool, Config{
		Queues: map[string]QueueConfig{"a": {Concurrency: 1}, "b": {Concurrency: 5}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	},
		HandleFunc(func(context.Context, *tasuki.Job[limitAlpha]) error { return nil }).With(KindConfig{MaxConcurrency: 1}),
		HandleFunc(func(context.Context, *tasuki.Job[limitBeta]) error { return nil }),
	)
	require.NoError(t, err)
	w.queries = db.New(pool)
	_, err = pool.Exec(ctx, `INSERT INTO tasuki_job (queue, kind, payload, priority, scheduled_at) VALUES
		('a', 'beta', '{}', 0, now() - interval '3 seconds'),
		('a', 'alpha', '{}', 0, now() - interval '2 seconds'),
		('b', 'alpha', '{}', 1, now() - interval '1 second')`)
	require.NoError(t, err)

	lease := func() []string {
		t.Helper()
		for s := range w.inbox.take() {
			s.due = true
		}
		jobs, _, err := w.lease(ctx, w.plan(false))
		require.NoError(t, err)
		var got []string
		for _, j := range jobs {
			w.startJob(ctx, j) // counts the job against its queue and kind
			got = append(got, j.row.Queue+"-"+j.row.Kind)
		}
		return got
	}
	for _, s := range w.sources {
		s.due = true
	}
	assert.Equal(t, []string{"a-beta"}, lease())
	assert.True(t, w.byPair[pair{"b", "alpha"}].due, "b's alpha source is read again at once")
	assert.Equal(t, []string{"b-alpha"}, lease(), "the next lease takes b's alpha job")
}
