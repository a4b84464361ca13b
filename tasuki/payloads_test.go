package tasuki_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// The payloads in testdata/payloads.json either round-trip exactly as jsonb
// reads them, or are refused at the API edge with *InvalidPayloadError.
func TestPayloadsFromTestdata(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../testdata/payloads.json")
	require.NoError(t, err)
	var cases struct {
		Storable   []string `json:"storable"`
		Unstorable []string `json:"unstorable"`
	}
	require.NoError(t, json.Unmarshal(raw, &cases))
	require.NotEmpty(t, cases.Storable)
	require.NotEmpty(t, cases.Unstorable)

	ctx := context.Background()
	pool := testdb.New(t)
	client, err := tasuki.NewClient[json.RawMessage](pool, tasuki.ClientConfig{Kind: "raw"})
	require.NoError(t, err)
	for _, p := range cases.Storable {
		job, err := client.Insert(ctx, json.RawMessage(p), nil)
		require.NoError(t, err, p)
		var same bool
		require.NoError(t, pool.QueryRow(ctx, "SELECT payload = $2::text::jsonb FROM tasuki_job WHERE id = $1", job.ID, p).Scan(&same))
		assert.True(t, same, "stored as jsonb reads it: %s", p)
	}
	var before int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM tasuki_job").Scan(&before))
	for _, p := range cases.Unstorable {
		_, err := client.Insert(ctx, json.RawMessage(p), nil)
		var pe *tasuki.InvalidPayloadError
		assert.ErrorAs(t, err, &pe, p)
		_, err = client.InsertMany(ctx, []json.RawMessage{json.RawMessage(`{}`), json.RawMessage(p)}, nil)
		assert.ErrorAs(t, err, &pe, p)
	}
	var after int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM tasuki_job").Scan(&after))
	assert.Equal(t, before, after, "refused payloads write nothing")
}
