/*
Operating tasuki: statistics, listing, bulk cancel and retry, deleting
finished jobs, retention cleaning and pausing queues. Used by tasuki.Admin,
the retention cleaner (internal/maintenance) and the tasuki command.

Status filters arrive as text[] and are cast to tasuki_job_status[] here:
pgx cannot encode an array of an enum type it has not loaded.
*/

-- name: QueueKindStats :many
-- Per queue and kind: jobs in each status, how long the runnable job that
-- has waited longest (pending, scheduled at or before now) has been
-- waiting, and how many live worker processes handle the pair; with the
-- queue's own figures repeated on each of its rows: whether it is paused,
-- how many live processes work it, and its retention setting next to the
-- installation's. Admin.Stats sums a queue's rows, so that the jobs are
-- read once, by one statement, for both. Every queue with jobs or with a
-- tasuki_queue row appears; a queue without jobs has one row, with kind
-- '' (no kind is empty). count(*) FILTER and coalesce make every column
-- non-NULL, zeros included.
--
-- A process is live while its expires_at lies ahead (it renews it while it
-- runs); it handles a pair when it lists both the queue and the kind. A
-- kind with pending jobs that no live process handles is reported as
-- unhandled: those jobs wait until a worker process with a handler for the
-- kind works their queue. tasuki_process holds a row per process, a
-- handful, so each pair's processes are counted by a scan of them.
WITH clock AS (
    SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS now
),
counts AS (
    SELECT c.queue, c.kind,
           count(*) FILTER (WHERE c.status = 'pending') AS pending,
           count(*) FILTER (WHERE c.status = 'running') AS running,
           count(*) FILTER (WHERE c.status = 'completed') AS completed,
           count(*) FILTER (WHERE c.status = 'failed') AS failed,
           count(*) FILTER (WHERE c.status = 'canceled') AS canceled,
           min(c.scheduled_at) FILTER (
               WHERE c.status = 'pending' AND c.scheduled_at <= (SELECT now FROM clock)
           ) AS oldest_runnable_at
    FROM tasuki_job c
    GROUP BY c.queue, c.kind
),
live AS (
    SELECT p.queues, p.kinds
    FROM tasuki_process p
    WHERE p.expires_at > (SELECT now FROM clock)
),
pairs AS (
    SELECT coalesce(counts.queue, q.name) AS queue,
           coalesce(counts.kind, '') AS kind,
           coalesce(counts.pending, 0) AS pending,
           coalesce(counts.running, 0) AS running,
           coalesce(counts.completed, 0) AS completed,
           coalesce(counts.failed, 0) AS failed,
           coalesce(counts.canceled, 0) AS canceled,
           counts.oldest_runnable_at,
           q.paused_at,
           q.completed_retention_us,
           q.canceled_retention_us,
           q.failed_retention_us
    FROM counts
    FULL OUTER JOIN tasuki_queue q ON q.name = counts.queue
)
SELECT r.queue::text AS queue,
       r.kind::text AS kind,
       r.pending::bigint AS pending,
       r.running::bigint AS running,
       r.completed::bigint AS completed,
       r.failed::bigint AS failed,
       r.canceled::bigint AS canceled,
       coalesce(floor(extract(epoch FROM (SELECT now FROM clock) - r.oldest_runnable_at) * 1000000), 0)::bigint AS oldest_runnable_us,
       (SELECT count(*) FROM live WHERE r.queue = ANY(live.queues) AND r.kind = ANY(live.kinds))::bigint AS kind_processes,
       (SELECT count(*) FROM live WHERE r.queue = ANY(live.queues))::bigint AS queue_processes,
       r.paused_at,
       r.completed_retention_us,
       r.canceled_retention_us,
       r.failed_retention_us,
       ts.completed_retention_us AS default_completed_retention_us,
       ts.canceled_retention_us AS default_canceled_retention_us,
       ts.failed_retention_us AS default_failed_retention_us
FROM pairs r
LEFT JOIN tasuki_settings ts ON ts.singleton
ORDER BY 1, 2;

-- name: JobList :many
-- Jobs newest first (by id, which grows with insertion), filtered by queue,
-- kind, statuses and creation time, up to max. Paginated by keyset on the
-- unique id: before_id is the last id of the previous page, or NULL for the
-- first page, so jobs sharing a created_at are never skipped or repeated.
SELECT *
FROM tasuki_job j
WHERE (sqlc.narg('queue')::text IS NULL OR j.queue = sqlc.narg('queue'))
  AND (sqlc.narg('kind')::text IS NULL OR j.kind = sqlc.narg('kind'))
  AND (cardinality(sqlc.arg('statuses')::text[]) = 0
       OR j.status = ANY(sqlc.arg('statuses')::text[]::tasuki_job_status[]))
  AND (sqlc.narg('created_after')::timestamptz IS NULL OR j.created_at >= sqlc.narg('created_after'))
  AND (sqlc.narg('created_before')::timestamptz IS NULL OR j.created_at < sqlc.narg('created_before'))
  AND (sqlc.narg('before_id')::bigint IS NULL OR j.id < sqlc.narg('before_id'))
ORDER BY j.id DESC
LIMIT sqlc.arg('max')::integer;

-- name: JobCancelMany :one
-- Cancels the pending or running jobs that match every given filter (a NULL
-- queue or kind, or an empty array, matches all) and tells the workers
-- running them, all in one statement. Finished jobs are never touched: the
-- targets are locked and their status checked again first, so a job that
-- finished meanwhile stays as it finished. The notifications are sent on commit;
-- notified runs only because the final select reads it.
WITH clock AS (
    SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS now
),
targets AS (
    SELECT t.id, t.status, t.lease_token
    FROM tasuki_job t
    WHERE t.status IN ('pending', 'running')
      AND t.status = ANY(sqlc.arg('statuses')::text[]::tasuki_job_status[])
      AND (sqlc.narg('queue')::text IS NULL OR t.queue = sqlc.narg('queue'))
      AND (sqlc.narg('kind')::text IS NULL OR t.kind = sqlc.narg('kind'))
      AND (cardinality(sqlc.arg('ids')::bigint[]) = 0 OR t.id = ANY(sqlc.arg('ids')::bigint[]))
    -- Locked in id order, so that two bulk cancels cannot deadlock.
    ORDER BY t.id
    FOR UPDATE
),
canceled AS (
    UPDATE tasuki_job j
    SET status = 'canceled',
        finished_at = (SELECT now FROM clock),
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempts,
            'at', (SELECT now FROM clock),
            'error', 'canceled: ' || sqlc.arg('reason')::text)),
        lease_token = NULL,
        lease_expires_at = NULL
    FROM targets
    WHERE j.id = targets.id
    RETURNING j.id, j.queue, targets.status AS previous_status, targets.lease_token AS previous_token
),
notified AS (
    -- The token names the lease canceled, so that a worker that has since
    -- leased the job again (after a retry) does not take the notification
    -- for its own lease.
    SELECT pg_notify('tasuki_jobs', json_build_object(
        'k', 'cancel', 's', (SELECT n.nspname::text
                FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = 'tasuki_job'::regclass), 'q', c.queue, 'id', c.id, 't', c.previous_token)::text)
    FROM canceled c
    WHERE c.previous_status = 'running'
)
SELECT (SELECT count(*) FROM canceled)::bigint AS canceled,
       (SELECT count(*) FROM notified)::bigint AS notified;

-- name: JobRetry :one
-- Puts a failed or canceled job back to pending, runnable now, with its
-- attempts reset and its error history kept. Another status returns no
-- row, and so does a unique job whose key another job holds (in one of
-- that job's unique statuses): two jobs with one key would be waiting.
-- Follow it with NotifyInsert for its queue.
UPDATE tasuki_job j
SET status = 'pending',
    attempts = 0,
    scheduled_at = coalesce(sqlc.narg('now')::timestamptz, now()),
    finished_at = NULL
WHERE j.id = @id
  AND j.status IN ('failed', 'canceled')
  AND (j.unique_key IS NULL OR NOT EXISTS (
      SELECT 1 FROM tasuki_job o
      WHERE o.unique_key = j.unique_key AND o.id <> j.id
        AND (o.unique_statuses & CASE o.status WHEN 'pending' THEN 1 WHEN 'running' THEN 2 WHEN 'completed' THEN 4
                                                 WHEN 'failed' THEN 8 ELSE 16 END) <> 0))
RETURNING j.*;

-- name: JobRetryMany :one
-- Retry for every failed or canceled job that matches every given filter
-- (a NULL queue or kind, or an empty array, matches all), in one statement
-- that also wakes the workers of each queue concerned, on commit. Of
-- unique jobs, those whose key another job holds are left (skipped counts
-- them), and of several with one key only the newest is retried.
WITH matching AS (
    SELECT j.id, j.unique_key,
           j.unique_key IS NOT NULL AND EXISTS (
               SELECT 1 FROM tasuki_job o
               WHERE o.unique_key = j.unique_key AND o.id <> j.id
                 AND (o.unique_statuses & CASE o.status WHEN 'pending' THEN 1 WHEN 'running' THEN 2 WHEN 'completed' THEN 4
                                                 WHEN 'failed' THEN 8 ELSE 16 END) <> 0) AS blocked
    FROM tasuki_job j
    WHERE j.status IN ('failed', 'canceled')
      AND j.status = ANY(sqlc.arg('statuses')::text[]::tasuki_job_status[])
      AND (sqlc.narg('queue')::text IS NULL OR j.queue = sqlc.narg('queue'))
      AND (sqlc.narg('kind')::text IS NULL OR j.kind = sqlc.narg('kind'))
      AND (cardinality(sqlc.arg('ids')::bigint[]) = 0 OR j.id = ANY(sqlc.arg('ids')::bigint[]))
),
chosen AS (
    SELECT m.id FROM matching m WHERE m.unique_key IS NULL
    UNION ALL
    SELECT n.id
    FROM (SELECT DISTINCT ON (m.unique_key) m.id
          FROM matching m
          WHERE m.unique_key IS NOT NULL AND NOT m.blocked
          ORDER BY m.unique_key, m.id DESC) AS n
),
retried AS (
    UPDATE tasuki_job j
    SET status = 'pending',
        attempts = 0,
        scheduled_at = coalesce(sqlc.narg('now')::timestamptz, now()),
        finished_at = NULL
    FROM chosen
    WHERE j.id = chosen.id
      AND j.status IN ('failed', 'canceled')
    RETURNING j.queue
),
notified AS (
    SELECT pg_notify('tasuki_jobs', json_build_object(
        'k', 'insert', 's', (SELECT n.nspname::text
                FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = 'tasuki_job'::regclass), 'q', r.queue)::text)
    FROM (SELECT DISTINCT queue FROM retried) r
)
SELECT (SELECT count(*) FROM retried)::bigint AS retried,
       (SELECT count(*) FROM notified)::bigint AS notified,
       ((SELECT count(*) FROM matching) - (SELECT count(*) FROM chosen))::bigint AS skipped;

-- name: JobDeleteFinished :one
-- Deletes one finished job and returns it as it was; a pending or running
-- job is left alone and no row is returned.
DELETE FROM tasuki_job
WHERE id = @id
  AND status IN ('completed', 'failed', 'canceled')
RETURNING *;

-- name: JobDeleteFinishedBatch :execrows
-- Deletes up to max finished jobs that finished before finished_before,
-- with one of the given statuses, of one queue or (NULL) of all, of one
-- kind or (NULL) of all; returns how many it deleted. Call it until it
-- deletes fewer than max. The literal status list lets it use
-- tasuki_job_finished_queue_idx when a queue is given (a kind only filters
-- the rows read there); rows locked by someone else (a retry in progress)
-- are skipped, not waited for.
DELETE FROM tasuki_job
WHERE id IN (
    SELECT d.id
    FROM tasuki_job d
    WHERE d.status IN ('completed', 'failed', 'canceled')
      AND d.finished_at < sqlc.arg('finished_before')::timestamptz
      AND d.status = ANY(sqlc.arg('statuses')::text[]::tasuki_job_status[])
      AND (sqlc.narg('queue')::text IS NULL OR d.queue = sqlc.narg('queue'))
      AND (sqlc.narg('kind')::text IS NULL OR d.kind = sqlc.narg('kind'))
    LIMIT sqlc.arg('max')::integer
    FOR UPDATE SKIP LOCKED
);

-- name: JobCountFinishedBefore :one
-- How many jobs JobDeleteFinishedBatch would delete, in all its batches,
-- with the same arguments.
SELECT count(*)::bigint AS count
FROM tasuki_job d
WHERE d.status IN ('completed', 'failed', 'canceled')
  AND d.finished_at < sqlc.arg('finished_before')::timestamptz
  AND d.status = ANY(sqlc.arg('statuses')::text[]::tasuki_job_status[])
  AND (sqlc.narg('queue')::text IS NULL OR d.queue = sqlc.narg('queue'))
  AND (sqlc.narg('kind')::text IS NULL OR d.kind = sqlc.narg('kind'));

-- name: CleanerTryLock :one
-- The same lock JobCleanRetained takes; it must keep the same key.
-- Makes this transaction the retention cleaner's leader if no other session
-- is: true when it got the lock, which it holds until it commits or rolls
-- back (or its connection drops). The key is tasuki's cleaner key together
-- with the schema, so installations in different schemas of one database
-- clean independently.
SELECT pg_try_advisory_xact_lock(
    1953721187, -- 0x74736b63, "tskc"
    hashtext((SELECT n.nspname::text
                FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = 'tasuki_job'::regclass))
)::boolean AS locked;

-- name: QueuePause :one
-- Pauses a queue: its workers lease nothing new; running jobs go on. A
-- queue already paused keeps the time it was paused at. Returns whether
-- the queue was not paused before.
WITH before AS (
    SELECT q.paused_at FROM tasuki_queue q WHERE q.name = @name
),
paused AS (
    INSERT INTO tasuki_queue (name, paused_at, updated_at)
    VALUES (@name, now(), now())
    ON CONFLICT (name) DO UPDATE
    SET paused_at = coalesce(tasuki_queue.paused_at, excluded.paused_at),
        updated_at = excluded.updated_at
    RETURNING name
)
-- paused runs though nothing reads it: a data-modifying CTE always does.
SELECT NOT EXISTS (SELECT 1 FROM before WHERE paused_at IS NOT NULL) AS changed;

-- name: QueueResume :one
-- Resumes a paused queue; a queue that is not paused is left as it is.
-- Returns whether it was paused, and whether tasuki knows the queue at all
-- (it has a tasuki_queue row or jobs), so that a mistyped name can be told
-- from a queue that simply was not paused. Follow it with NotifyInsert so
-- that idle workers lease at once.
WITH resumed AS (
    UPDATE tasuki_queue
    SET paused_at = NULL,
        updated_at = now()
    WHERE name = @name
      AND paused_at IS NOT NULL
    RETURNING name
)
SELECT EXISTS (SELECT 1 FROM resumed) AS resumed,
       coalesce(EXISTS (SELECT 1 FROM tasuki_queue q WHERE q.name = @name)
                OR EXISTS (SELECT 1 FROM tasuki_job j WHERE j.queue = @name), false)::boolean AS known;

-- name: JobCleanRetained :many
-- One batch of the retention cleaner, in one statement and so one
-- transaction: when this transaction gets the cleaner's advisory lock (see
-- CleanerTryLock), it deletes up to max finished jobs that finished longer
-- ago than their queue's retention for their status, by the database
-- clock. A queue's retention is its tasuki_queue row's setting; where that
-- is missing or NULL, the installation's (tasuki_settings); where that is
-- missing too, the built-in default given here (completed_us, canceled_us,
-- failed_us). -1 keeps the jobs forever. So every
-- process cleans every queue by the same rule, whatever it was configured
-- with. It deletes nothing when another process is cleaning. It returns
-- the ids of the jobs it deleted; call it until it returns fewer than max:
-- an idle round costs one statement.
--
-- Jobs in skip_ids are left alone: the database refused to delete them
-- before (a foreign key of the application's that references the job, a
-- trigger), and the cleaner tries them again later, one at a time. With
-- list_only, it deletes nothing and returns the ids it would delete: after
-- the database refused a batch, the cleaner deletes those one at a time,
-- with only_ids naming one each time (so each is checked against its
-- retention again, under the lock), so that one row the database refuses
-- does not stop the cleaning.
--
-- The queues that have finished jobs are found with a loose index scan of
-- tasuki_job_finished_queue_idx (one index descent per queue, however many
-- jobs each has), and each (queue, status) pair's expired jobs are one
-- range of that index: jobs a queue keeps are never read.
WITH RECURSIVE leader AS (
    SELECT pg_try_advisory_xact_lock(
        1953721187, -- 0x74736b63, "tskc"
        hashtext((SELECT n.nspname::text
                FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = 'tasuki_job'::regclass))
    ) AS locked
),
queues AS (
    (SELECT f.queue
     FROM tasuki_job f
     WHERE (SELECT locked FROM leader)
       AND f.status IN ('completed', 'failed', 'canceled')
     ORDER BY f.queue
     LIMIT 1)
    UNION ALL
    SELECT (SELECT f.queue
            FROM tasuki_job f
            WHERE f.status IN ('completed', 'failed', 'canceled')
              AND f.queue > queues.queue
            ORDER BY f.queue
            LIMIT 1)
    FROM queues
    WHERE queues.queue IS NOT NULL
),
targets AS (
    SELECT q.queue, s.status,
           CASE s.status
               WHEN 'completed' THEN coalesce(tq.completed_retention_us, ts.completed_retention_us, sqlc.arg('completed_us')::bigint)
               WHEN 'canceled'  THEN coalesce(tq.canceled_retention_us,  ts.canceled_retention_us,  sqlc.arg('canceled_us')::bigint)
               ELSE                  coalesce(tq.failed_retention_us,    ts.failed_retention_us,    sqlc.arg('failed_us')::bigint)
           END AS retention_us
    FROM queues q
    CROSS JOIN (SELECT 'completed'::tasuki_job_status AS status
                UNION ALL SELECT 'canceled'
                UNION ALL SELECT 'failed') AS s
    LEFT JOIN tasuki_queue tq ON tq.name = q.queue
    LEFT JOIN tasuki_settings ts ON ts.singleton
    WHERE q.queue IS NOT NULL
),
expired AS (
    SELECT x.id
    FROM targets t
    CROSS JOIN LATERAL (
        SELECT d.id
        FROM tasuki_job d
        WHERE d.queue = t.queue
          AND d.status = t.status
          AND d.status IN ('completed', 'failed', 'canceled')
          AND d.finished_at < now() - t.retention_us * interval '1 microsecond'
          AND NOT (d.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
          AND (coalesce(cardinality(sqlc.arg('only_ids')::bigint[]), 0) = 0 OR d.id = ANY(sqlc.arg('only_ids')::bigint[]))
        -- The index's order: without it, the LIMIT can make a sequential
        -- scan look cheaper (the planner expects expired jobs early in
        -- it), which reads the whole table when a queue keeps many jobs
        -- and few have expired.
        ORDER BY d.finished_at
        LIMIT sqlc.arg('max')::integer
        FOR UPDATE SKIP LOCKED
    ) x
    WHERE t.retention_us >= 0
    LIMIT sqlc.arg('max')::integer
),
deleted AS (
    DELETE FROM tasuki_job
    WHERE NOT sqlc.arg('list_only')::boolean
      -- An array, not a join: a join's plan could read the whole table
      -- for a batch of ids.
      AND id = ANY(ARRAY(SELECT e.id FROM expired e))
)
SELECT e.id FROM expired e ORDER BY e.id;

-- name: SettingsRetention :one
-- The installation's default retention in microseconds (NULL: tasuki's
-- built-in default; -1: forever), as one row even when nothing was set.
SELECT ts.completed_retention_us, ts.canceled_retention_us, ts.failed_retention_us
FROM (SELECT true AS singleton) one
LEFT JOIN tasuki_settings ts ON ts.singleton;

-- name: QueueChangeRetention :one
-- Changes some of a queue's retention settings in one statement (set_x
-- says which; a value is microseconds, NULL for not set, -1 for forever)
-- and returns the settings after, and whether they changed. Two changes of
-- different statuses at once both take effect: the upsert writes each
-- field from the row as it is when it locks it.
WITH changed AS (
    INSERT INTO tasuki_queue AS q (name, completed_retention_us, canceled_retention_us, failed_retention_us, updated_at)
    VALUES (@name, sqlc.narg('completed_us')::bigint, sqlc.narg('canceled_us')::bigint, sqlc.narg('failed_us')::bigint, now())
    ON CONFLICT (name) DO UPDATE
    SET completed_retention_us = CASE WHEN sqlc.arg('set_completed')::boolean THEN excluded.completed_retention_us ELSE q.completed_retention_us END,
        canceled_retention_us  = CASE WHEN sqlc.arg('set_canceled')::boolean  THEN excluded.canceled_retention_us  ELSE q.canceled_retention_us END,
        failed_retention_us    = CASE WHEN sqlc.arg('set_failed')::boolean    THEN excluded.failed_retention_us    ELSE q.failed_retention_us END,
        updated_at = excluded.updated_at
    -- A row already as asked is left alone, and returns nothing.
    WHERE (q.completed_retention_us, q.canceled_retention_us, q.failed_retention_us) IS DISTINCT FROM (
        CASE WHEN sqlc.arg('set_completed')::boolean THEN excluded.completed_retention_us ELSE q.completed_retention_us END,
        CASE WHEN sqlc.arg('set_canceled')::boolean  THEN excluded.canceled_retention_us  ELSE q.canceled_retention_us END,
        CASE WHEN sqlc.arg('set_failed')::boolean    THEN excluded.failed_retention_us    ELSE q.failed_retention_us END)
    RETURNING q.completed_retention_us, q.canceled_retention_us, q.failed_retention_us,
              -- A new row changes something only if it sets something.
              (q.xmax = 0 AND q.completed_retention_us IS NULL AND q.canceled_retention_us IS NULL
               AND q.failed_retention_us IS NULL) AS unchanged
)
SELECT c.completed_retention_us, c.canceled_retention_us, c.failed_retention_us, (NOT c.unchanged)::boolean AS changed
FROM changed c
UNION ALL
SELECT o.completed_retention_us, o.canceled_retention_us, o.failed_retention_us, false
FROM tasuki_queue o
WHERE o.name = @name
  AND NOT EXISTS (SELECT 1 FROM changed);

-- name: SettingsChangeRetention :one
-- QueueChangeRetention for the installation's default retention.
WITH changed AS (
    INSERT INTO tasuki_settings AS s (singleton, completed_retention_us, canceled_retention_us, failed_retention_us, updated_at)
    VALUES (true, sqlc.narg('completed_us')::bigint, sqlc.narg('canceled_us')::bigint, sqlc.narg('failed_us')::bigint, now())
    ON CONFLICT (singleton) DO UPDATE
    SET completed_retention_us = CASE WHEN sqlc.arg('set_completed')::boolean THEN excluded.completed_retention_us ELSE s.completed_retention_us END,
        canceled_retention_us  = CASE WHEN sqlc.arg('set_canceled')::boolean  THEN excluded.canceled_retention_us  ELSE s.canceled_retention_us END,
        failed_retention_us    = CASE WHEN sqlc.arg('set_failed')::boolean    THEN excluded.failed_retention_us    ELSE s.failed_retention_us END,
        updated_at = excluded.updated_at
    -- A row already as asked is left alone, and returns nothing.
    WHERE (s.completed_retention_us, s.canceled_retention_us, s.failed_retention_us) IS DISTINCT FROM (
        CASE WHEN sqlc.arg('set_completed')::boolean THEN excluded.completed_retention_us ELSE s.completed_retention_us END,
        CASE WHEN sqlc.arg('set_canceled')::boolean  THEN excluded.canceled_retention_us  ELSE s.canceled_retention_us END,
        CASE WHEN sqlc.arg('set_failed')::boolean    THEN excluded.failed_retention_us    ELSE s.failed_retention_us END)
    RETURNING s.completed_retention_us, s.canceled_retention_us, s.failed_retention_us,
              -- A new row changes something only if it sets something.
              (s.xmax = 0 AND s.completed_retention_us IS NULL AND s.canceled_retention_us IS NULL
               AND s.failed_retention_us IS NULL) AS unchanged
)
SELECT c.completed_retention_us, c.canceled_retention_us, c.failed_retention_us, (NOT c.unchanged)::boolean AS changed
FROM changed c
UNION ALL
SELECT o.completed_retention_us, o.canceled_retention_us, o.failed_retention_us, false
FROM tasuki_settings o
WHERE o.singleton
  AND NOT EXISTS (SELECT 1 FROM changed);

-- name: QueueRetention :one
-- A queue's own retention setting in microseconds (NULL: not set, the
-- installation's default applies; -1: forever), as one row even for a
-- queue without a tasuki_queue row.
SELECT tq.completed_retention_us, tq.canceled_retention_us, tq.failed_retention_us
FROM (SELECT 1) one
LEFT JOIN tasuki_queue tq ON tq.name = @name;


-- name: QueueDepths :many
-- Per queue with pending jobs: how many are runnable (scheduled at or
-- before now), how many wait for a later time, and how long the runnable
-- job that has waited longest has been waiting, in microseconds (0 when
-- none is runnable). It reads the pending jobs alone, through their
-- partial index: cheap enough for a metrics collector to call every few
-- seconds, unlike QueueKindStats.
SELECT c.queue::text AS queue,
       count(*) FILTER (WHERE c.scheduled_at <= now())::bigint AS runnable,
       count(*) FILTER (WHERE c.scheduled_at > now())::bigint AS scheduled,
       -- greatest: a job scheduled at -infinity (SQL of the application's own)
       -- would make the interval overflow.
       coalesce((extract(epoch FROM now() - min(greatest(c.scheduled_at, '4714-11-24 00:00:00+00 BC'::timestamptz))
                 FILTER (WHERE c.scheduled_at <= now())) * 1000000)::bigint, 0)::bigint AS oldest_runnable_us
FROM tasuki_job c
WHERE c.status = 'pending'
GROUP BY c.queue
ORDER BY c.queue;
