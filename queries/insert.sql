-- Inserting jobs. The statement-level trigger on tasuki_job sends the NOTIFY
-- that wakes workers, inside the inserting transaction, so none of these
-- statements notify by themselves.

-- name: JobInsert :one
-- Inserts one job. Its scheduled time is run_at if given, else the database
-- clock (or the now override) plus delay_us microseconds.
INSERT INTO tasuki_job (queue, priority, payload, max_attempts, scheduled_at, metadata)
VALUES (
    @queue,
    @priority,
    @payload,
    @max_attempts,
    coalesce(
        sqlc.narg('run_at')::timestamptz,
        coalesce(sqlc.narg('now')::timestamptz, now()) + sqlc.arg('delay_us')::bigint * interval '1 microsecond'
    ),
    @metadata
)
RETURNING *;

-- name: JobInsertCopy :copyfrom
-- Bulk insert through COPY: the fastest way to add many jobs.
INSERT INTO tasuki_job (queue, priority, payload, max_attempts, scheduled_at, metadata)
VALUES (@queue, @priority, @payload, @max_attempts, @scheduled_at, @metadata);

-- name: DatabaseNow :one
-- The database clock, or the override when one is given. Used to turn delays
-- into scheduled times for bulk inserts.
SELECT coalesce(sqlc.narg('now')::timestamptz, now())::timestamptz AS now;
