/*
Leasing: how a worker takes jobs.
*/

-- name: JobLease :many
-- Leases up to max runnable jobs of one queue, in priority, scheduled time
-- and id order. Each leased job becomes running with attempts raised by one,
-- a fresh lease token (one per call, shared by the jobs it leases) and a
-- lease that expires lease_us microseconds from now.
-- SKIP LOCKED lets many workers lease at once without waiting on each other.
--
-- When rescue is true, the same round trip also rescues up to rescue_max
-- jobs of the queue whose lease expired (their worker died, hung or lost
-- its connection): back to pending with the lost attempt recorded as an
-- error, or failed when that was the last attempt, so no job stays running
-- forever. Rescued jobs are leased by the next call, not this one (one
-- statement sees one snapshot); the queue's workers are notified on
-- commit, so that call comes at once.
--
-- Jobs in skip_ids are neither leased nor rescued: the database refused to
-- change them before (an application's trigger or constraint), and the
-- worker tries them again later. When only_ids is not empty, only those
-- jobs are leased or rescued. If the database refuses a row, this
-- statement fails as a whole: the worker then rescues and leases one job
-- per call, with only_ids naming it, and sets aside the ones refused, so
-- that one such row never stops the queue.
--
-- A paused queue (tasuki_queue.paused_at set) leases nothing; its expired
-- jobs are still rescued.
WITH clock AS (
    SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS now,
           -- A lease need not outlive a crash of the database server: a
           -- lease lost with the last moments of WAL leaves its job pending,
           -- to run again, which at-least-once delivery allows. So this
           -- transaction's commit does not wait for the WAL flush, which
           -- takes a disk sync off the path from insert to handler start.
           -- Outcomes are committed synchronously, as usual.
           set_config('synchronous_commit', 'off', true) AS async_commit,
           -- One token for the whole batch: a token with a job id names one
           -- lease, since a batch leases a job at most once, and a random
           -- UUID per row would cost more than the rest of a lease.
           gen_random_uuid() AS token
),
expired AS (
    SELECT e.id
    FROM tasuki_job e
    WHERE sqlc.arg('rescue')::boolean
      AND e.queue = @queue
      AND e.status = 'running'
      AND e.lease_expires_at < (SELECT now FROM clock)
      -- coalesce: a nil Go slice arrives as NULL, which would match nothing.
      AND NOT (e.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
      AND (coalesce(cardinality(sqlc.arg('only_ids')::bigint[]), 0) = 0 OR e.id = ANY(sqlc.arg('only_ids')::bigint[]))
    ORDER BY e.id
    LIMIT sqlc.arg('rescue_max')::integer
    FOR UPDATE SKIP LOCKED
),
rescued AS (
    UPDATE tasuki_job r
    SET status = CASE WHEN r.attempts >= r.max_attempts
                      THEN 'failed'::tasuki_job_status
                      ELSE 'pending'::tasuki_job_status END,
        finished_at = CASE WHEN r.attempts >= r.max_attempts
                           THEN (SELECT now FROM clock) END,
        scheduled_at = (SELECT now FROM clock),
        errors = r.errors || jsonb_build_array(jsonb_build_object(
            'attempt', r.attempts,
            'at', (SELECT now FROM clock),
            'error', 'lease expired: the worker stopped renewing its lease (it crashed, hung or lost its database connection)'
        )),
        lease_token = NULL,
        lease_expires_at = NULL
    FROM expired
    WHERE r.id = expired.id
    -- A rescued job is runnable now: wake the queue's workers, as an insert
    -- does, instead of leaving it to their next poll. In RETURNING, because
    -- a data-modifying CTE runs to the end even when nothing reads it, and
    -- one notification is sent per transaction however many rows ask. The
    -- payload names the schema that holds tasuki_job, whatever the
    -- caller's search_path.
    RETURNING r.id,
              CASE WHEN r.status = 'pending' THEN pg_notify('tasuki_jobs', json_build_object(
                  'k', 'insert', 's', (SELECT n.nspname::text
                FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = 'tasuki_job'::regclass), 'q', r.queue)::text) END AS woke
),
-- Two ways to find the jobs to lease. With no seek positions given, from
-- the head of the queue's pending index (fullscan). With positions given,
-- one per priority, each priority is read from just after its position
-- (seek): while an old snapshot holds back vacuum, every job leased since it
-- began leaves an index entry at the head of the queue that no scan can
-- skip or remove, and a lease from the head reads past all of them. The
-- worker keeps the positions, moves them back for jobs committed behind
-- them (it hears of those in wake-ups, or finds them with
-- JobRunnableHeads), and reads from the head when it does not know where
-- jobs are.
fullscan AS (
    SELECT c.id
    FROM tasuki_job c
    WHERE coalesce(cardinality(sqlc.arg('seek_priorities')::smallint[]), 0) = 0
      AND NOT EXISTS (
          SELECT 1 FROM tasuki_queue pq
          WHERE pq.name = @queue AND pq.paused_at IS NOT NULL
      )
      AND c.queue = @queue
      AND c.status = 'pending'
      AND c.scheduled_at <= (SELECT now FROM clock)
      AND NOT (c.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
      AND (coalesce(cardinality(sqlc.arg('only_ids')::bigint[]), 0) = 0 OR c.id = ANY(sqlc.arg('only_ids')::bigint[]))
    ORDER BY c.priority, c.scheduled_at, c.id
    LIMIT sqlc.arg('max')::integer
    FOR UPDATE SKIP LOCKED
),
seek AS (
    SELECT x.id
    FROM (SELECT unnest(sqlc.arg('seek_priorities')::smallint[]) AS priority,
                 unnest(sqlc.arg('seek_after')::timestamptz[]) AS scheduled_at,
                 unnest(sqlc.arg('seek_after_ids')::bigint[]) AS id) AS pos
    CROSS JOIN LATERAL (
        -- Rows locked here but cut by the LIMIT below stay locked only
        -- until this statement's transaction ends, at once.
        SELECT c.id, c.priority, c.scheduled_at
        FROM tasuki_job c
        WHERE c.queue = @queue
          AND c.status = 'pending'
          AND c.priority = pos.priority
          -- The earliest time a worker can name stands for the head of
          -- the priority, where a job scheduled at -infinity sorts.
          AND (c.scheduled_at, c.id) > (CASE WHEN pos.scheduled_at <= '4714-11-24 00:00:00+00 BC'::timestamptz
                                             THEN '-infinity'::timestamptz
                                             ELSE pos.scheduled_at END, pos.id)
          AND c.scheduled_at <= (SELECT now FROM clock)
          AND NOT (c.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
          AND (coalesce(cardinality(sqlc.arg('only_ids')::bigint[]), 0) = 0 OR c.id = ANY(sqlc.arg('only_ids')::bigint[]))
        ORDER BY c.scheduled_at, c.id
        LIMIT sqlc.arg('max')::integer
        FOR UPDATE SKIP LOCKED
    ) AS x
    WHERE NOT EXISTS (
        SELECT 1 FROM tasuki_queue pq
        WHERE pq.name = @queue AND pq.paused_at IS NOT NULL
    )
    ORDER BY x.priority, x.scheduled_at, x.id
    LIMIT sqlc.arg('max')::integer
),
candidates AS (
    SELECT id FROM fullscan
    UNION ALL
    SELECT id FROM seek
)
UPDATE tasuki_job j
SET status = 'running',
    attempts = j.attempts + 1,
    attempted_at = (SELECT now FROM clock),
    lease_token = (SELECT token FROM clock),
    lease_expires_at = (SELECT now FROM clock) + sqlc.arg('lease_us')::bigint * interval '1 microsecond'
FROM candidates
WHERE j.id = candidates.id
RETURNING j.*;

-- name: JobExpiredIDs :many
-- The ids of up to max jobs of one queue whose lease expired, except those
-- in skip_ids, without changing them: after a batch rescue failed for one
-- row's data, the worker rescues these one at a time, so that the row the
-- database refuses does not hold back the others.
SELECT e.id
FROM tasuki_job e
WHERE e.queue = @queue
  AND e.status = 'running'
  AND e.lease_expires_at < coalesce(sqlc.narg('now')::timestamptz, now())
  -- coalesce: a nil Go slice arrives as NULL, which would match nothing.
      AND NOT (e.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
ORDER BY e.id
LIMIT sqlc.arg('max')::integer;

-- name: JobRunnableIDs :many
-- The ids of up to max runnable jobs of one queue, except those in
-- skip_ids, in the order JobLease takes them, without changing them: after
-- the database refused a lease for one row's data, the worker leases these
-- one at a time, so that the row it refuses does not hold back the others.
SELECT c.id
FROM tasuki_job c
WHERE c.queue = @queue
  AND c.status = 'pending'
  AND c.scheduled_at <= now()
  AND NOT (c.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
ORDER BY c.priority, c.scheduled_at, c.id
LIMIT sqlc.arg('max')::integer;

-- name: JobRunnableHeads :many
-- The first runnable job of each priority of one queue (nothing when the
-- queue is paused), except those in skip_ids: where a worker that leases
-- from remembered positions (JobLease's seek) must look again, as these
-- jobs were committed behind them (inserted by SQL of the application's
-- own, or by a transaction that committed late) or became runnable there.
-- A loose index scan: one index descent per priority. It reads past the
-- dead index entries an old snapshot keeps at the head of each priority,
-- so the worker runs it apart from its leases, and less often the longer
-- it takes.
WITH RECURSIVE heads AS (
    (
        SELECT c.priority, c.scheduled_at, c.id
        FROM tasuki_job c
        WHERE c.queue = @queue
          AND c.status = 'pending'
          AND c.scheduled_at <= now()
          AND NOT (c.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
        ORDER BY c.priority, c.scheduled_at, c.id
        LIMIT 1
    )
    UNION ALL
    SELECT n.priority, n.scheduled_at, n.id
    FROM heads h
    CROSS JOIN LATERAL (
        SELECT c.priority, c.scheduled_at, c.id
        FROM tasuki_job c
        WHERE c.queue = @queue
          AND c.status = 'pending'
          AND c.priority > h.priority
          AND c.scheduled_at <= now()
          AND NOT (c.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
        ORDER BY c.priority, c.scheduled_at, c.id
        LIMIT 1
    ) AS n
)
-- A job scheduled at -infinity (by SQL of the application's own) is
-- reported at the earliest time Go can hold, which stands for the head.
SELECT heads.priority,
       greatest(heads.scheduled_at, '4714-11-24 00:00:00+00 BC'::timestamptz)::timestamptz AS scheduled_at,
       heads.id
FROM heads
WHERE NOT EXISTS (
    SELECT 1 FROM tasuki_queue pq
    WHERE pq.name = @queue AND pq.paused_at IS NOT NULL
);

-- name: JobRunnableHeadsSince :many
-- For each of the given priorities of one queue, the first runnable job
-- scheduled in the last window_us microseconds, by the database clock
-- (nothing when the queue is paused), except
-- those in skip_ids. The cheap, frequent counterpart of JobRunnableHeads:
-- it reads only that range of the index, so it catches, within a poll
-- interval, the jobs that became runnable a little behind the worker's
-- positions (a retry without delay whose commit lagged, a lease of
-- another worker that rolled back, an insert of the application's own
-- SQL in a short transaction), whatever an old snapshot left before that.
SELECT x.priority, x.scheduled_at, x.id
FROM (SELECT unnest(sqlc.arg('priorities')::smallint[]) AS priority) AS p
CROSS JOIN LATERAL (
    SELECT c.priority, c.scheduled_at, c.id
    FROM tasuki_job c
    WHERE c.queue = @queue
      AND c.status = 'pending'
      AND c.priority = p.priority
      AND c.scheduled_at >= now() - sqlc.arg('window_us')::bigint * interval '1 microsecond'
      AND c.scheduled_at <= now()
      AND NOT (c.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
    ORDER BY c.scheduled_at, c.id
    LIMIT 1
) AS x
WHERE NOT EXISTS (
    SELECT 1 FROM tasuki_queue pq
    WHERE pq.name = @queue AND pq.paused_at IS NOT NULL
);
