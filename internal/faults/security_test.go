package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// appGrants are the privileges a role needs to insert, read and cancel
// jobs and to run workers, and nothing more; %[1]s is the schema. Each is
// shown necessary by TestLeastPrivilegeGrantsAreEachNeeded.
//
// Not needed: CREATE on the schema (only migrations create objects), any
// privilege on tasuki_schema_version (only migrations read it), USAGE on
// the sequence behind tasuki_job.id (an identity column draws its values
// without a privilege check), INSERT, UPDATE or DELETE on tasuki_queue
// (only pausing and resuming a queue write it). Functions (pg_notify,
// gen_random_uuid, pg_try_advisory_xact_lock) and the type
// tasuki_job_status are usable by PUBLIC in a default installation.
var appGrants = []grant{
	{"USAGE", "SCHEMA %[1]s"},
	{"SELECT", "%[1]s.tasuki_job"},
	{"INSERT", "%[1]s.tasuki_job"},
	{"UPDATE", "%[1]s.tasuki_job"},
	// Only the worker's retention cleaner deletes: a role whose queues
	// all keep their finished jobs forever (tasuki.Retention) needs no
	// DELETE.
	{"DELETE", "%[1]s.tasuki_job"},
	{"SELECT", "%[1]s.tasuki_queue"},
	// The retention cleaner reads the installation's default retention.
	{"SELECT", "%[1]s.tasuki_settings"},
	// A worker records the queues and kinds it works while it runs, and
	// removes the record when it stops.
	{"SELECT, INSERT, UPDATE, DELETE", "%[1]s.tasuki_process"},
}

// grant is one privilege on one object; %[1]s in the object is the schema.
type grant struct{ privilege, object string }

func (g grant) sql(schema, role string) string {
	return fmt.Sprintf("GRANT %s ON %s TO %s", g.privilege, fmt.Sprintf(g.object, schema), role)
}

func (g grant) String() string {
	return g.privilege + " on " + strings.NewReplacer("SCHEMA %[1]s", "the schema", "%[1]s.", "").Replace(g.object)
}

// secretJob carries a value that must never appear in a log.
type secretJob struct {
	Token string `json:"token"`
	N     int    `json:"n"`
	Fail  bool   `json:"fail,omitempty"`
	Panic bool   `json:"panic,omitempty"`
	Sleep int    `json:"sleep_ms,omitempty"`
}

func (secretJob) Kind() string { return "secret" }

// appRole creates a login role, NOSUPERUSER and without CREATE anywhere,
// with the given grants on the test's schema, and returns a connection
// string for it (with a password in it) on that schema. It is dropped at
// cleanup.
func appRole(t *testing.T, e *env, suffix, password string, grants []grant) string {
	t.Helper()
	ctx := context.Background()
	role := pgx.Identifier{"r_" + e.schema + suffix}.Sanitize()
	schema := pgx.Identifier{e.schema}.Sanitize()
	_, err := e.pool.Exec(ctx, fmt.Sprintf(`CREATE ROLE %s LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD '%s'`, role, password))
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Its sessions first, or the role cannot be dropped.
		_, _ = e.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, "r_"+e.schema+suffix)
		for _, sql := range []string{`DROP OWNED BY %s`, `DROP ROLE %s`} {
			if _, err := e.pool.Exec(ctx, fmt.Sprintf(sql, role)); err != nil {
				t.Logf("cleanup: %v", err)
			}
		}
	})
	for _, g := range grants {
		_, err := e.pool.Exec(ctx, g.sql(schema, role))
		require.NoError(t, err, g)
	}
	u, err := url.Parse(e.url)
	require.NoError(t, err)
	u.User = url.UserPassword("r_"+e.schema+suffix, password)
	return u.String()
}

// A client and a worker run everything they do under an ordinary role that
// holds only appGrants: insert (one, in a transaction, COPY), get, cancel,
// lease, heartbeat, retry, fail, complete, LISTEN, and the retention
// cleaner. The worker's logs never hold a payload or the password, even
// when connections fail.
func TestLeastPrivilegeRoleRunsEverything(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	const password = "pw-Zq8sJx2Lk5"
	const secret = "SECRET-7f3a9c"
	roleURL := appRole(t, e, "", password, appGrants)
	tp := newTrackedPool(t, roleURL)

	var who string
	require.NoError(t, tp.QueryRow(ctx, `SELECT current_user`).Scan(&who))
	_, err := tp.Exec(ctx, `CREATE TABLE not_allowed (id int)`)
	requireSQLState(t, err, "42501") // no CREATE on the schema

	client, err := tasuki.NewClient[secretJob](tp.Pool, tasuki.ClientConfig{})
	require.NoError(t, err)
	_, err = client.Insert(ctx, secretJob{Token: secret, N: 1}, nil)
	require.NoError(t, err)
	_, err = client.Insert(ctx, secretJob{Token: secret, N: 2, Fail: true}, nil)
	require.NoError(t, err)
	_, err = client.Insert(ctx, secretJob{Token: secret, N: 3, Panic: true}, nil)
	require.NoError(t, err)
	_, err = client.Insert(ctx, secretJob{Token: secret, N: 4, Sleep: 1500}, nil) // outlives a heartbeat
	require.NoError(t, err)
	require.NoError(t, pgx.BeginFunc(ctx, tp.Pool, func(tx pgx.Tx) error {
		_, err := client.InsertTx(ctx, tx, secretJob{Token: secret, N: 5}, nil)
		return err
	}))
	n, err := client.InsertMany(ctx, []secretJob{{Token: secret, N: 6}, {Token: secret, N: 7}}, nil)
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	later, err := client.Insert(ctx, secretJob{Token: secret, N: 8}, &tasuki.InsertOpts{Delay: time.Hour})
	require.NoError(t, err)
	got, err := client.Get(ctx, later.ID)
	require.NoError(t, err)
	assert.Equal(t, secret, got.Payload.Token)
	_, err = client.Cancel(ctx, later.ID)
	require.NoError(t, err)
	// A stored payload that does not decode: the worker fails it and logs
	// why. Its number must not reach the log.
	const secretNumber = "98765432109876543210987"
	raw, err := tasuki.NewClient[json.RawMessage](tp.Pool, tasuki.ClientConfig{Kind: "secret"})
	require.NoError(t, err)
	undecodable, err := raw.Insert(ctx, json.RawMessage(`{"token": "`+secret+`", "n": `+secretNumber+`}`), nil)
	require.NoError(t, err)

	// Retention is the queue's setting, made by an operator (not the role):
	// the canceled job goes at once, the rest stays.
	operator, err := tasuki.NewAdmin(e.pool)
	require.NoError(t, err)
	require.NoError(t, operator.SetRetention(ctx, tasuki.DefaultQueue, tasuki.Retention{
		Completed: tasuki.KeepForever, Failed: tasuki.KeepForever, Canceled: time.Millisecond,
	}))
	logger, logs := capturedLogger()
	var failedOnce atomic.Bool
	w, err := worker.New(tp.Pool, worker.Config{
		LeaseDuration: time.Second, PollInterval: 50 * time.Millisecond, RetryPolicy: func(int) time.Duration { return 0 },
		CleanInterval: 100 * time.Millisecond,
		Logger:        logger,
	}, worker.Handle(worker.HandlerFunc[secretJob](func(ctx context.Context, job *tasuki.Job[secretJob]) error {
		switch {
		case job.Payload.Panic && job.Attempt == 1:
			panic("the handler panics (no payload in this message)")
		case job.Payload.Fail && failedOnce.CompareAndSwap(false, true):
			return errors.New("the handler fails once (no payload in this message)")
		}
		time.Sleep(ms(job.Payload.Sleep))
		return nil
	})))
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()

	waitUntil(t, "the listener to LISTEN under the role", bound, func() bool { return tp.listening(t, e.pool) != 0 })
	waitUntil(t, "the jobs to finish", bound, func() bool {
		c := e.counts()
		return c[tasuki.StatusCompleted] == 7 && c[tasuki.StatusFailed] == 1
	})
	waitUntil(t, "the cleaner to delete the canceled job", bound, func() bool {
		return e.count(`SELECT count(*) FROM tasuki_job WHERE id = $1`, later.ID) == 0
	})
	// Connection failures are logged with their errors: terminate every
	// connection, and see the worker carry on under the role.
	require.Positive(t, tp.terminateAll(t, e.pool))
	// The client shares the worker's pool: each of its dead connections
	// fails one statement before the pool drops it.
	var afterFault *tasuki.Job[secretJob]
	for try := 0; try < 20; try++ {
		if afterFault, err = client.Insert(ctx, secretJob{Token: secret, N: 9}, nil); err == nil {
			break
		}
	}
	require.NoError(t, err)
	waitUntil(t, "a job inserted after the fault to complete", bound, func() bool {
		j, err := client.Get(ctx, afterFault.ID)
		return err == nil && j.Status == tasuki.StatusCompleted
	})
	stop()
	require.NoError(t, <-done)

	// A worker whose listener cannot connect logs that, password-free.
	badListen := strings.Replace(roleURL, fmt.Sprintf(":%d/", testPort(t, e.url)), ":1/", 1)
	require.NotEqual(t, roleURL, badListen)
	w2, err := worker.New(tp.Pool, worker.Config{
		Queue: "other", ListenURL: badListen, Logger: logger,
	}, worker.Handle(worker.HandlerFunc[secretJob](nop[secretJob])))
	require.NoError(t, err)
	runCtx2, stop2 := context.WithCancel(ctx)
	go func() { done <- w2.Run(runCtx2) }()
	waitUntil(t, "the listener's connection failure to be logged", bound, func() bool {
		return strings.Contains(logs.String(), "listener disconnected")
	})
	stop2()
	require.NoError(t, <-done)

	out := logs.String()
	for _, want := range []string{"handler panicked", "will retry", "does not decode", "listener disconnected"} {
		assert.Contains(t, out, want, "the log covers the interesting paths")
	}
	assert.NotContains(t, out, secret, "no payload in the logs")
	assert.NotContains(t, out, password, "no password in the logs")
	job, err := raw.Get(ctx, undecodable.ID)
	require.NoError(t, err)
	assert.Equal(t, tasuki.StatusFailed, job.Status)
	t.Logf("client and worker ran as %s with only: %v", who, appGrants)
	t.Run("no number of an undecodable payload in the log", func(t *testing.T) {
		expect(t, !strings.Contains(out, secretNumber),
			"a number from an undecodable payload is in the log")
	})
}

func requireSQLState(t *testing.T, err error, code string) {
	t.Helper()
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, code, pgErr.Code, pgErr.Message)
}

func testPort(t *testing.T, connString string) uint16 {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(connString)
	require.NoError(t, err)
	return cfg.ConnConfig.Port
}

// Each of appGrants is needed: without it, something a client or a worker
// does fails with a permission error.
func TestLeastPrivilegeGrantsAreEachNeeded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	for i, missing := range appGrants {
		t.Run("without "+missing.String(), func(t *testing.T) {
			var grants []grant
			for j, g := range appGrants {
				if j != i {
					grants = append(grants, g)
				}
			}
			roleURL := appRole(t, e, fmt.Sprintf("_%d", i), "pw", grants)
			pool := testdb.Pool(t, roleURL)
			client, err := tasuki.NewClient[faultJob](pool, tasuki.ClientConfig{})
			require.NoError(t, err)
			_, insertErr := client.Insert(ctx, faultJob{N: 1}, nil)
			if insertErr != nil {
				t.Logf("without %s: Insert fails: %v", missing, insertErr)
				return
			}
			_, err = e.client.Insert(ctx, faultJob{N: 2}, nil)
			require.NoError(t, err)
			// The worker's statements: run one and watch its log.
			logger, logs := capturedLogger()
			w, err := worker.New(pool, worker.Config{
				PollInterval: 50 * time.Millisecond, CleanInterval: 50 * time.Millisecond, Logger: logger}, worker.Handle(worker.HandlerFunc[faultJob](nop[faultJob])))
			require.NoError(t, err)
			runCtx, stop := context.WithCancel(ctx)
			defer stop()
			done := make(chan error, 1)
			go func() { done <- w.Run(runCtx) }()
			// Either the worker refuses to start (a privilege its own
			// statements need), or it runs and logs the failure (the
			// cleaner's DELETE).
			var runErr error
			returned := false
			waitUntil(t, "a permission error", 30*time.Second, func() bool {
				select {
				case runErr = <-done:
					returned = true
				default:
				}
				return returned || strings.Contains(logs.String(), "permission denied")
			})
			if returned {
				require.ErrorIs(t, runErr, tasuki.ErrPermissionDenied)
				t.Logf("without %s the worker does not start: %v", missing, runErr)
				return
			}
			stop()
			require.NoError(t, <-done)
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, "permission denied") {
					t.Logf("without %s the worker logs: %s", missing, line)
					break
				}
			}
		})
	}
}
