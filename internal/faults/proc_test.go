package faults

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// proc is a worker process: this test binary run again in the worker role.
type proc struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	logPath string
	done    chan struct{} // closed when the process has exited
	state   *os.ProcessState
}

// startWorker starts a worker process named name on the database behind
// url. It is killed at cleanup if it is still running, and its log is
// checked for data races.
func startWorker(t *testing.T, url, name string, cfg roleConfig) *proc {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	conf, err := json.Marshal(cfg)
	require.NoError(t, err)
	p := &proc{t: t, name: name, logPath: filepath.Join(t.TempDir(), name+".log"), done: make(chan struct{})}
	logFile, err := os.Create(p.logPath)
	require.NoError(t, err)
	p.cmd = exec.Command(exe)
	p.cmd.Env = append(os.Environ(), roleEnv+"=worker", urlEnv+"="+url, nameEnv+"="+name, configEnv+"="+string(conf),
		// Under -race, a process sleeps a second before it exits, to let
		// the race detector report; exit times are measured here.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.stdin, err = p.cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	go func() {
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		logFile.Close()
		close(p.done)
	}()
	t.Cleanup(p.cleanup)
	return p
}

func (p *proc) cleanup() {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT) // a frozen process cannot die of stdin closing
		_ = p.cmd.Process.Kill()
	}
	p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Errorf("worker process %s did not exit", p.name)
		return
	}
	logs := p.logs()
	if strings.Contains(logs, "WARNING: DATA RACE") {
		p.t.Errorf("worker process %s reported a data race:\n%s", p.name, tail(logs, 200))
	}
	if p.t.Failed() {
		p.t.Logf("log of worker process %s (last lines):\n%s", p.name, tail(logs, 40))
	}
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(sig), "signal %s to %s", sig, p.name)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit and returns its exit code (-1 when
// it died of a signal).
func (p *proc) wait(bound time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(bound):
		p.t.Fatalf("worker process %s did not exit within %s", p.name, bound)
	}
	return p.state.ExitCode()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.t.Helper()
	p.signal(syscall.SIGKILL)
	p.wait(30 * time.Second)
}

func (p *proc) logs() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "(log unreadable: " + err.Error() + ")"
	}
	return string(b)
}

// logRecords returns the process's JSON log records whose message contains
// text.
func (p *proc) logRecords(text string) []map[string]any {
	var out []map[string]any
	for _, line := range bytes.Split([]byte(p.logs()), []byte("\n")) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) != nil {
			continue
		}
		if msg, _ := rec["msg"].(string); strings.Contains(msg, text) {
			out = append(out, rec)
		}
	}
	return out
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
