package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
)

// cliPath is the tasuki binary under test, built once by TestMain.
var cliPath string

// cleanupPipe keeps the stdin of the process that removes the binary's
// directory once this test process exits; see removeOnExit.
var cleanupPipe io.WriteCloser

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tasuki-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tasuki cli test:", err)
		os.Exit(1)
	}
	// testdb.Main exits the process, so no deferred call would run.
	if err := removeOnExit(dir); err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, "tasuki cli test:", err)
		os.Exit(1)
	}
	cliPath = filepath.Join(dir, "tasuki")
	if out, err := exec.Command("go", "build", "-o", cliPath, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "tasuki cli test: go build: %v\n%s", err, out)
		os.Exit(1)
	}
	testdb.Main(m)
}

// removeOnExit removes dir when this process exits, however it exits: a
// shell waits for its stdin to close, which the kernel does when this
// process ends, as pgtemp's watchdog does for its clusters.
func removeOnExit(dir string) error {
	cmd := exec.Command("/bin/sh", "-c", `cat >/dev/null; rm -rf "$1"`, "cleanup", dir)
	// Its own process group: a Ctrl-C on the tests must not kill it first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pipe, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	cleanupPipe = pipe
	return nil
}

// result is what a run of the binary produced.
type result struct {
	stdout, stderr string
	code           int
}

// runCLI runs the binary with args. DATABASE_URL is set to databaseURL, or
// removed from the environment when it is "".
func runCLI(t *testing.T, databaseURL string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cliPath, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if databaseURL != "" {
		cmd.Env = append(cmd.Env, "DATABASE_URL="+databaseURL)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitCode()
	default:
		t.Fatalf("run tasuki %v: %v", args, err)
	}
	require.NoError(t, ctx.Err(), "tasuki %v did not finish in time;\nstdout:\n%s\nstderr:\n%s", args, r.stdout, r.stderr)
	return r
}

// requireOneLineError checks that a failed run printed exactly one line,
// the error, on stderr and nothing on stdout.
func requireOneLineError(t *testing.T, r result) string {
	t.Helper()
	require.NotZero(t, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	assert.Empty(t, r.stdout)
	require.True(t, strings.HasSuffix(r.stderr, "\n"), "stderr: %q", r.stderr)
	line := strings.TrimSuffix(r.stderr, "\n")
	require.NotContains(t, line, "\n", "the error must be one line")
	require.True(t, strings.HasPrefix(line, "tasuki: "), "stderr: %q", r.stderr)
	require.False(t, strings.HasPrefix(line, "tasuki: tasuki:"), "stderr: %q", r.stderr)
	return line
}

func TestUnknownSubcommand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nope"}, `unknown command "nope" for "tasuki"`},
		{[]string{"migrate", "nope"}, `unknown command "nope" for "tasuki migrate"`},
		{[]string{"demo", "extra"}, `unknown command "extra" for "tasuki demo"`},
		{[]string{"demo", "--nope"}, "unknown flag: --nope (see 'tasuki demo --help')"},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			t.Parallel()
			line := requireOneLineError(t, runCLI(t, "", tc.args...))
			assert.Contains(t, line, tc.want)
		})
	}
}

func TestUnknownSubcommandSuggests(t *testing.T) {
	t.Parallel()
	line := requireOneLineError(t, runCLI(t, "", "migrate", "stauts"))
	assert.Contains(t, line, `unknown command "stauts" for "tasuki migrate"`)
	assert.Contains(t, line, `did you mean "status"?`)
}

func TestHelp(t *testing.T) {
	t.Parallel()
	// A URL in the environment must not appear in any help text.
	const secretURL = "postgres://app:hunter2secret@db.example:5432/app"
	for _, args := range [][]string{
		{"--help"}, {}, {"demo", "--help"}, {"migrate", "--help"}, {"migrate"},
		{"migrate", "up", "--help"}, {"migrate", "down", "--help"},
		{"migrate", "status", "--help"}, {"migrate", "version", "--help"},
	} {
		t.Run(strings.Join(append([]string{"tasuki"}, args...), "_"), func(t *testing.T) {
			t.Parallel()
			r := runCLI(t, secretURL, args...)
			require.Zero(t, r.code, "stderr:\n%s", r.stderr)
			assert.Contains(t, r.stdout, "Usage:")
			assert.Contains(t, r.stdout, "Examples:")
			assert.Contains(t, r.stdout, "--database-url")
			assert.NotContains(t, r.stdout+r.stderr, "hunter2secret")
		})
	}
}
