package main

import (
	"errors"
	"fmt"
	neturl "net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, want string
	}{
		{"no password", "postgres://app@db:5432/app?sslmode=disable", "postgres://app@db:5432/app?sslmode=disable"},
		{"no user", "postgres://db:5432/app", "postgres://db:5432/app"},
		{"password", "postgres://app:s3cret@db:5432/app", "postgres://app:xxxxx@db:5432/app"},
		{"postgresql scheme", "postgresql://app:s3cret@db/app", "postgresql://app:xxxxx@db/app"},
		{"encoded password", "postgres://app:p%40ss%2Fw@db/app", "postgres://app:xxxxx@db/app"},
		{"query password", "postgres://app@db/app?password=s3cret&sslmode=disable", "postgres://app@db/app?password=xxxxx&sslmode=disable"},
		{"sslpassword", "postgres://app@db/app?sslpassword=s3cret", "postgres://app@db/app?sslpassword=xxxxx"},
		{"unencoded @ and /", "postgres://app:s3/cr@et@db:5432/app", "postgres://app:xxxxx@db:5432/app"},
		{"unencoded #", "postgres://app:123#et@db/app", "postgres://app:xxxxx@db/app"},
		{"keyword/value", "host=db user=app password=s3cret dbname=app", "host=db user=app password=xxxxx dbname=app"},
		{"keyword/value quoted", "host=db password='s3 cret' dbname=app", "host=db password=xxxxx dbname=app"},
		{"keyword/value spaces", "host=db password = s3cret", "host=db password = xxxxx"},
		{"keyword/value unterminated quote", "host=db password='s3 cret", "host=db password=xxxxx"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := redactURL(tc.in)
			assert.Equal(t, tc.want, got)
			for _, p := range passwords(tc.in) {
				assert.NotContains(t, got, p)
			}
		})
	}
}

func TestPasswords(t *testing.T) {
	t.Parallel()
	assert.ElementsMatch(t, []string{"p@ss/w", "p%40ss%2Fw"}, passwords("postgres://app:p%40ss%2Fw@db/app"))
	assert.Equal(t, []string{"s3 cret"}, passwords("host=db password='s3 cret'"))
	assert.Empty(t, passwords("postgres://app@db/app"))
}

func TestScrub(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "auth failed for xxxxx at xxxxx",
		scrub("auth failed for s3cret at s3cret-longer", []string{"s3cret", "s3cret-longer"}))
}

func TestErrorLine(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "tasuki: boom", errorLine(errors.New("boom")))
	assert.Equal(t, "tasuki: migrate up: boom", errorLine(errors.New("tasuki: migrate up: boom")))
	assert.Equal(t, "tasuki: failed to connect: a refused; b refused",
		errorLine(errors.New("failed to connect:\n\ta refused\n\ta refused\n\tb refused\n")))

	// The library's errors start with "tasuki: " and are wrapped in other
	// tasuki errors, the command's or the library's own: the prefix is
	// printed once, at the start, wherever it was.
	denied := fmt.Errorf("tasuki: read queue statistics: %w (permission denied for table tasuki_job)", tasuki.ErrPermissionDenied)
	line := errorLine(denied)
	assert.Equal(t, 1, strings.Count(line, "tasuki: "), line)
	assert.True(t, strings.HasPrefix(line, "tasuki: read queue statistics: permission denied: "), line)
	assert.Equal(t, "tasuki: pause queue: permission denied; the schema is missing",
		errorLine(fmt.Errorf("pause queue: %w", errors.New("tasuki: permission denied; tasuki: the schema is missing"))))
	assert.Equal(t, "tasuki: a: b: c", errorLine(errors.New("tasuki: tasuki: a: tasuki: b:\n\ttasuki: c")))
	// Only a prefix is removed, not the word.
	assert.Equal(t, `tasuki: no queue named "tasuki: x"`, errorLine(errors.New(`no queue named "tasuki: x"`)))
	assert.Equal(t, "tasuki: 2 of 3 jobs not canceled: job 1 not found; job 2 not found",
		errorLine(joinFailures("canceled", []error{errors.New("tasuki: job 1 not found"), errors.New("tasuki: job 2 not found")}, 3)))
}

// TestBadDatabaseURL checks that a database that cannot be reached, or a
// URL that cannot be parsed, gives one line on stderr that says what is
// wrong and where to fix it, a non-zero exit, and never the password.
func TestBadDatabaseURL(t *testing.T) {
	t.Parallel()
	const password = "Tr0ub4dor3Secret"
	// SOURCE stands for where the URL came from: the flag or the environment.
	const refused = "tasuki: cannot connect to 127.0.0.1:1: connection refused — is PostgreSQL running there? check SOURCE"
	for _, tc := range []struct {
		name, url, want string
	}{
		{"refused", "postgres://tasuki:" + password + "@127.0.0.1:1/nope", refused},
		{"query password", "postgres://tasuki@127.0.0.1:1/nope?password=" + password, refused},
		{"keyword/value", "host=127.0.0.1 port=1 user=tasuki password=" + password, refused},
		{"require TLS", "postgres://tasuki:" + password + "@127.0.0.1:1/nope?sslmode=require", refused},
		{"no socket", "host=/nonexistent port=1 password=" + password,
			"tasuki: cannot connect to /nonexistent/.s.PGSQL.1: no such socket — is PostgreSQL running there? check SOURCE"},
		{"unknown host", "postgres://tasuki:" + password + "@no-such-host.invalid:5432/nope",
			`tasuki: cannot connect to no-such-host.invalid:5432: unknown host "no-such-host.invalid" — check the host name in SOURCE`},
		{"unencoded /", "postgres://tasuki:" + password[:4] + "/" + password[4:] + "@127.0.0.1:1/nope",
			"tasuki: invalid database URL in SOURCE (postgres://tasuki:xxxxx@127.0.0.1:1/nope): not a valid URL: percent-encode"},
		{"unencoded #", "postgres://tasuki:1234#" + password + "@127.0.0.1:1/nope",
			"tasuki: invalid database URL in SOURCE (postgres://tasuki:xxxxx@127.0.0.1:1/nope): not a valid URL: percent-encode"},
		{"bad option", "postgres://tasuki:" + password + "@127.0.0.1:1/nope?sslmode=sometimes",
			"tasuki: invalid database URL in SOURCE (postgres://tasuki:xxxxx@127.0.0.1:1/nope?sslmode=sometimes): sslmode is invalid: use disable, allow, prefer, require, verify-ca or verify-full"},
		{"bad port", "postgres://tasuki:" + password + "@127.0.0.1:x1/nope",
			"tasuki: invalid database URL in SOURCE (postgres://tasuki:xxxxx@127.0.0.1:x1/nope): not a valid URL: percent-encode"},
		{"bad timeout", "postgres://tasuki@127.0.0.1:1/nope?connect_timeout=soon&password=" + password,
			"tasuki: invalid database URL in SOURCE (postgres://tasuki@127.0.0.1:1/nope?connect_timeout=soon&password=xxxxx): invalid connect_timeout"},
		{"not a URL", "not a url",
			"tasuki: invalid database URL in SOURCE (not a url): expected postgres://user:password@host:5432/dbname or keyword=value pairs such as 'host=localhost dbname=app'"},
	} {
		for _, via := range []string{"env", "flag"} {
			for _, command := range [][]string{{"migrate", "version"}, {"demo", "--duration", "1s"}, {"stats"}} {
				t.Run(fmt.Sprintf("%s/%s/%s", tc.name, via, command[0]), func(t *testing.T) {
					t.Parallel()
					var r result
					source := "DATABASE_URL"
					if via == "env" {
						r = runCLI(t, tc.url, command...)
					} else {
						r = runCLI(t, "", append(command, "--database-url", tc.url)...)
						source = "--database-url"
					}
					line := requireOneLineError(t, r)
					assert.True(t, strings.HasPrefix(line, strings.ReplaceAll(tc.want, "SOURCE", source)), "line: %s", line)
					assert.NotContains(t, line, "tls error")
					assert.NotContains(t, line, password)
					// Nor a recognisable part of it.
					assert.NotContains(t, line, password[4:])
				})
			}
		}
	}
}

// TestConnectErrorsFromServer connects to the test server with what it
// refuses: each error says what is wrong without pgx's report of every
// attempt, such as the refused TLS attempt that sslmode=prefer (the
// default) makes first.
func TestConnectErrorsFromServer(t *testing.T) {
	t.Parallel()
	u, err := neturl.Parse(testdb.URL())
	require.NoError(t, err)
	hostPort := u.Host
	q := u.Query()
	q.Del("sslmode")
	u.RawQuery = q.Encode()

	noDB := *u
	noDB.Path = "/tasuki_no_such_db"
	line := requireOneLineError(t, runCLI(t, noDB.String(), "stats"))
	assert.Equal(t, "tasuki: cannot connect to "+hostPort+`: database "tasuki_no_such_db" does not exist — create it, or correct the database name in DATABASE_URL`, line)

	if testdb.Cluster() == nil {
		t.Skip("the server of TEST_DATABASE_URL may accept TLS")
	}
	tls := *u
	q.Set("sslmode", "require")
	tls.RawQuery = q.Encode()
	line = requireOneLineError(t, runCLI(t, "", "stats", "--database-url", tls.String()))
	assert.Equal(t, "tasuki: cannot connect to "+hostPort+": the server does not accept TLS connections, which the URL's sslmode requires — "+
		"enable TLS on the server, or set sslmode=prefer in --database-url", line)
}

func TestMigrateRequiresURL(t *testing.T) {
	t.Parallel()
	for _, sub := range []string{"up", "down", "status", "version"} {
		t.Run(sub, func(t *testing.T) {
			t.Parallel()
			line := requireOneLineError(t, runCLI(t, "", "migrate", sub))
			assert.Equal(t, "tasuki: set --database-url or DATABASE_URL", line)
			assert.False(t, strings.Contains(line, "throwaway"))
		})
	}
}
