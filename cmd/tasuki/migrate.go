package main

import (
	"context"
	"fmt"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasukiq/tasuki/tasuki"
)

func newMigrateCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply, roll back or inspect tasuki's database schema",
		Long: `migrate manages tasuki's tables in the database given by --database-url
or DATABASE_URL, in the first schema of the connection's search_path.

Its history is kept in the table tasuki_schema_version, apart from your
application's own migrations, and concurrent runs wait for each other, so
"tasuki migrate up" is safe to run at every deploy.

A database URL is required: migrate never starts a throwaway cluster.`,
		Example: `  tasuki migrate up --database-url postgres://app@localhost/app
  tasuki migrate status
  tasuki migrate down --to 0`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(
		newMigrateUpCmd(a),
		newMigrateDownCmd(a),
		newMigrateStatusCmd(a),
		newMigrateVersionCmd(a),
	)
	return cmd
}

// migrationResultJSON is one applied or rolled back migration in the
// output of migrate up --json and migrate down --json.
type migrationResultJSON struct {
	Version    int64   `json:"version"`
	Migration  string  `json:"migration"`
	DurationMS float64 `json:"duration_ms"`
}

// schemaVersionJSON is the output of migrate version --json, and part of
// that of up and down.
type schemaVersionJSON struct {
	// Current is the version applied to the database; 0 for none.
	Current int64 `json:"current"`
	// Latest is the latest version this build of tasuki knows.
	Latest int64 `json:"latest"`
}

// migrateUpJSON is the output of migrate up --json.
type migrateUpJSON struct {
	Applied []migrationResultJSON `json:"applied"`
	schemaVersionJSON
}

// migrateDownJSON is the output of migrate down --json.
type migrateDownJSON struct {
	RolledBack []migrationResultJSON `json:"rolled_back"`
	schemaVersionJSON
}

// migrationStatusJSON is one migration in the output of migrate status
// --json.
type migrationStatusJSON struct {
	Version   int64      `json:"version"`
	Migration string     `json:"migration"`
	Applied   bool       `json:"applied"`
	AppliedAt *time.Time `json:"applied_at"`
}

func toResultsJSON(rs []tasuki.MigrationResult) []migrationResultJSON {
	out := make([]migrationResultJSON, 0, len(rs))
	for _, r := range rs {
		out = append(out, migrationResultJSON{Version: r.Version, Migration: filepath.Base(r.Source),
			DurationMS: float64(r.Duration.Microseconds()) / 1000})
	}
	return out
}

// addJSONFlag gives a migrate command its --json flag.
func addJSONFlag(cmd *cobra.Command, asJSON *bool) *cobra.Command {
	cmd.Flags().BoolVar(asJSON, "json", false, "print JSON instead of text")
	return cmd
}

// withMigrator connects to the configured database, which must be given,
// and runs f with a migrator on it.
func (a *app) withMigrator(ctx context.Context, f func(*tasuki.Migrator) error) error {
	pool, cleanup, err := a.openDB(ctx, dbOptions{})
	if err != nil {
		return err
	}
	defer cleanup()
	m, err := tasuki.NewMigrator(pool)
	if err != nil {
		return err
	}
	defer m.Close()
	return f(m)
}

func newMigrateUpCmd(a *app) *cobra.Command {
	var asJSON bool
	return addJSONFlag(&cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration",
		Long: `up applies every migration that is not applied yet, in order, and prints
each one. When the schema is current it changes nothing.`,
		Example: `  tasuki migrate up --database-url postgres://app@localhost/app
  tasuki migrate up --json | jq '.applied | length'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			return a.withMigrator(ctx, func(m *tasuki.Migrator) error {
				applied, err := m.Up(ctx)
				if asJSON {
					out := migrateUpJSON{Applied: toResultsJSON(applied)}
					return a.printMigrateJSON(ctx, m, err, &out, &out.schemaVersionJSON)
				}
				a.printResults("applied", applied)
				if err != nil {
					return err
				}
				return a.printVersion(ctx, m, len(applied) == 0)
			})
		},
	}, &asJSON)
}

// printMigrateJSON prints out, a migrate up or down result, once it has
// filled in the schema versions v within it. When the migration failed
// (err), what it did is printed still, with the versions as they are.
func (a *app) printMigrateJSON(ctx context.Context, m *tasuki.Migrator, err error, out any, v *schemaVersionJSON) error {
	var verErr error
	v.Current, v.Latest, verErr = m.Version(ctx)
	if err == nil && verErr != nil {
		return verErr
	}
	if jsonErr := a.printJSON(out); err == nil {
		err = jsonErr
	}
	return err
}

func newMigrateDownCmd(a *app) *cobra.Command {
	var (
		to     int64
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Roll back the latest migration, or down to a version",
		Long: `down rolls back the latest applied migration, or with --to every
migration above the given version.

--to 0 removes tasuki's tables entirely, WITH EVERY JOB IN THEM.`,
		Example: `  tasuki migrate down            # roll back the latest migration
  tasuki migrate down --to 0     # remove tasuki's schema and its jobs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			toGiven := cmd.Flags().Changed("to")
			if toGiven && to < 0 {
				return fmt.Errorf("--to %d: a version is 0 or more (0 removes everything)", to)
			}
			ctx := cmd.Context()
			return a.withMigrator(ctx, func(m *tasuki.Migrator) error {
				current, _, err := m.Version(ctx)
				if err != nil {
					return err
				}
				target := to
				if !toGiven {
					// One version back, even if the versions have gaps:
					// DownTo rolls back every applied migration above it.
					target = current - 1
				}
				nothingToDo := current == 0 || target >= current
				switch {
				case nothingToDo && asJSON:
					out := migrateDownJSON{RolledBack: []migrationResultJSON{}}
					return a.printMigrateJSON(ctx, m, nil, &out, &out.schemaVersionJSON)
				case nothingToDo:
					fmt.Fprintf(a.stdout, "schema is at version %d; nothing to roll back\n", current)
					return nil
				}
				rolledBack, err := m.DownTo(ctx, target)
				if asJSON {
					out := migrateDownJSON{RolledBack: toResultsJSON(rolledBack)}
					return a.printMigrateJSON(ctx, m, err, &out, &out.schemaVersionJSON)
				}
				a.printResults("rolled back", rolledBack)
				if err != nil {
					return err
				}
				return a.printVersion(ctx, m, false)
			})
		},
	}
	cmd.Flags().Int64Var(&to, "to", 0, "roll back every migration above this version (default: the latest one only)")
	return addJSONFlag(cmd, &asJSON)
}

func newMigrateStatusCmd(a *app) *cobra.Command {
	var asJSON bool
	return addJSONFlag(&cobra.Command{
		Use:   "status",
		Short: "List every migration and whether it is applied",
		Long: `status lists tasuki's migrations, oldest first, with the time each was
applied, or "pending".`,
		Example: `  tasuki migrate status --database-url postgres://app@localhost/app
  tasuki migrate status --json | jq '.[] | select(.applied | not) | .migration'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withMigrator(cmd.Context(), func(m *tasuki.Migrator) error {
				st, err := m.Status(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					out := make([]migrationStatusJSON, 0, len(st))
					for _, s := range st {
						j := migrationStatusJSON{Version: s.Version, Migration: filepath.Base(s.Source), Applied: s.Applied}
						if s.Applied {
							at := s.AppliedAt
							j.AppliedAt = &at
						}
						out = append(out, j)
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tMIGRATION\tAPPLIED AT")
				for _, s := range st {
					at := "pending"
					if s.Applied {
						at = s.AppliedAt.Local().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\n", s.Version, filepath.Base(s.Source), at)
				}
				return tw.Flush()
			})
		},
	}, &asJSON)
}

func newMigrateVersionCmd(a *app) *cobra.Command {
	var asJSON bool
	return addJSONFlag(&cobra.Command{
		Use:   "version",
		Short: "Print the applied schema version and the latest one",
		Long: `version prints the schema version applied to the database (0 when none is)
and the latest version this build of tasuki knows. 'tasuki version' prints
the version of tasuki itself, without a database.`,
		Example: `  tasuki migrate version --database-url postgres://app@localhost/app
  tasuki migrate version --json | jq '.current == .latest'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withMigrator(cmd.Context(), func(m *tasuki.Migrator) error {
				if asJSON {
					var v schemaVersionJSON
					var err error
					if v.Current, v.Latest, err = m.Version(cmd.Context()); err != nil {
						return err
					}
					return a.printJSON(v)
				}
				return a.printVersion(cmd.Context(), m, false)
			})
		},
	}, &asJSON)
}

// printResults prints one line per applied or rolled back migration.
func (a *app) printResults(verb string, rs []tasuki.MigrationResult) {
	for _, r := range rs {
		fmt.Fprintf(a.stdout, "%s %d %s (%s)\n", verb, r.Version, filepath.Base(r.Source), r.Duration.Round(time.Millisecond))
	}
}

// printVersion prints the current and latest versions, and what to do when
// they differ.
func (a *app) printVersion(ctx context.Context, m *tasuki.Migrator, nothingApplied bool) error {
	current, latest, err := m.Version(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "current version: %d\nlatest version:  %d\n", current, latest)
	switch {
	case current == latest && nothingApplied:
		fmt.Fprintln(a.stdout, "schema is up to date; nothing to apply")
	case current < latest:
		fmt.Fprintln(a.stdout, "migrations are pending: run 'tasuki migrate up'")
	case current > latest:
		fmt.Fprintln(a.stdout, "the database is newer than this build of tasuki: upgrade tasuki")
	}
	return nil
}
