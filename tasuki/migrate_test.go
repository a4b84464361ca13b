package tasuki_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

func TestMigrateTwiceIsNoOp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.NewEmpty(t)

	v, err := tasuki.SchemaVersion(ctx, pool)
	require.NoError(t, err)
	assert.Zero(t, v)

	require.NoError(t, tasuki.Migrate(ctx, pool))
	v, err = tasuki.SchemaVersion(ctx, pool)
	require.NoError(t, err)
	assert.Positive(t, v)

	m, err := tasuki.NewMigrator(pool)
	require.NoError(t, err)
	defer m.Close()
	applied, err := m.Up(ctx)
	require.NoError(t, err)
	assert.Empty(t, applied, "a second migration applies nothing")
	require.NoError(t, tasuki.Migrate(ctx, pool))
	v2, err := tasuki.SchemaVersion(ctx, pool)
	require.NoError(t, err)
	assert.Equal(t, v, v2)
}

func TestMigrateUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.NewEmpty(t)
	m, err := tasuki.NewMigrator(pool)
	require.NoError(t, err)
	defer m.Close()

	up, err := m.Up(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, up)
	current, latest, err := m.Version(ctx)
	require.NoError(t, err)
	assert.Equal(t, latest, current)

	c, err := tasuki.NewClient[string](pool, tasuki.ClientConfig{Kind: "text"})
	require.NoError(t, err)
	_, err = c.Insert(ctx, "before down", nil)
	require.NoError(t, err)

	down, err := m.DownTo(ctx, 0)
	require.NoError(t, err)
	assert.Len(t, down, len(up))
	current, _, err = m.Version(ctx)
	require.NoError(t, err)
	assert.Zero(t, current)
	_, err = c.Insert(ctx, "no schema", nil)
	require.ErrorIs(t, err, tasuki.ErrSchemaMissing)

	status, err := m.Status(ctx)
	require.NoError(t, err)
	for _, s := range status {
		assert.False(t, s.Applied, s.Source)
	}

	again, err := m.Up(ctx)
	require.NoError(t, err)
	assert.Len(t, again, len(up))
	_, err = c.Insert(ctx, "after up", nil)
	require.NoError(t, err)
}
