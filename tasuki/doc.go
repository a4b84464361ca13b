// Package tasuki is the client side of tasuki, a job queue on PostgreSQL:
// it inserts typed jobs, on their own or inside the caller's transaction,
// one at a time or in bulk through COPY, and reads them back.
//
// A [Client] serves one payload type T, encoded as JSON. Jobs are run by a
// [github.com/tasukiq/tasuki/worker.Worker] for the same type. Apply the
// schema first with [Migrate].
//
// A job is pending until a worker leases it, then running; it ends
// completed, failed (out of attempts, or a payload that cannot be decoded)
// or canceled. A handler chooses the outcome by what it returns: nil
// completes the job, an error retries it after a backoff, [Cancel] cancels
// it and [RetryAfter] retries it after a given delay.
package tasuki

//go:generate go run github.com/sqlc-dev/sqlc/cmd/sqlc@v1.31.1 generate -f ../sqlc.yaml
