// Package testdb gives each test its own PostgreSQL schema with tasuki's
// migrations applied, on the server named by TEST_DATABASE_URL or, when that
// is unset, on a throwaway cluster started once per test binary. Tests in
// different schemas run in parallel without seeing each other's jobs; the
// inserts' NOTIFY names its schema, so their wake-ups do not mix
// either.
//
// It is test support: only _test.go files import it.
package testdb

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/tasukiq/tasuki/internal/pgtemp"
	"github.com/tasukiq/tasuki/schema"
)

var (
	serverURL string
	cluster   *pgtemp.Cluster
	counter   atomic.Int64
)

// Main runs the tests of a package: call it from TestMain. It starts a
// throwaway cluster unless TEST_DATABASE_URL is set, and stops it after.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	serverURL = os.Getenv("TEST_DATABASE_URL")
	if serverURL == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		c, err := pgtemp.Start(ctx, pgtemp.Options{})
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "testdb:", err)
			return 1
		}
		cluster = c
		serverURL = c.URL
		defer c.Stop()
	}
	name := fmt.Sprintf("examples_%d", os.Getpid())
	if err := execDDL("DROP SCHEMA IF EXISTS " + pgx.Identifier{name}.Sanitize() + " CASCADE; CREATE SCHEMA " + pgx.Identifier{name}.Sanitize()); err != nil {
		fmt.Fprintln(os.Stderr, "testdb: examples schema:", err)
		return 1
	}
	defer execDDL("DROP SCHEMA IF EXISTS " + pgx.Identifier{name}.Sanitize() + " CASCADE")
	// Runnable examples read as a user's program would, with
	// pgxpool.New(ctx, os.Getenv("DATABASE_URL")): for this process, that
	// is a schema of their own.
	os.Setenv("DATABASE_URL", withSearchPath(serverURL, name))
	return m.Run()
}

func execDDL(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func withSearchPath(url, schema string) string {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + "search_path=" + schema
}

// URL is the server's connection string, connecting to its default schema.
func URL() string { return serverURL }

// Cluster is the throwaway cluster, or nil when TEST_DATABASE_URL is set.
// Tests that restart the server skip themselves when it is nil.
func Cluster() *pgtemp.Cluster { return cluster }

var unsafe = regexp.MustCompile(`[^a-z0-9_]+`)

// Schema creates an empty schema for t, dropped at cleanup, and returns its
// name and a connection string whose search_path is that schema.
func Schema(t testing.TB) (name, url string) {
	t.Helper()
	name = unsafe.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("t_%s_%d", name, counter.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		t.Fatalf("testdb: connect: %v", err)
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+ident); err != nil {
		t.Fatalf("testdb: create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			t.Logf("testdb: drop schema %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+ident+" CASCADE"); err != nil {
			t.Logf("testdb: drop schema %s: %v", name, err)
		}
	})
	return name, withSearchPath(serverURL, name)
}

// NewEmpty returns a pool on a fresh schema without tasuki's tables. It is
// closed at cleanup.
func NewEmpty(t testing.TB) *pgxpool.Pool {
	t.Helper()
	_, url := Schema(t)
	return Pool(t, url)
}

// New returns a pool on a fresh schema with tasuki's migrations applied. It
// is closed at cleanup.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool := NewEmpty(t)
	MigrateUp(t, pool)
	return pool
}

// Pool opens a pool on url, closed at cleanup.
func Pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	if cfg.MaxConns < 8 {
		cfg.MaxConns = 8
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("testdb: pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// MigrateUp applies the migrations without the cross-process migration lock
// that tasuki.Migrate takes: each test owns its schema, and parallel tests
// must not queue behind one lock.
func MigrateUp(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	sqlDB := stdlib.OpenDBFromPool(pool)
	defer sqlDB.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, schema.Migrations,
		goose.WithTableName(schema.VersionTable), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatalf("testdb: migrations: %v", err)
	}
	if _, err := p.Up(context.Background()); err != nil {
		t.Fatalf("testdb: migrate up: %v", err)
	}
}
