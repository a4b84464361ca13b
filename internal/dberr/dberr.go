// Package dberr turns database errors into errors that tell a tasuki user
// what to do.
package dberr

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrSchemaMissing says that the database lacks tasuki's tables, or has
// them from an older version of tasuki.
var ErrSchemaMissing = errors.New("tasuki: the tasuki schema is missing from this database, or older than this version of tasuki: " +
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

// WrapProbe is Wrap for a statement that touches no application data (a
// worker's start probe): there an undefined column can only mean a schema
// older than the library, a migration not applied, whereas elsewhere an
// application's trigger may raise it for one row.
func WrapProbe(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42703" { // undefined column
		return fmt.Errorf("%s: %w (%s)", op, ErrSchemaMissing, pgErr.Message)
	}
	return Wrap(op, err)
}

// RowError reports whether err is an error the database raised for the
// data of a row, which retrying the same batch would raise again, but which
// the other rows of the batch need not share: a data exception, a violated
// constraint, or an error raised by a trigger or function of the
// application's. Connection, resource, permission and schema errors are
// not: they are the same for every row.
func RowError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) < 2 {
		return false
	}
	switch pgErr.Code[:2] {
	case "22", // data exception
		"23", // integrity constraint violation
		"27", // triggered data change violation
		"09", // triggered action exception
		"2F", // SQL routine exception
		"38", // external routine exception
		"39", // external routine invocation exception
		"44", // WITH CHECK OPTION violation
		"P0": // raised by PL/pgSQL (RAISE EXCEPTION)
		return true
	}
	return false
}

// Canceled reports whether the server canceled the statement: a statement
// timeout, or a cancel request sent when its context ended
// (query_canceled, 57014).
func Canceled(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57014"
}

// UniqueViolation reports whether err is a unique_violation (23505): a
// unique job's key taken by a statement that ran at the same moment.
func UniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}
