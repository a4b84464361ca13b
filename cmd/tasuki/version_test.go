package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestVersion checks tasuki version and tasuki --version against what the
// go command reads from the same binary, and the schema version against
// the migration files.
func TestVersion(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(context.Background(), "go", "version", "-m", cliPath).Output()
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^\tmod\tgithub\.com/tasukiq/tasuki\t(\S+)`).FindSubmatch(out)
	require.NotNil(t, m, "go version -m:\n%s", out)
	moduleVersion := string(m[1])

	files, err := filepath.Glob("../../schema/*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var schemaVersion int64
	for _, f := range files {
		n, err := strconv.ParseInt(regexp.MustCompile(`^\d+`).FindString(filepath.Base(f)), 10, 64)
		require.NoError(t, err)
		schemaVersion = max(schemaVersion, n)
	}

	// A URL is not needed, nor read.
	r := runCLI(t, "", "version")
	requireOK(t, r)
	want := "tasuki " + moduleVersion + "\nschema version " + strconv.FormatInt(schemaVersion, 10) + "\n" +
		runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	assert.Equal(t, want, r.stdout)
	assert.Empty(t, r.stderr)

	r = runCLI(t, "", "--version")
	requireOK(t, r)
	assert.Equal(t, want, r.stdout)

	r = runCLI(t, "", "version", "--json")
	requireOK(t, r)
	var v versionJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v))
	assert.Equal(t, moduleVersion, v.Version)
	assert.Equal(t, schemaVersion, v.SchemaVersion)
	assert.Equal(t, runtime.Version(), v.Go)
	assert.Equal(t, runtime.GOOS+"/"+runtime.GOARCH, v.Platform)

	line := requireOneLineError(t, runCLI(t, "", "version", "extra"))
	assert.Contains(t, line, `unknown command "extra" for "tasuki version"`)
}
