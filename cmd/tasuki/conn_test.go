package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
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
}

// TestBadDatabaseURL checks that a database that cannot be reached, or a
// URL that cannot be parsed, gives one line on stderr, a non-zero exit,
// and never the password.
func TestBadDatabaseURL(t *testing.T) {
	t.Parallel()
	const password = "Tr0ub4dor3Secret"
	for _, tc := range []struct {
		name, url, want string
	}{
		{"refused", "postgres://tasuki:" + password + "@127.0.0.1:1/nope", "cannot connect to postgres://tasuki:xxxxx@127.0.0.1:1/nope"},
		{"query password", "postgres://tasuki@127.0.0.1:1/nope?password=" + password, "cannot connect to"},
		{"keyword/value", "host=127.0.0.1 port=1 user=tasuki password=" + password, "cannot connect to host=127.0.0.1 port=1 user=tasuki password=xxxxx"},
		{"unencoded /", "postgres://tasuki:" + password[:4] + "/" + password[4:] + "@127.0.0.1:1/nope", "percent-encode"},
		{"unencoded #", "postgres://tasuki:1234#" + password + "@127.0.0.1:1/nope", "percent-encode"},
		{"bad option", "postgres://tasuki:" + password + "@127.0.0.1:1/nope?sslmode=sometimes", "sslmode is invalid"},
	} {
		for _, via := range []string{"env", "flag"} {
			for _, command := range [][]string{{"migrate", "version"}, {"demo", "--duration", "1s"}} {
				t.Run(fmt.Sprintf("%s/%s/%s", tc.name, via, command[0]), func(t *testing.T) {
					t.Parallel()
					var r result
					if via == "env" {
						r = runCLI(t, tc.url, command...)
					} else {
						r = runCLI(t, "", append(command, "--database-url", tc.url)...)
					}
					line := requireOneLineError(t, r)
					assert.Contains(t, line, tc.want)
					assert.NotContains(t, line, password)
					// Nor a recognisable part of it.
					assert.NotContains(t, line, password[4:])
				})
			}
		}
	}
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
