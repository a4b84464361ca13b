package tasuki

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/tasukiq/tasuki/schema"
)

// migrationLockID is the advisory lock that serialises tasuki migrations
// across processes. It differs from goose's default lock id, so an
// application migrating its own schema with goose is not blocked.
const migrationLockID = 0x7461_7375_6b69 // "tasuki"

// Migrator applies and inspects tasuki's migrations in the database behind
// a pool, in the first schema of its search_path. Concurrent migrators wait
// for each other through an advisory lock. Close it after use.
type Migrator struct {
	db       *sql.DB
	provider *goose.Provider
}

// NewMigrator returns a Migrator for pool. Its history is kept in the table
// tasuki_schema_version, apart from the application's own goose history.
func NewMigrator(pool *pgxpool.Pool) (*Migrator, error) {
	if pool == nil {
		return nil, &InvalidOptionError{Option: "pool", Value: nil, Reason: "a *pgxpool.Pool is required"}
	}
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(migrationLockID),
		lock.WithLockTimeout(1, 300), // every second, for up to 5 minutes
	)
	if err != nil {
		return nil, fmt.Errorf("tasuki: migration lock: %w", err)
	}
	sqlDB := stdlib.OpenDBFromPool(pool)
	provider, err := goose.NewProvider(goose.DialectPostgres, sqlDB, schema.Migrations,
		goose.WithTableName(schema.VersionTable),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("tasuki: load migrations: %w", err)
	}
	return &Migrator{db: sqlDB, provider: provider}, nil
}

// Close releases the migrator's connection wrapper; the pool stays open.
func (m *Migrator) Close() error { return m.db.Close() }

// MigrationResult is one applied or rolled back migration.
type MigrationResult struct {
	// Version is the migration's number.
	Version int64
	// Source is the migration's file name.
	Source string
	// Duration is how long it took.
	Duration time.Duration
}

func results(rs []*goose.MigrationResult) []MigrationResult {
	out := make([]MigrationResult, 0, len(rs))
	for _, r := range rs {
		out = append(out, MigrationResult{Version: r.Source.Version, Source: r.Source.Path, Duration: r.Duration})
	}
	return out
}

// Up applies every pending migration and returns those it applied; none
// when the schema is current.
func (m *Migrator) Up(ctx context.Context) ([]MigrationResult, error) {
	rs, err := m.provider.Up(ctx)
	if err != nil {
		return results(rs), fmt.Errorf("tasuki: migrate up: %w", err)
	}
	return results(rs), nil
}

// DownTo rolls back every migration above version; DownTo(ctx, 0) removes
// tasuki's schema, and its jobs, entirely.
func (m *Migrator) DownTo(ctx context.Context, version int64) ([]MigrationResult, error) {
	rs, err := m.provider.DownTo(ctx, version)
	if err != nil {
		return results(rs), fmt.Errorf("tasuki: migrate down to %d: %w", version, err)
	}
	return results(rs), nil
}

// Version returns the applied schema version (0 when none is applied) and
// the latest version this release of tasuki knows.
func (m *Migrator) Version(ctx context.Context) (current, latest int64, err error) {
	current, latest, err = m.provider.GetVersions(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("tasuki: read schema version: %w", err)
	}
	return current, latest, nil
}

// MigrationStatus tells whether one migration is applied.
type MigrationStatus struct {
	// Version is the migration's number.
	Version int64
	// Source is the migration's file name.
	Source string
	// Applied reports whether the migration is applied.
	Applied bool
	// AppliedAt is when it was applied; zero when it is not.
	AppliedAt time.Time
}

// Status lists every migration and whether it is applied.
func (m *Migrator) Status(ctx context.Context) ([]MigrationStatus, error) {
	st, err := m.provider.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("tasuki: migration status: %w", err)
	}
	out := make([]MigrationStatus, 0, len(st))
	for _, s := range st {
		out = append(out, MigrationStatus{
			Version:   s.Source.Version,
			Source:    s.Source.Path,
			Applied:   s.State == goose.StateApplied,
			AppliedAt: s.AppliedAt,
		})
	}
	return out, nil
}

// Migrate applies tasuki's pending migrations to the database behind pool.
// It is safe to call at every start of the application: when the schema is
// current it changes nothing.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	m, err := NewMigrator(pool)
	if err != nil {
		return err
	}
	defer m.Close()
	_, err = m.Up(ctx)
	return err
}

// SchemaVersion returns the tasuki schema version applied to the database
// behind pool; 0 when none is.
func SchemaVersion(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	m, err := NewMigrator(pool)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	current, _, err := m.Version(ctx)
	return current, err
}
