package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// tasuki behind PgBouncer in transaction pooling mode, where consecutive
// transactions of one client may run on different server connections:
//
//   - Named prepared statements do not survive that (PgBouncer before 1.21
//     does not track them), so pgx's default mode, cache_statement, is out.
//     default_query_exec_mode=cache_describe, exec and simple_protocol
//     all work: none of them keeps a named statement on the server.
//   - LISTEN does not survive it either: the worker either keeps its one
//     LISTEN connection directly on PostgreSQL (Config.ListenURL), or does
//     without (Config.DisableListen) and polls.
//
// Inserts (Insert, InsertTx, InsertMany with COPY), Get, Cancel and a
// worker all go through PgBouncer.
func TestPgBouncerTransactionPooling(t *testing.T) {
	t.Parallel()
	cluster := testdb.Cluster()
	if cluster == nil {
		t.Skip("TEST_DATABASE_URL is set: PgBouncer is tested in front of the throwaway cluster only")
	}
	bin := pgbouncerBinary(t)

	type setup struct {
		name         string
		execMode     string
		listenDirect bool
		e            *env
	}
	setups := []*setup{
		{name: "cache_describe, LISTEN direct", execMode: "cache_describe", listenDirect: true},
		{name: "cache_describe, poll only", execMode: "cache_describe"},
		{name: "exec, LISTEN direct", execMode: "exec", listenDirect: true},
		{name: "simple_protocol, poll only", execMode: "simple_protocol"},
	}
	for _, s := range setups {
		s.e = newEnv(t)
	}
	schemas := make([]string, len(setups))
	for i, s := range setups {
		schemas[i] = s.e.schema
	}
	port := startPgBouncer(t, bin, cluster.Port, schemas)

	for i, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			e := s.e
			ctx := context.Background()
			bouncerURL := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/db%d?sslmode=disable&default_query_exec_mode=%s&pool_max_conns=6",
				port, i, s.execMode)
			pool, err := pgxpool.New(ctx, bouncerURL)
			require.NoError(t, err)
			t.Cleanup(pool.Close)
			var through string
			require.NoError(t, pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&through))
			require.Equal(t, e.schema, through, "PgBouncer's server connections work in the test's schema")

			client, err := tasuki.NewClient[faultJob](pool, tasuki.ClientConfig{})
			require.NoError(t, err)
			_, insertErr := client.Insert(ctx, faultJob{N: 1}, nil)
			require.NoError(t, insertErr, "Insert through PgBouncer with default_query_exec_mode=%s", s.execMode)
			var txErr error
			err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				_, txErr = client.InsertTx(ctx, tx, faultJob{N: 2}, nil)
				return txErr
			})
			require.ErrorIs(t, err, txErr)
			if txErr != nil {
				require.NotNil(t, insertErr, "InsertTx fails only where Insert does: %v", txErr)
				_, err := client.Insert(ctx, faultJob{N: 2}, nil)
				require.NoError(t, err)
			}
			batch := make([]faultJob, 50)
			for k := range batch {
				batch[k] = faultJob{N: 10 + k}
			}
			n, err := client.InsertMany(ctx, batch, nil)
			require.NoError(t, err)
			require.EqualValues(t, len(batch), n)
			ids := e.jobIDs()
			got, err := client.Get(ctx, ids[0])
			require.NoError(t, err)
			assert.Equal(t, 1, got.Payload.N)
			doomed, err := client.Insert(ctx, faultJob{N: 3}, &tasuki.InsertOpts{Delay: time.Hour})
			require.NoError(t, err)
			canceled, err := client.Cancel(ctx, doomed.ID)
			require.NoError(t, err)
			assert.Equal(t, tasuki.StatusCanceled, canceled.Status)

			var mu sync.Mutex
			ran := map[int64]int{}
			cfg := worker.Config{Concurrency: 10, LeaseDuration: 2 * time.Second, Logger: quietLogger(),
				PollInterval: 100 * time.Millisecond, DisableListen: true}
			if s.listenDirect {
				// Only a NOTIFY can explain a prompt pickup now.
				cfg.PollInterval, cfg.DisableListen, cfg.ListenURL = time.Minute, false, e.url
			}
			w, err := worker.New(pool, cfg, worker.Handle(worker.HandlerFunc[faultJob](func(ctx context.Context, job *tasuki.Job[faultJob]) error {
				mu.Lock()
				ran[job.ID]++
				mu.Unlock()
				time.Sleep(ms(job.Payload.SleepMS))
				return nil
			})))
			require.NoError(t, err)
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- w.Run(runCtx) }()

			// The jobs inserted before the worker started, then more while
			// it runs, including jobs that outlive a heartbeat.
			total := 2 + len(batch)
			e.waitCompleted(total)
			if s.listenDirect {
				waitUntil(t, "the worker's listener to LISTEN on PostgreSQL", bound, func() bool {
					return e.count(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tasuki-listener'
					                AND query LIKE '%LISTEN tasuki_jobs%' AND state = 'idle'`) > 0
				})
				time.Sleep(300 * time.Millisecond) // the listener's connect wake-up has passed
			}
			pickupStart := time.Now()
			for k := range 5 {
				_, err := client.Insert(ctx, faultJob{N: 100 + k, SleepMS: 1000}, nil)
				require.NoError(t, err)
			}
			total += 5
			e.waitCompleted(total)
			pickup := time.Since(pickupStart)
			if s.listenDirect {
				require.Less(t, pickup, 30*time.Second, "woken by NOTIFY, not by the one-minute poll")
			}
			stop()
			require.NoError(t, <-done)

			mu.Lock()
			defer mu.Unlock()
			assert.Len(t, ran, total)
			for id, n := range ran {
				assert.Equal(t, 1, n, "job %d ran once", id)
			}
			assert.Zero(t, e.count(`SELECT count(*) FROM tasuki_job WHERE attempts <> 1 AND status = 'completed'`))
			t.Logf("%s: %d jobs inserted (Insert, InsertTx, InsertMany) and run once through PgBouncer; 5 more picked up and run in %s",
				s.name, total, pickup.Round(time.Millisecond))
			assert.NoError(t, insertErr)
			assert.NoError(t, txErr)
		})
	}
}

// pgbouncerBinary finds pgbouncer, installing Debian's package when it is
// missing and this process may (root, apt-get present); otherwise the test
// is skipped.
func pgbouncerBinary(t *testing.T) string {
	t.Helper()
	pgbouncerInstall.Do(func() {
		find := func() string {
			if p, err := exec.LookPath("pgbouncer"); err == nil {
				return p
			}
			if _, err := os.Stat("/usr/sbin/pgbouncer"); err == nil {
				return "/usr/sbin/pgbouncer"
			}
			return ""
		}
		if pgbouncerPath = find(); pgbouncerPath != "" {
			return
		}
		if os.Geteuid() != 0 {
			pgbouncerSkip = "pgbouncer is not installed and this test is not root: install it (Debian: apt-get install pgbouncer)"
			return
		}
		if _, err := exec.LookPath("apt-get"); err != nil {
			pgbouncerSkip = "pgbouncer is not installed and there is no apt-get to install it with"
			return
		}
		// Bounded as a whole, so a slow mirror costs a skip, not the
		// package's test timeout.
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		install := func() ([]byte, error) {
			cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "-q", "--no-install-recommends", "pgbouncer")
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			return cmd.CombinedOutput()
		}
		out, err := install()
		if err != nil && ctx.Err() == nil { // perhaps stale package lists
			_ = exec.CommandContext(ctx, "apt-get", "update", "-q").Run()
			out, err = install()
		}
		if pgbouncerPath = find(); pgbouncerPath == "" {
			pgbouncerSkip = fmt.Sprintf("pgbouncer is not installed and `apt-get install -y pgbouncer` failed (%v): %s", err, tail(string(out), 5))
		}
	})
	if pgbouncerSkip != "" {
		t.Skip(pgbouncerSkip)
	}
	return pgbouncerPath
}

var (
	pgbouncerInstall sync.Once
	pgbouncerPath    string
	pgbouncerSkip    string
)

// startPgBouncer runs PgBouncer in transaction pooling mode in front of the
// cluster on pgPort, with one database dbN per schema (its server
// connections' search_path set to that schema), and returns its port. It is
// stopped at cleanup, or when this process dies (it runs under a shell
// that stops it when our pipe to it closes).
func startPgBouncer(t *testing.T, bin string, pgPort int, schemas []string) int {
	t.Helper()
	// Not t.TempDir(): its parent is private to root, and PgBouncer runs
	// as the postgres user.
	dir, err := os.MkdirTemp("", "tasuki-pgbouncer-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// PgBouncer refuses to run as root; run it as the cluster's user.
		u, err := user.Lookup("postgres")
		require.NoError(t, err)
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		require.NoError(t, os.Chown(dir, uid, gid))
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	var dbs strings.Builder
	for i, s := range schemas {
		fmt.Fprintf(&dbs, "db%d = host=127.0.0.1 port=%d dbname=postgres user=postgres connect_query='SET search_path TO %s'\n", i, pgPort, s)
	}
	conf := fmt.Sprintf(`[databases]
%s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
default_pool_size = 8
max_client_conn = 200
logfile = %s
syslog = 0
pidfile = %s
`, dbs.String(), port, filepath.Join(dir, "users.txt"), filepath.Join(dir, "pgbouncer.log"), filepath.Join(dir, "pgbouncer.pid"))
	for name, content := range map[string]string{"pgbouncer.ini": conf, "users.txt": `"postgres" ""` + "\n"} {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
		if cred != nil {
			require.NoError(t, os.Chown(path, int(cred.Uid), int(cred.Gid)))
		}
	}

	cmd := exec.Command("/bin/sh", "-c", `"$1" "$2" & p=$!; cat >/dev/null; kill $p; wait $p`, "pgbouncer", bin, filepath.Join(dir, "pgbouncer.ini"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	var output logBuffer // what it says before its log file is open
	cmd.Stdout, cmd.Stderr = &output, &output
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Logf("pgbouncer log:\n%s", tail(string(log)+output.String(), 30))
		}
	})
	waitUntil(t, "PgBouncer to accept connections", 30*time.Second, func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	out, _ := exec.Command(bin, "--version").CombinedOutput()
	t.Logf("%s in transaction pooling mode on port %d", strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]), port)
	return port
}
