package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
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
		pool, err := connect(ctx, rawURL, a.urlSource(), opts.MinConns)
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
	pool, err := connect(ctx, cluster.URL, "the throwaway cluster", opts.MinConns)
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
// password is reported here, in one line that says what is wrong and
// where to fix it (source: "--database-url" or "DATABASE_URL"), rather
// than later by whatever first uses the pool. Neither the URL nor pgx's
// error text reaches the user with the password in it.
func connect(ctx context.Context, rawURL, source string, minConns int32) (*pgxpool.Pool, error) {
	invalid := func(err error) error {
		return fmt.Errorf("invalid database URL in %s (%s): %s", source, redactURL(rawURL), scrub(err.Error(), passwords(rawURL)))
	}
	if err := checkURLSyntax(rawURL); err != nil {
		return nil, invalid(err)
	}
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, invalid(parseErrorDetail(err))
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	if cfg.MaxConns < minConns {
		cfg.MaxConns = minConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = pool.Ping(ctx)
		if err != nil {
			pool.Close()
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, errors.New(scrub(describeConnectError(cfg.ConnConfig.Config, err, source), passwords(rawURL)))
	}
	return pool, nil
}

// describeConnectError says in one line why a connection failed and what
// to do. pgx reports every address and attempt it tried: with sslmode
// prefer, the default, a failed TLS attempt comes before the real cause.
// The cause is taken from that report and the rest left out.
func describeConnectError(cfg pgconn.Config, err error, source string) string {
	target := "cannot connect to " + serverAddresses(cfg)
	err = lastAttempt(err)
	var pgErr *pgconn.PgError
	var dnsErr *net.DNSError
	var netErr net.Error
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	switch {
	case errors.As(err, &pgErr):
		switch pgErr.Code {
		case "28P01":
			return fmt.Sprintf("%s: password authentication failed for user %q — check the user name and password in %s", target, cfg.User, source)
		case "3D000":
			return fmt.Sprintf("%s: database %q does not exist — create it, or correct the database name in %s", target, cfg.Database, source)
		case "28000":
			return fmt.Sprintf("%s: %s — check the user name in %s, and the server's pg_hba.conf", target, pgErr.Message, source)
		case "42501":
			return fmt.Sprintf("%s: %s — grant the role CONNECT on the database, or use another role in %s", target, pgErr.Message, source)
		case "53300":
			return fmt.Sprintf("%s: %s — the server has no connection to spare; lower pool_max_conns in %s, or raise the server's max_connections", target, pgErr.Message, source)
		case "57P03":
			return fmt.Sprintf("%s: %s — the server is starting or shutting down; try again shortly", target, pgErr.Message)
		}
		return fmt.Sprintf("%s: %s (SQLSTATE %s) — check %s", target, pgErr.Message, pgErr.Code, source)
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return fmt.Sprintf("%s: unknown host %q — check the host name in %s", target, dnsErr.Name, source)
		}
		return fmt.Sprintf("%s: cannot look up host %q (%s) — check the host name in %s, and this machine's DNS", target, dnsErr.Name, dnsErr.Err, source)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("%s: connection refused — is PostgreSQL running there? check %s", target, source)
	case errors.Is(err, syscall.ENOENT):
		return fmt.Sprintf("%s: no such socket — is PostgreSQL running there? check %s", target, source)
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Sprintf("%s: no answer within %s — is the host reachable and the port open? check %s", target, cfg.ConnectTimeout, source)
	case errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr):
		return fmt.Sprintf("%s: the server's TLS certificate cannot be verified (%s) — give its CA with sslrootcert, or choose a lower sslmode, in %s",
			target, lastCause(err), source)
	case strings.Contains(err.Error(), "server refused TLS connection"):
		// The last attempt only when TLS is required: otherwise pgx tries
		// again without it.
		return fmt.Sprintf("%s: the server does not accept TLS connections, which the URL's sslmode requires — "+
			"enable TLS on the server, or set sslmode=prefer in %s", target, source)
	}
	return fmt.Sprintf("%s: %s — check %s", target, lastCause(err), source)
}

// lastAttempt returns, of the attempts pgx made and reports together, the
// last: with sslmode prefer, the one without TLS after the one with it;
// with several hosts, the last host's.
func lastAttempt(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if joined, ok := e.(interface{ Unwrap() []error }); ok {
			if errs := joined.Unwrap(); len(errs) > 0 {
				return errs[len(errs)-1]
			}
		}
	}
	return err
}

// serverAddresses lists the servers a configuration tries, as host:port
// or a socket's path, each once.
func serverAddresses(cfg pgconn.Config) string {
	var out []string
	seen := map[string]bool{}
	add := func(host string, port uint16) {
		addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
		if strings.HasPrefix(host, "/") {
			_, addr = pgconn.NetworkAddress(host, port)
		}
		if !seen[addr] {
			seen[addr] = true
			out = append(out, addr)
		}
	}
	add(cfg.Host, cfg.Port)
	for _, fb := range cfg.Fallbacks {
		add(fb.Host, fb.Port)
	}
	return strings.Join(out, ", ")
}

// lastCause is the text of the last attempt pgx reports, without the
// address and attempt that pgx puts before each: "dial error: dial tcp
// 10.0.0.1:5432: connect: no route to host" gives "connect: no route to
// host".
func lastCause(err error) string {
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if i := strings.LastIndex(last, ": "); i >= 0 && i+2 < len(last) {
		// Keep the operation that failed with its cause, as in
		// "connect: no route to host".
		if j := strings.LastIndex(last[:i], ": "); j >= 0 {
			return last[j+2:]
		}
	}
	return last
}

// errMalformedURL explains the usual cause of a URL that does not parse.
var errMalformedURL = errors.New("not a valid URL: percent-encode special characters " +
	"in the user name and password (@ as %40, / as %2F, : as %3A, # as %23, ? as %3F), and give the port as a number")

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
	inner := errors.Unwrap(pce)
	switch {
	case inner == nil:
	case inner.Error() == "invalid keyword/value":
		return errConnStringFormat
	case inner.Error() == "sslmode is invalid":
		return errors.New("sslmode is invalid: use disable, allow, prefer, require, verify-ca or verify-full")
	}
	withoutString := *pce
	withoutString.ConnString = ""
	return errors.New(strings.TrimPrefix(withoutString.Error(), "cannot parse ``: "))
}

// errConnStringFormat shows the two forms of a connection string.
var errConnStringFormat = errors.New("expected postgres://user:password@host:5432/dbname " +
	"or keyword=value pairs such as 'host=localhost dbname=app'")

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
