package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/internal/pgtemp"
	"github.com/tasukiq/tasuki/tasuki"
)

// errNoURL is returned by commands that must not run on a throwaway
// cluster, such as migrate: migrating a database that vanishes on exit
// would only hide the mistake of a missing URL.
var errNoURL = errors.New("set --database-url or DATABASE_URL")

// dbOptions says what a command needs from the database.
type dbOptions struct {
	// Throwaway, when set, lets the command run without a URL: a throwaway
	// cluster is started with these options and tasuki's migrations are
	// applied to it. Nil means a URL is required.
	Throwaway *pgtemp.Options
	// MinConns raises the pool's maximum size to at least this many
	// connections; pgx's default (the number of CPUs, at least 4) can be
	// too small for a worker plus a producer on a small machine. A
	// pool_max_conns in the URL above it is kept.
	MinConns int32
}

// connectTimeout bounds each connection attempt when the URL sets no
// connect_timeout, so that an unreachable host fails in seconds rather
// than after the operating system's TCP timeout.
const connectTimeout = 10 * time.Second

// openDB returns a pool on the configured database, checked with a ping,
// and a cleanup func that closes the pool and then stops the throwaway
// cluster, if one was started. Call cleanup exactly once, after everything
// using the pool has stopped.
func (a *app) openDB(ctx context.Context, opts dbOptions) (*pgxpool.Pool, func(), error) {
	rawURL := a.url()
	if rawURL != "" {
		pool, err := connect(ctx, rawURL, opts.MinConns)
		if err != nil {
			return nil, nil, err
		}
		a.log.Info("using database", slog.String("url", redactURL(rawURL)))
		return pool, pool.Close, nil
	}
	if opts.Throwaway == nil {
		return nil, nil, errNoURL
	}

	a.log.Info("no --database-url or DATABASE_URL set: starting a throwaway PostgreSQL cluster, deleted on exit")
	pgOpts := *opts.Throwaway
	if pgOpts.Logf == nil {
		pgOpts.Logf = func(format string, args ...any) { a.log.Debug(fmt.Sprintf(format, args...)) }
	}
	cluster, err := pgtemp.Start(ctx, pgOpts)
	if err != nil {
		return nil, nil, fmt.Errorf("start a throwaway PostgreSQL cluster: %w", err)
	}
	pool, err := connect(ctx, cluster.URL, opts.MinConns)
	if err != nil {
		cluster.Stop()
		return nil, nil, err
	}
	if err := tasuki.Migrate(ctx, pool); err != nil {
		pool.Close()
		cluster.Stop()
		return nil, nil, err
	}
	a.log.Info("throwaway cluster ready", slog.String("url", cluster.URL), slog.String("dir", cluster.Dir))
	return pool, func() {
		pool.Close()
		cluster.Stop()
	}, nil
}

// connect opens a pool on rawURL and pings it, so that a wrong host or
// password is reported here, in one line, rather than later by whatever
// first uses the pool. Neither the URL nor pgx's error text reaches the
// user with the password in it.
func connect(ctx context.Context, rawURL string, minConns int32) (*pgxpool.Pool, error) {
	fail := func(what string, err error) error {
		return fmt.Errorf("%s %s: %s", what, redactURL(rawURL), scrub(err.Error(), passwords(rawURL)))
	}
	if err := checkURLSyntax(rawURL); err != nil {
		return nil, fmt.Errorf("invalid database URL %s: %w", redactURL(rawURL), err)
	}
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fail("invalid database URL", parseErrorDetail(err))
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	if cfg.MaxConns < minConns {
		cfg.MaxConns = minConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fail("cannot connect to", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fail("cannot connect to", err)
	}
	return pool, nil
}

// errMalformedURL explains the usual cause of a URL that does not parse.
var errMalformedURL = errors.New("not a valid URL; percent-encode special characters " +
	"in the user name and password (@ as %40, / as %2F, : as %3A, # as %23, ? as %3F)")

// checkURLSyntax rejects a URL that net/url cannot parse or that has a
// fragment. Both mean an unencoded special character, most often in the
// password; pgx would otherwise report the error quoting fragments of the
// password, or, for a '#', silently drop the rest of the URL and try to
// connect to the wrong server.
func checkURLSyntax(rawURL string) error {
	if !strings.Contains(rawURL, "://") {
		return nil // a keyword/value string
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Fragment != "" || strings.HasSuffix(rawURL, "#") {
		return errMalformedURL
	}
	return nil
}

// parseErrorDetail returns what pgx found wrong with a connection string,
// without the string itself: pgx's own message quotes it with the password
// masked, but its masking misses a password given as a query parameter.
func parseErrorDetail(err error) error {
	var pce *pgconn.ParseConfigError
	if !errors.As(err, &pce) {
		return err
	}
	if inner := errors.Unwrap(pce); inner != nil {
		return inner
	}
	return errors.New("cannot parse it; expected postgres://user:password@host:port/dbname or keyword=value pairs")
}

// redacted replaces a password wherever one is printed.
const redacted = "xxxxx"

var (
	// dsnPassword matches a password in a keyword/value connection string
	// (password=secret or password='a secret') and in a URL's query
	// (?password=secret), where libpq accepts it too. An unterminated
	// quote runs to the end, so that no part of the password is kept.
	dsnPassword = regexp.MustCompile(`(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*(?:'|$)|[^\s&]*)`)
	// urlUserinfo matches the user:password@ part of a URL that net/url
	// cannot parse; the password may itself hold '@' or '/'.
	urlUserinfo = regexp.MustCompile(`^([a-zA-Z][a-zA-Z0-9+.-]*://[^:@/]*:)(.*)@`)
)

// redactURL returns a connection string fit to print: any password, in the
// userinfo, in the query or as a keyword/value pair, becomes "xxxxx".
// Everything else is kept, so the user can see which server and database
// were meant.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" && u.Host != "" && checkURLSyntax(s) == nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), redacted)
		}
		q := u.Query()
		changed := false
		for k := range q {
			if k == "password" || k == "sslpassword" {
				q[k] = []string{redacted}
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	s = urlUserinfo.ReplaceAllString(s, "${1}"+redacted+"@")
	return dsnPassword.ReplaceAllString(s, "${1}"+redacted)
}

// passwords returns every password written in a connection string, both
// as written and decoded, so that scrub can remove them from error texts
// that quote the string in some other form.
func passwords(s string) []string {
	var out []string
	add := func(p string) {
		p = strings.Trim(p, "'")
		if p != "" {
			out = append(out, p)
		}
	}
	if u, err := url.Parse(s); err == nil {
		if p, ok := u.User.Password(); ok {
			add(p)
		}
		for k, vs := range u.Query() {
			if k == "password" || k == "sslpassword" {
				for _, v := range vs {
					add(v)
				}
			}
		}
	}
	if m := urlUserinfo.FindStringSubmatch(s); m != nil {
		add(m[2])
	}
	for _, m := range dsnPassword.FindAllStringSubmatch(s, -1) {
		add(m[2])
	}
	return out
}

// scrub replaces every occurrence of the given secrets in text. Longer
// secrets go first, so that a secret containing another is removed whole.
func scrub(text string, secrets []string) string {
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	for _, s := range secrets {
		text = strings.ReplaceAll(text, s, redacted)
	}
	return text
}
