// Package schema holds tasuki's database migrations: plain goose SQL files,
// the one source of tasuki's DDL. The library applies them through
// [github.com/tasukiq/tasuki/tasuki.Migrate]; the goose CLI applies the same
// files unchanged:
//
//	goose -dir schema -table tasuki_schema_version postgres "$DATABASE_URL" up
//
// sqlc reads them as the schema it compiles queries/ against.
package schema

import "embed"

// Migrations is every migration file, for goose's Provider.
//
//go:embed *.sql
var Migrations embed.FS

// VersionTable is the table in which goose records the applied migrations.
// It is not goose's default (goose_db_version), so tasuki's migrations never
// mix with the application's own goose history.
const VersionTable = "tasuki_schema_version"
