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
	return &cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration",
		Long: `up applies every migration that is not applied yet, in order, and prints
each one. When the schema is current it changes nothing.`,
		Example: `  tasuki migrate up --database-url postgres://app@localhost/app`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withMigrator(cmd.Context(), func(m *tasuki.Migrator) error {
				applied, err := m.Up(cmd.Context())
				a.printResults("applied", applied)
				if err != nil {
					return err
				}
				return a.printVersion(cmd.Context(), m, len(applied) == 0)
			})
		},
	}
}

func newMigrateDownCmd(a *app) *cobra.Command {
	var to int64
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
				if current == 0 || target >= current {
					fmt.Fprintf(a.stdout, "schema is at version %d; nothing to roll back\n", current)
					return nil
				}
				rolledBack, err := m.DownTo(ctx, target)
				a.printResults("rolled back", rolledBack)
				if err != nil {
					return err
				}
				return a.printVersion(ctx, m, false)
			})
		},
	}
	cmd.Flags().Int64Var(&to, "to", 0, "roll back every migration above this version (default: the latest one only)")
	return cmd
}

func newMigrateStatusCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "List every migration and whether it is applied",
		Long: `status lists tasuki's migrations, oldest first, with the time each was
applied, or "pending".`,
		Example: `  tasuki migrate status --database-url postgres://app@localhost/app`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withMigrator(cmd.Context(), func(m *tasuki.Migrator) error {
				st, err := m.Status(cmd.Context())
				if err != nil {
					return err
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
	}
}

func newMigrateVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the applied schema version and the latest one",
		Long: `version prints the schema version applied to the database (0 when none is)
and the latest version this build of tasuki knows.`,
		Example: `  tasuki migrate version --database-url postgres://app@localhost/app`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withMigrator(cmd.Context(), func(m *tasuki.Migrator) error {
				return a.printVersion(cmd.Context(), m, false)
			})
		},
	}
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
