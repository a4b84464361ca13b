// Package dberr turns database errors into errors that tell a tasuki user
// what to do.
package dberr

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrSchemaMissing says that the database lacks tasuki's tables.
var ErrSchemaMissing = errors.New("tasuki: the tasuki schema is missing from this database: " +
	"run the migrations first, with tasuki.Migrate(ctx, pool), " +
	"`go run github.com/tasukiq/tasuki/cmd/tasuki migrate up`, " +
	"or `goose -dir schema -table tasuki_schema_version postgres \"$DATABASE_URL\" up` " +
	"(if they were run: the connection's search_path must include their schema, and its role needs USAGE on it)")

// ErrPermissionDenied says that the connecting role lacks a privilege
// tasuki needs.
var ErrPermissionDenied = errors.New("tasuki: permission denied: the connecting role lacks a privilege tasuki needs " +
	"(see the README's Least privilege section for the GRANTs)")

// Wrap adds what was being done to err, and marks errors that come from a
// missing schema with ErrSchemaMissing. It returns nil for a nil err.
func Wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "42P01", "42704", "42883": // undefined table, object (type), function
			return fmt.Errorf("%s: %w (%s)", op, ErrSchemaMissing, pgErr.Message)
		case "42501": // insufficient privilege
			return fmt.Errorf("%s: %w (%s)", op, ErrPermissionDenied, pgErr.Message)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}
