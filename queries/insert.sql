/*
Inserting jobs, and waking workers once the inserts committed. The
notification payload names the schema, so installations in different
schemas of one database ignore each other's wake-ups.
*/

-- name: JobInsert :one
-- Inserts one job, unless it is unique (unique_key set) and a job with its
-- key exists. Its scheduled time is run_at if given, else the
-- database clock (or the now override) plus delay_us microseconds.
-- The clock is clock_timestamp(), the time of this statement, not now(),
-- the start of its transaction: a delay counts from the insert even in a
-- transaction that has been open for a while.
--
-- It sends no notification: a NOTIFY in the inserting transaction would
-- make the commits of all inserting transactions wait for one another
-- (PostgreSQL holds one lock on its notification queue from before a
-- commit until its WAL flush is done). Workers are woken after the commit
-- instead, by WakeQueues from the client, which needs the transaction's id
-- (xact_id) to learn when a caller's transaction committed.
WITH clock AS (
    SELECT coalesce(sqlc.narg('now')::timestamptz, clock_timestamp()) AS now
),
inserted AS (
    INSERT INTO tasuki_job (queue, kind, priority, payload, max_attempts, scheduled_at, metadata,
                            unique_key, unique_statuses, timeout_ms)
    -- payload and metadata arrive as text: pgx's exec and simple_protocol
    -- query modes (used behind PgBouncer) would send bytes as bytea, which
    -- is not jsonb.
    VALUES (
        @queue,
        @kind,
        @priority,
        sqlc.arg('payload')::text::jsonb,
        @max_attempts,
        coalesce(
            sqlc.narg('run_at')::timestamptz,
            (SELECT now FROM clock) + sqlc.arg('delay_us')::bigint * interval '1 microsecond'
        ),
        sqlc.arg('metadata')::text::jsonb,
        sqlc.narg('unique_key')::bytea,
        sqlc.narg('unique_statuses')::smallint,
        sqlc.narg('timeout_ms')::bigint
    )
    -- A unique job whose key an existing job holds in one of that job's
    -- unique statuses is not inserted: this statement then returns no row,
    -- and the client reads the existing job (JobByUniqueKey). A conflicting
    -- insert not yet committed is waited for.
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL
        AND (unique_statuses & CASE status WHEN 'pending' THEN 1 WHEN 'running' THEN 2 WHEN 'completed' THEN 4
                                           WHEN 'failed' THEN 8 ELSE 16 END) <> 0
    DO NOTHING
    RETURNING id, scheduled_at, created_at
)
-- Only what the client does not know already: the payload, queue and
-- options it sent come back as it sent them.
-- schema is the schema that holds tasuki_job as this transaction's
-- search_path finds it, which need not be the client pool's: the wake-up
-- names it.
SELECT i.id, i.scheduled_at, i.created_at,
       (i.scheduled_at <= (SELECT now FROM clock))::boolean AS runnable,
       pg_current_xact_id()::text::bigint AS xact_id,
       (SELECT n.nspname::text
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = 'tasuki_job'::regclass) AS schema
FROM inserted i;

-- name: JobInsertCopy :copyfrom
-- Bulk insert through COPY: the fastest way to add many jobs. Workers are
-- woken after the commit, as for JobInsert.
INSERT INTO tasuki_job (queue, kind, priority, payload, max_attempts, scheduled_at, metadata, timeout_ms)
VALUES (@queue, @kind, @priority, @payload, @max_attempts, @scheduled_at, @metadata, @timeout_ms);

-- name: JobInsertUniqueMany :many
-- Inserts many jobs of which each is unique (unique_keys): those whose key
-- an existing job holds, or an earlier job of the same batch, are skipped.
-- Returns the ids of the jobs inserted. The bulk insert's counterpart of
-- JobInsert for unique jobs, which COPY cannot skip.
INSERT INTO tasuki_job (queue, kind, priority, payload, max_attempts, scheduled_at, metadata,
                        unique_key, unique_statuses, timeout_ms)
SELECT j.queue, j.kind, j.priority, j.payload::jsonb, j.max_attempts, j.scheduled_at, j.metadata::jsonb,
       j.unique_key, j.unique_statuses, nullif(j.timeout_ms, 0)
FROM (SELECT unnest(sqlc.arg('queues')::text[]) AS queue,
             unnest(sqlc.arg('kinds')::text[]) AS kind,
             unnest(sqlc.arg('priorities')::smallint[]) AS priority,
             unnest(sqlc.arg('payloads')::text[]) AS payload,
             unnest(sqlc.arg('max_attempts')::integer[]) AS max_attempts,
             unnest(sqlc.arg('scheduled_at')::timestamptz[]) AS scheduled_at,
             unnest(sqlc.arg('metadata')::text[]) AS metadata,
             unnest(sqlc.arg('unique_keys')::bytea[]) AS unique_key,
             unnest(sqlc.arg('unique_statuses')::smallint[]) AS unique_statuses,
             -- 0: the kind's timeout
             unnest(sqlc.arg('timeouts_ms')::bigint[]) AS timeout_ms,
             generate_series(1, cardinality(sqlc.arg('queues')::text[])) AS ord) AS j
-- In key order, as every bulk statement of tasuki locks in a fixed order:
-- two batches that share keys never wait for each other in a cycle. Of
-- the jobs of one key, the first of the batch is inserted.
ORDER BY j.unique_key, j.ord
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL
        AND (unique_statuses & CASE status WHEN 'pending' THEN 1 WHEN 'running' THEN 2 WHEN 'completed' THEN 4
                                           WHEN 'failed' THEN 8 ELSE 16 END) <> 0
DO NOTHING
RETURNING id, queue, kind, unique_key;

-- name: JobByUniqueKey :one
-- The job that holds a unique key: the one a unique insert found in its
-- way.
SELECT *
FROM tasuki_job
WHERE unique_key = sqlc.arg('unique_key')::bytea
  AND (unique_statuses & CASE status WHEN 'pending' THEN 1 WHEN 'running' THEN 2 WHEN 'completed' THEN 4
                                     WHEN 'failed' THEN 8 ELSE 16 END) <> 0
LIMIT 1;

-- name: DatabaseNow :one
-- The database clock at this statement (clock_timestamp(), not the start of
-- the transaction), or the override when one is given, and the id of the
-- transaction (assigned now if it had none). Used to turn delays into
-- scheduled times for bulk inserts, counted from the insert, and to learn
-- when the transaction committed.
SELECT coalesce(sqlc.narg('now')::timestamptz, clock_timestamp())::timestamptz AS now,
       pg_current_xact_id()::text::bigint AS xact_id,
       (SELECT n.nspname::text
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = 'tasuki_job'::regclass) AS schema;

-- name: NotifyInsert :exec
-- Wakes the workers of a queue, on commit: after a retry or a resume.
SELECT pg_notify('tasuki_jobs', json_build_object('k', 'insert', 's', (SELECT n.nspname::text
                FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = 'tasuki_job'::regclass), 'q', sqlc.arg('queue')::text)::text);

-- name: WakeQueues :exec
-- Wakes the workers of the given queues, each named with the schema that
-- holds its jobs (the inserts returned it), sent by a client after the
-- transactions that inserted the jobs committed: one notification per
-- queue, however many jobs. A NOTIFY gives its transaction an id, so its
-- commit writes WAL; that commit need not wait for the WAL flush (a wake-up
-- lost in a crash of the database server leaves the jobs to the workers'
-- poll), and, as PostgreSQL holds its notification queue's lock until the
-- commit is done, not waiting keeps wake-ups from queueing behind the disk.
--
-- heads, one per queue, is a JSON array of [priority, scheduled_at in
-- microseconds since the Unix epoch] pairs: for each priority of the jobs
-- announced, the earliest scheduled time. A worker that leases from
-- remembered positions moves back to them, as a transaction that committed
-- late may have put jobs behind where it leased last. An empty string
-- sends none: the worker then reads the queue from its head.
SELECT pg_notify('tasuki_jobs', json_build_object('k', 'insert', 's', t.s, 'q', t.q, 'r', nullif(t.r, '')::json)::text)
FROM (SELECT unnest(sqlc.arg('schemas')::text[]) AS s,
             unnest(sqlc.arg('queues')::text[]) AS q,
             unnest(sqlc.arg('heads')::text[]) AS r) AS t
CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit;

-- name: XactStatus :many
-- Whether the given transactions committed, aborted or are in progress
-- (pg_xact_status), so that a client wakes workers for jobs inserted in a
-- caller's transaction once that commits, and never for one rolled back. A
-- transaction too old to tell (NULL) has ended: it counts as committed, as
-- a needless wake-up costs only a lease that finds nothing.
-- An id this server has not reached yet (a transaction of another server,
-- or one lost in a failover to a replica that was behind) fails the whole
-- statement: the client then asks about each id alone.
SELECT x::bigint AS xact_id, coalesce(pg_xact_status(x::text::xid8), 'committed')::text AS status
FROM unnest(sqlc.arg('xact_ids')::bigint[]) AS x;
