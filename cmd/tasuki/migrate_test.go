package main

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
)

var (
	currentRE = regexp.MustCompile(`(?m)^current version: (\d+)$`)
	latestRE  = regexp.MustCompile(`(?m)^latest version:\s+(\d+)$`)
)

// versions runs "migrate version" and returns what it printed.
func versions(t *testing.T, url string) (current, latest int64) {
	t.Helper()
	r := runCLI(t, url, "migrate", "version")
	require.Zero(t, r.code, "stderr:\n%s", r.stderr)
	return matchInt(t, currentRE, r.stdout), matchInt(t, latestRE, r.stdout)
}

func matchInt(t *testing.T, re *regexp.Regexp, s string) int64 {
	t.Helper()
	m := re.FindStringSubmatch(s)
	require.NotNil(t, m, "%s not found in:\n%s", re, s)
	n, err := strconv.ParseInt(m[1], 10, 64)
	require.NoError(t, err)
	return n
}

// statusRows runs "migrate status" and returns its rows, without the
// header, split into columns.
func statusRows(t *testing.T, url string) [][]string {
	t.Helper()
	r := runCLI(t, url, "migrate", "status")
	require.Zero(t, r.code, "stderr:\n%s", r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.GreaterOrEqual(t, len(lines), 2, "stdout:\n%s", r.stdout)
	require.Equal(t, []string{"VERSION", "MIGRATION", "APPLIED", "AT"}, strings.Fields(lines[0]))
	// The columns are aligned: every row starts its second column where
	// the header does.
	col := strings.Index(lines[0], "MIGRATION")
	var rows [][]string
	for _, l := range lines[1:] {
		require.Greater(t, len(l), col)
		assert.NotEqual(t, ' ', l[col], "row %q is not aligned with the header", l)
		assert.Equal(t, ' ', rune(l[col-1]), "row %q is not aligned with the header", l)
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

func TestMigrateCycle(t *testing.T) {
	t.Parallel()
	_, url := testdb.Schema(t)

	current, latest := versions(t, url)
	assert.Zero(t, current)
	require.Positive(t, latest)
	for _, row := range statusRows(t, url) {
		assert.Equal(t, "pending", row[2], "row %v", row)
	}

	// up applies everything, and says so.
	r := runCLI(t, url, "migrate", "up")
	require.Zero(t, r.code, "stderr:\n%s", r.stderr)
	assert.Contains(t, r.stdout, "applied 1 00001_create_tasuki_job.sql")
	current, _ = versions(t, url)
	assert.Equal(t, latest, current)
	rows := statusRows(t, url)
	for _, row := range rows {
		assert.NotEqual(t, "pending", row[2], "row %v", row)
	}
	assert.Equal(t, strconv.FormatInt(latest, 10), rows[len(rows)-1][0])

	// A second up changes nothing.
	r = runCLI(t, url, "migrate", "up")
	require.Zero(t, r.code, "stderr:\n%s", r.stderr)
	assert.Contains(t, r.stdout, "nothing to apply")
	assert.NotContains(t, r.stdout, "applied ")

	// down rolls back the latest migration only.
	r = runCLI(t, url, "migrate", "down")
	require.Zero(t, r.code, "stderr:\n%s", r.stderr)
	assert.Contains(t, r.stdout, "rolled back "+strconv.FormatInt(latest, 10)+" ")
	previous := int64(0)
	if len(rows) > 1 {
		previous, _ = strconv.ParseInt(rows[len(rows)-2][0], 10, 64)
	}
	current, _ = versions(t, url)
	assert.Equal(t, previous, current)

	// Back up, then all the way down.
	r = runCLI(t, url, "migrate", "up")
	require.Zero(t, r.code, "stderr:\n%s", r.stderr)
	r = runCLI(t, url, "migrate", "down", "--to", "0")
	require.Zero(t, r.code, "stderr:\n%s", r.stderr)
	assert.Contains(t, r.stdout, "rolled back 1 00001_create_tasuki_job.sql")
	current, _ = versions(t, url)
	assert.Zero(t, current)
	for _, row := range statusRows(t, url) {
		assert.Equal(t, "pending", row[2], "row %v", row)
	}

	// Nothing left to roll back: not an error.
	r = runCLI(t, url, "migrate", "down", "--to", "0")
	require.Zero(t, r.code, "stderr:\n%s", r.stderr)
	assert.Contains(t, r.stdout, "nothing to roll back")

	// And up again, through the flag rather than the environment.
	r = runCLI(t, "", "migrate", "up", "--database-url", url)
	require.Zero(t, r.code, "stderr:\n%s", r.stderr)
	current, _ = versions(t, url)
	assert.Equal(t, latest, current)
}

func TestMigrateDownRejectsNegativeVersion(t *testing.T) {
	t.Parallel()
	_, url := testdb.Schema(t)
	line := requireOneLineError(t, runCLI(t, url, "migrate", "down", "--to", "-1"))
	assert.Contains(t, line, "--to -1")
}

// TestMigrateJSON runs every migrate command with --json and reads its
// output as a deploy script would.
func TestMigrateJSON(t *testing.T) {
	t.Parallel()
	_, url := testdb.Schema(t)
	run := func(v any, args ...string) {
		t.Helper()
		r := runCLI(t, url, append(append([]string{"migrate"}, args...), "--json")...)
		require.Zero(t, r.code, "stderr:\n%s", r.stderr)
		require.NoError(t, json.Unmarshal([]byte(r.stdout), v), "stdout: %s", r.stdout)
	}

	var version schemaVersionJSON
	run(&version, "version")
	assert.Zero(t, version.Current)
	require.Positive(t, version.Latest)

	var status []migrationStatusJSON
	run(&status, "status")
	require.NotEmpty(t, status)
	assert.Equal(t, migrationStatusJSON{Version: 1, Migration: "00001_create_tasuki_job.sql"}, status[0])
	assert.Equal(t, version.Latest, status[len(status)-1].Version)

	var up migrateUpJSON
	run(&up, "up")
	assert.Len(t, up.Applied, len(status))
	assert.Equal(t, "00001_create_tasuki_job.sql", up.Applied[0].Migration)
	assert.Equal(t, schemaVersionJSON{Current: version.Latest, Latest: version.Latest}, up.schemaVersionJSON)
	up = migrateUpJSON{}
	run(&up, "up")
	assert.Equal(t, migrateUpJSON{Applied: []migrationResultJSON{}, schemaVersionJSON: schemaVersionJSON{Current: version.Latest, Latest: version.Latest}}, up)

	status = nil
	run(&status, "status")
	for _, s := range status {
		assert.True(t, s.Applied, "%+v", s)
		assert.NotNil(t, s.AppliedAt, "%+v", s)
	}

	var down migrateDownJSON
	run(&down, "down", "--to", "0")
	assert.Len(t, down.RolledBack, len(status))
	assert.Equal(t, version.Latest, down.RolledBack[0].Version, "the latest goes first")
	assert.Equal(t, schemaVersionJSON{Current: 0, Latest: version.Latest}, down.schemaVersionJSON)
	down = migrateDownJSON{}
	run(&down, "down")
	assert.Equal(t, migrateDownJSON{RolledBack: []migrationResultJSON{}, schemaVersionJSON: schemaVersionJSON{Current: 0, Latest: version.Latest}}, down)
}
