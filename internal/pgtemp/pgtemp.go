// Package pgtemp starts a throwaway PostgreSQL cluster for tests, the demo
// and the benchmark: initdb and pg_ctl from PATH (or from the usual Debian
// location), a temporary directory, a free port on 127.0.0.1, removed again
// by Stop — or by a watchdog if the process that started it dies first.
package pgtemp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Options tune the cluster. The zero value is a cluster for tests.
type Options struct {
	// Durable keeps fsync and synchronous commit on, as on a production
	// server; benchmarks use it so their numbers include the cost of a
	// durable commit. Defaults to false: tests run with fsync off, as their
	// data is thrown away.
	Durable bool
	// MaxConnections is Postgres's max_connections. Defaults to 300.
	MaxConnections int
	// Settings are extra server settings, "name=value" each.
	Settings []string
	// Logf, if set, receives one line per step (initdb, start, stop).
	Logf func(format string, args ...any)
}

// Cluster is a running throwaway cluster.
type Cluster struct {
	// URL connects as the superuser "postgres" to the database "postgres".
	URL string
	// Port is the TCP port on 127.0.0.1.
	Port int
	// Dir holds the data directory, the socket and the server log.
	Dir string

	bin      string
	opts     string // the server options pg_ctl start was given (-o)
	cred     *syscall.Credential
	watchdog *exec.Cmd
	stdin    io.WriteCloser
	logf     func(string, ...any)
}

// ErrNoBinaries says that initdb and pg_ctl were not found.
var ErrNoBinaries = errors.New("pgtemp: PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin: " +
	"install them (Debian: apt-get install postgresql) or set DATABASE_URL to an existing server")

// Start initialises and starts a cluster. Call Stop when done.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if opts.MaxConnections == 0 {
		opts.MaxConnections = 300
	}
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tasuki-pg-")
	if err != nil {
		return nil, fmt.Errorf("pgtemp: create temp dir: %w", err)
	}
	c := &Cluster{Dir: dir, bin: bin, logf: logf}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()

	if os.Geteuid() == 0 {
		// initdb refuses to run as root; run the whole cluster as the
		// postgres system user that Debian's packages create.
		cred, err := postgresUser()
		if err != nil {
			return nil, err
		}
		c.cred = cred
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgtemp: chown %s: %w", dir, err)
		}
	}

	data := filepath.Join(dir, "data")
	logf("pgtemp: initdb %s", data)
	if out, err := c.command(ctx, "initdb", "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgtemp: initdb: %w\n%s", err, out)
	}

	// The watchdog stops the server and removes the directory when its stdin
	// closes, which happens when this process exits for any reason, so a
	// test binary killed by a timeout leaves no server behind.
	c.watchdog = exec.Command("/bin/sh", "-c",
		`cat >/dev/null; "$1" -D "$2" stop -m immediate -w >/dev/null 2>&1; rm -rf "$3"`,
		"watchdog", filepath.Join(bin, "pg_ctl"), data, dir)
	c.watchdog.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.cred}
	if c.stdin, err = c.watchdog.StdinPipe(); err != nil {
		return nil, fmt.Errorf("pgtemp: watchdog: %w", err)
	}
	if err := c.watchdog.Start(); err != nil {
		return nil, fmt.Errorf("pgtemp: watchdog: %w", err)
	}

	settings := []string{
		"listen_addresses=127.0.0.1",
		"unix_socket_directories=" + dir,
		"max_connections=" + strconv.Itoa(opts.MaxConnections),
		"shared_buffers=256MB",
		"max_wal_size=4GB",
	}
	settings = append(settings, opts.Settings...)
	if !opts.Durable {
		settings = append(settings, "fsync=off", "synchronous_commit=off", "full_page_writes=off")
	}
	// A port found free can be taken before the server binds it; try again.
	for try := 0; ; try++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		c.opts = "-c port=" + strconv.Itoa(port) + " -c " + strings.Join(settings, " -c ")
		args := []string{"-D", data, "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60", "-o", c.opts, "start"}
		logf("pgtemp: starting on port %d", port)
		out, err := c.command(ctx, "pg_ctl", args...).CombinedOutput()
		if err == nil {
			c.Port = port
			break
		}
		if try == 2 {
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			return nil, fmt.Errorf("pgtemp: pg_ctl start: %w\n%s\n%s", err, out, log)
		}
	}
	c.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port)
	ok = true
	return c, nil
}

// Restart restarts the server in fast mode (pg_ctl restart -m fast): every
// connection is dropped. Fault tests use it.
func (c *Cluster) Restart(ctx context.Context) error {
	// -l: without a log file the restarted server inherits pg_ctl's output
	// pipe, and reading that output would never end.
	out, err := c.command(ctx, "pg_ctl", "-D", filepath.Join(c.Dir, "data"), "-l", filepath.Join(c.Dir, "server.log"),
		"-w", "-t", "60", "-m", "fast", "restart").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtemp: pg_ctl restart: %w\n%s", err, out)
	}
	return nil
}

// StopServer stops the server in fast mode and leaves it stopped, its data
// kept, until StartServer: an outage, for fault tests.
func (c *Cluster) StopServer(ctx context.Context) error {
	out, err := c.command(ctx, "pg_ctl", "-D", filepath.Join(c.Dir, "data"), "-w", "-t", "60", "-m", "fast", "stop").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtemp: pg_ctl stop: %w\n%s", err, out)
	}
	return nil
}

// StartServer starts a server stopped by StopServer and returns once it
// accepts connections.
func (c *Cluster) StartServer(ctx context.Context) error {
	out, err := c.command(ctx, "pg_ctl", "-D", filepath.Join(c.Dir, "data"), "-l", filepath.Join(c.Dir, "server.log"),
		"-w", "-t", "60", "-o", c.opts, "start").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtemp: pg_ctl start: %w\n%s", err, out)
	}
	return nil
}

// Stop stops the server and removes its directory. It is safe to call more
// than once.
func (c *Cluster) Stop() {
	if c.stdin != nil {
		c.logf("pgtemp: stopping")
		_ = c.stdin.Close() // the watchdog stops the server and cleans up
		_ = c.watchdog.Wait()
		c.stdin = nil
	}
	_ = os.RemoveAll(c.Dir)
}

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.Dir = c.Dir
	// Own process group: a Ctrl-C meant for the program must not reach the
	// server before the program has shut its workers down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.cred}
	return cmd
}

func findBinaries() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			// Follow symlinks: Debian links pg_ctl into /usr/bin via a
			// wrapper that needs a configured cluster; the real binaries sit
			// next to the link's target.
			if real, err := filepath.EvalSymlinks(p); err == nil {
				dir := filepath.Dir(real)
				if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
					return dir, nil
				}
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtemp: running as root, and initdb refuses root; no 'postgres' system user to run the server as (%v): "+
			"create one (useradd --system postgres), run as another user, or set DATABASE_URL", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtemp: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
