package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPeriodicCommand(t *testing.T) {
	t.Parallel()
	url, pool := migrated(t)

	r := runCLI(t, url, "periodic")
	requireOK(t, r)
	assert.Equal(t, "no periodic schedule has run\n", r.stdout)

	last := time.Date(2030, 1, 1, 3, 0, 0, 0, time.UTC)
	_, err := pool.Exec(context.Background(), `INSERT INTO tasuki_periodic (name, kind, schedule, last_tick, next_tick) VALUES
		('nightly', 'report', '0 3 * * *', $1, $2), ('cleanup', 'sweep', 'every 1h0m0s', NULL, NULL)`, last, last.Add(24*time.Hour))
	require.NoError(t, err)

	r = runCLI(t, url, "periodic")
	requireOK(t, r)
	rows := tableRows(t, r.stdout, "NAME", "KIND", "SCHEDULE", "LAST", "NEXT", "SEEN")
	require.Len(t, rows, 2)
	assert.Equal(t, []string{"cleanup", "sweep", "every", "1h0m0s", "-", "-"}, rows[0][:6])
	assert.Equal(t, []string{"nightly", "report", "0", "3", "*", "*", "*"}, rows[1][:7])

	r = runCLI(t, url, "periodic", "--json")
	requireOK(t, r)
	var list []periodicJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list))
	require.Len(t, list, 2)
	assert.Equal(t, "nightly", list[1].Name)
	require.NotNil(t, list[1].LastTick)
	assert.True(t, last.Equal(*list[1].LastTick))
	assert.Nil(t, list[0].LastTick)
}
