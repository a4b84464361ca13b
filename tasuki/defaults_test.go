package tasuki_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

type nightly struct {
	Day string `json:"day"`
}

func (nightly) Kind() string { return "nightly" }

func (nightly) InsertOpts() tasuki.InsertOpts {
	return tasuki.InsertOpts{
		Queue: "reports", Priority: 3, MaxAttempts: 2, Timeout: time.Minute,
		Unique:   &tasuki.UniqueOpts{ByArgs: true},
		Metadata: map[string]any{"team": "finance"},
		RunAt:    time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), // not a default
	}
}

type badDefaults struct{}

func (badDefaults) Kind() string                  { return "bad" }
func (badDefaults) InsertOpts() tasuki.InsertOpts { return tasuki.InsertOpts{Priority: -1} }

// A payload type's default insert options apply to every insert of its
// kind, by Client and Inserter; what an insert sets wins, field by field.
func TestKindDefaults(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	c, err := tasuki.NewClient[nightly](pool, tasuki.ClientConfig{})
	require.NoError(t, err)

	job, err := c.Insert(ctx, nightly{Day: "mon"}, nil)
	require.NoError(t, err)
	assert.Equal(t, "reports", job.Queue)
	assert.Equal(t, 3, job.Priority)
	assert.Equal(t, 2, job.MaxAttempts)
	assert.JSONEq(t, `{"team": "finance"}`, string(job.Metadata))
	assert.WithinDuration(t, time.Now(), job.ScheduledAt, time.Hour, "RunAt is no default")
	assert.Equal(t, 1, countJobs(t, pool, "timeout_ms = 60000"))
	again, err := c.Insert(ctx, nightly{Day: "mon"}, nil)
	require.NoError(t, err)
	assert.True(t, again.Duplicate, "the default uniqueness")

	over, err := c.Insert(ctx, nightly{Day: "mon"}, &tasuki.InsertOpts{Queue: "urgent", Priority: 1, Unique: &tasuki.UniqueOpts{ByArgs: true, ByQueue: true}})
	require.NoError(t, err)
	assert.False(t, over.Duplicate)
	assert.Equal(t, "urgent", over.Queue)
	assert.Equal(t, 1, over.Priority)
	assert.Equal(t, 2, over.MaxAttempts, "what the call leaves unset stays the default")

	ins := newInserter(t, pool, tasuki.ClientConfig{})
	n, err := ins.InsertMany(ctx, []tasuki.InsertManyParams{{Payload: nightly{Day: "tue"}}, {Payload: &nightly{Day: "tue"}}, {Payload: nightly{Day: "wed"}}})
	require.NoError(t, err)
	assert.EqualValues(t, 2, n, "tue once, wed")
	assert.Equal(t, 3, countJobs(t, pool, "queue = 'reports' AND priority = 3 AND max_attempts = 2"), "mon, tue, wed")
	require.NoError(t, ins.Flush(ctx))
	require.NoError(t, c.Flush(ctx))

	_, err = tasuki.NewClient[badDefaults](pool, tasuki.ClientConfig{})
	var opt *tasuki.InvalidOptionError
	require.ErrorAs(t, err, &opt, "bad defaults fail where the client is made")
	assert.Contains(t, err.Error(), "InsertOpts method")
}
