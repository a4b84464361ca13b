/*
Inserting jobs. Each insert sends the NOTIFY that wakes workers in the
inserting transaction, so it is delivered only if that commits. The
payload names the schema, so installations in different schemas of one
database ignore each other's wake-ups.
*/

-- name: JobInsert :one
-- Inserts one job and, when it is runnable now, wakes the queue's workers in
-- the same round trip. Its scheduled time is run_at if given, else the
-- database clock (or the now override) plus delay_us microseconds.
-- The clock is clock_timestamp(), the time of this statement, not now(),
-- the start of its transaction: a delay counts from the insert even in a
-- transaction that has been open for a while.
WITH clock AS (
    SELECT coalesce(sqlc.narg('now')::timestamptz, clock_timestamp()) AS now
),
inserted AS (
    INSERT INTO tasuki_job (queue, priority, payload, max_attempts, scheduled_at, metadata)
    -- payload and metadata arrive as text: pgx's exec and simple_protocol
    -- query modes (used behind PgBouncer) would send bytes as bytea, which
    -- is not jsonb.
    VALUES (
        @queue,
        @priority,
        sqlc.arg('payload')::text::jsonb,
        @max_attempts,
        coalesce(
            sqlc.narg('run_at')::timestamptz,
            (SELECT now FROM clock) + sqlc.arg('delay_us')::bigint * interval '1 microsecond'
        ),
        sqlc.arg('metadata')::text::jsonb
    )
    RETURNING *
),
notified AS (
    SELECT pg_notify('tasuki_jobs', json_build_object('k', 'insert', 's', (SELECT n.nspname::text
                FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = 'tasuki_job'::regclass), 'q', i.queue)::text)
    FROM inserted i
    WHERE i.scheduled_at <= (SELECT now FROM clock)
)
-- notified is not a data-modifying CTE, so it runs only if the query reads
-- it; an inner join with its count cannot be planned away.
SELECT inserted.*
FROM inserted
CROSS JOIN (SELECT count(*) AS sent FROM notified) n;

-- name: JobInsertCopy :copyfrom
-- Bulk insert through COPY: the fastest way to add many jobs. Follow it with
-- NotifyInsert in the same transaction.
INSERT INTO tasuki_job (queue, priority, payload, max_attempts, scheduled_at, metadata)
VALUES (@queue, @priority, @payload, @max_attempts, @scheduled_at, @metadata);

-- name: DatabaseNow :one
-- The database clock at this statement (clock_timestamp(), not the start of
-- the transaction), or the override when one is given. Used to turn delays
-- into scheduled times for bulk inserts, counted from the insert.
SELECT coalesce(sqlc.narg('now')::timestamptz, clock_timestamp())::timestamptz AS now;

-- name: NotifyInsert :exec
-- Wakes the workers of a queue: one notification for a whole COPY.
SELECT pg_notify('tasuki_jobs', json_build_object('k', 'insert', 's', (SELECT n.nspname::text
                FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = 'tasuki_job'::regclass), 'q', sqlc.arg('queue')::text)::text);
