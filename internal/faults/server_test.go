package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/pgtemp"
	"github.com/tasukiq/tasuki/internal/testdb"
)

// restartServer restarts the throwaway cluster as pgtemp.Cluster.Restart
// means to (pg_ctl restart -m fast), with the server log sent to a file.
// Cluster.Restart itself gives pg_ctl no log file, so the restarted server
// inherits pg_ctl's output pipe and Restart never returns (see
// TestClusterRestartReturns).
func restartServer(t *testing.T, c *pgtemp.Cluster) {
	t.Helper()
	data := filepath.Join(c.Dir, "data")
	// The running server's own binary directory, so pg_ctl matches it.
	pidFile, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	require.NoError(t, err)
	postgres, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(filepath.Dir(postgres), "pg_ctl"), "-D", data,
		"-l", filepath.Join(c.Dir, "server.log"), "-w", "-t", "60", "-m", "fast", "restart")
	cmd.Dir = c.Dir
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() == 0 {
		// As root, pgtemp runs the server as the owner of its directory.
		var st syscall.Stat_t
		require.NoError(t, syscall.Stat(data, &st))
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: st.Uid, Gid: st.Gid}
	}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "pg_ctl restart:\n%s", out)
}

// pgtemp.Cluster.Restart returns once the server is back.
//
// It does not: pg_ctl restart is run without -l, so the new postmaster
// writes its log to pg_ctl's stdout, a pipe that CombinedOutput reads until
// every holder closes it, and the server holds it for its whole life.
func TestClusterRestartReturns(t *testing.T) {
	t.Skip("BUG: internal/pgtemp/pgtemp.go Cluster.Restart runs `pg_ctl restart` without -l: the restarted server " +
		"inherits the output pipe and CombinedOutput never returns; the fault tests restart with restartServer instead")
	c := testdb.Cluster()
	if c == nil {
		t.Skip("TEST_DATABASE_URL is set")
	}
	done := make(chan error, 1)
	go func() { done <- c.Restart(context.Background()) }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(bound):
		t.Fatal("Cluster.Restart did not return")
	}
}
