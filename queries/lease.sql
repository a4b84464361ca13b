/*
Leasing: how a worker takes jobs.
*/

-- name: JobLease :many
-- Leases runnable jobs for one worker process, from any number of its
-- queues and kinds in one round trip, in priority, scheduled time and id
-- order within each queue. Each leased job becomes running with attempts
-- raised by one, a fresh lease token (one per call, shared by the jobs it
-- leases) and a lease that expires lease_us microseconds from now.
-- SKIP LOCKED lets many workers lease at once without waiting on each other.
--
-- What to read comes as sources, each a (queue, kind) pair the process
-- handles, read as ranges of the pending index: from the head of the pair
-- (head_*), or for one priority of it from a time on (seek_*), each at
-- most its limit. Of the jobs read, at most kind_max[i] of kind
-- kind_names[i] (all queues together) and at most queue_max[i] of queue
-- queue_names[i] are leased. A kind of a process is only ever leased by
-- naming it, so a job of a kind the process has no handler for is never
-- leased by it, and jobs of other kinds cost its leases nothing.
--
-- When rescue is true, the same round trip also rescues up to rescue_max
-- jobs of rescue_queues whose lease expired (their worker died, hung or
-- lost its connection): back to pending with the lost attempt recorded as
-- an error, or failed when that was the last attempt, so no job stays
-- running forever. Rescued jobs are leased by the next call, not this one
-- (one statement sees one snapshot); the queue's workers are notified on
-- commit, so that call comes at once. When beat is true, it records the
-- process in tasuki_process (its queues and kinds) until process_ttl_us
-- from now.
--
-- Jobs in skip_ids are neither leased nor rescued: the database refused to
-- change them before (an application's trigger or constraint), and the
-- worker tries them again later. When only_ids is not empty, only those
-- jobs are leased or rescued. If the database refuses a row, this
-- statement fails as a whole: the worker then rescues and leases one job
-- per call, with only_ids naming it, and sets aside the ones refused, so
-- that one such row never stops a queue.
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
    SELECT e.id, e.lease_expires_at
    FROM tasuki_job e
    WHERE sqlc.arg('rescue')::boolean
      AND e.queue = ANY(sqlc.arg('rescue_queues')::text[])
      AND e.status = 'running'
      AND e.lease_expires_at < (SELECT now FROM clock)
      -- Only the leases that expired since this process's last rescue
      -- (less rescue_margin_us, for a renewal that committed late), unless
      -- rescue_full: an index range that skips the entries of every job
      -- that ran before, which an old snapshot keeps.
      AND e.lease_expires_at >= CASE
          WHEN sqlc.arg('rescue_full')::boolean THEN '-infinity'::timestamptz
          ELSE coalesce((SELECT p.rescued_through FROM tasuki_process p WHERE p.id = sqlc.arg('process_id')::uuid),
                        '-infinity'::timestamptz)
               - sqlc.arg('rescue_margin_us')::bigint * interval '1 microsecond'
          END
      -- coalesce: a nil Go slice arrives as NULL, which would match nothing.
      AND NOT (e.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
      AND (coalesce(cardinality(sqlc.arg('only_ids')::bigint[]), 0) = 0 OR e.id = ANY(sqlc.arg('only_ids')::bigint[]))
    ORDER BY e.lease_expires_at, e.id
    LIMIT sqlc.arg('rescue_max')::integer
    FOR UPDATE SKIP LOCKED
),
-- How far the rescue got: every lease that expired before it was read,
-- unless it stopped at rescue_max (then up to the last one it took). NULL
-- when this statement rescued nothing of a whole range (no rescue, or
-- only_ids).
rescue_mark AS (
    SELECT CASE WHEN NOT sqlc.arg('rescue')::boolean
                  OR coalesce(cardinality(sqlc.arg('only_ids')::bigint[]), 0) > 0 THEN NULL
                WHEN count(*) < sqlc.arg('rescue_max')::integer THEN (SELECT now FROM clock)
                ELSE max(x.lease_expires_at) END AS through
    FROM expired x
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
            'error', 'lease expired: the worker stopped renewing its lease (it crashed, hung or lost its database connection)',
            -- Marks the entry as a rescue's, which no handler's error can
            -- pass for (a rescued event, worker.noteRescued).
            'rescued', true
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
beat AS (
    INSERT INTO tasuki_process (id, host, pid, queues, kinds, expires_at, rescued_through)
    SELECT sqlc.arg('process_id')::uuid, sqlc.arg('process_host')::text, sqlc.arg('process_pid')::integer,
           sqlc.arg('process_queues')::text[], sqlc.arg('process_kinds')::text[],
           (SELECT now FROM clock) + sqlc.arg('process_ttl_us')::bigint * interval '1 microsecond',
           (SELECT through FROM rescue_mark)
    WHERE sqlc.arg('beat')::boolean
    ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at,
        rescued_through = coalesce(EXCLUDED.rescued_through, tasuki_process.rescued_through)
    RETURNING 1
),
-- The limits, each queue and kind numbered (qn, kn): the limits below
-- sort and partition by those numbers rather than by names, which would
-- compare text by the database's collation at every step.
queue_limits AS MATERIALIZED (
    SELECT q.qn, q.queue, (sqlc.arg('queue_max')::integer[])[q.qn] AS max
    FROM unnest(sqlc.arg('queue_names')::text[]) WITH ORDINALITY AS q(queue, qn)
),
kind_limits AS MATERIALIZED (
    SELECT k.kn, k.kind, (sqlc.arg('kind_max')::integer[])[k.kn] AS max
    FROM unnest(sqlc.arg('kind_names')::text[]) WITH ORDINALITY AS k(kind, kn)
),
-- The ranges of the pending index to read, of queues that are not paused,
-- each named by rk: a (queue, kind) pair from its head (head_*), or one
-- priority of it from a time on (seek_*).
head_sources AS MATERIALIZED (
    SELECT s.ord AS rk, s.queue, s.kind, s.lim, s.peek, ql.qn, kl.kn,
           -- Asked for less than its queue and kind leave: see peek_bounds.
           s.lim < ql.max AND s.lim < kl.max AS shrunk
    FROM (SELECT q.ord, q.queue,
                 (sqlc.arg('head_kinds')::text[])[q.ord] AS kind,
                 (sqlc.arg('head_limits')::integer[])[q.ord] AS lim,
                 coalesce((sqlc.arg('head_peek')::boolean[])[q.ord], false) AS peek
          FROM unnest(sqlc.arg('head_queues')::text[]) WITH ORDINALITY AS q(queue, ord)) AS s
    JOIN queue_limits ql ON ql.queue = s.queue
    JOIN kind_limits kl ON kl.kind = s.kind
    WHERE NOT EXISTS (
        SELECT 1 FROM tasuki_queue pq
        WHERE pq.name = s.queue AND pq.paused_at IS NOT NULL
    )
),
seek_sources AS MATERIALIZED (
    SELECT -s.ord AS rk, s.queue, s.kind, s.priority, s.lim, s.peek, ql.qn, kl.kn,
           s.lim < ql.max AND s.lim < kl.max AS shrunk,
           -- The earliest time a worker can name stands for the head of
           -- the priority, where a job scheduled at -infinity sorts.
           CASE WHEN s.after <= '4714-11-24 00:00:00+00 BC'::timestamptz
                THEN '-infinity'::timestamptz ELSE s.after END AS after
    FROM (SELECT q.ord, q.queue,
                 (sqlc.arg('seek_kinds')::text[])[q.ord] AS kind,
                 (sqlc.arg('seek_priorities')::smallint[])[q.ord] AS priority,
                 (sqlc.arg('seek_after')::timestamptz[])[q.ord] AS after,
                 (sqlc.arg('seek_limits')::integer[])[q.ord] AS lim,
                 coalesce((sqlc.arg('seek_peek')::boolean[])[q.ord], false) AS peek
          FROM unnest(sqlc.arg('seek_queues')::text[]) WITH ORDINALITY AS q(queue, ord)) AS s
    JOIN queue_limits ql ON ql.queue = s.queue
    JOIN kind_limits kl ON kl.kind = s.kind
    WHERE NOT EXISTS (
        SELECT 1 FROM tasuki_queue pq
        WHERE pq.name = s.queue AND pq.paused_at IS NOT NULL
    )
),
-- A range is alone when no other range shares its queue or its kind: the
-- least its queue and kind leave is then what it may take. A range that is
-- not alone is read first without locks (peeked) when the worker asks
-- (head_peek, seek_peek: its queue was saturated at the worker's last
-- lease); see peek.
ranges AS MATERIALIZED (
    SELECT r.rk, r.alone, NOT r.alone AND r.peek AS peeked
    FROM (SELECT a.rk, a.peek,
                 count(*) OVER (PARTITION BY a.qn) = 1 AND count(*) OVER (PARTITION BY a.kn) = 1 AS alone
          FROM (SELECT h.rk, h.qn, h.kn, h.peek FROM head_sources h
                UNION ALL
                SELECT k.rk, k.qn, k.kn, k.peek FROM seek_sources k) AS a) AS r
),
-- Two ways to read a range. From the head of its pair (heads), or, for one
-- priority, from a time on (seeks): while an old snapshot holds back
-- vacuum, every job leased since it began leaves an index entry at the
-- head of its range that no scan can skip or remove, and a lease from the
-- head reads past all of them. The worker keeps where it stopped, moves
-- back for jobs committed behind that (it hears of those in wake-ups, or
-- finds them with JobRunnableHeads), and reads from the head when it does
-- not know where jobs are.
--
-- Each range is locked up to its limit (take), and of the rows locked the
-- limits keep the first ones (chosen). When several ranges share a
-- saturated queue, that would lock, and write, up to one batch per range
-- for every batch leased; so the worker has those ranges read first
-- without locks (peek), and only the rows of the peek that the limits keep
-- are locked (take_peeked). A row another transaction holds is counted by
-- the peek and skipped by take_peeked: its slot stays free until the next
-- lease, and no later row of its range takes it out of order. The worker
-- then sees the queue (or the kind, at its limit) come back short, and
-- has its next lease lock without peeking.
peek AS MATERIALIZED (
    SELECT s.qn, s.kn, s.shrunk AND x.n = s.lim AS last, x.id, x.priority, x.scheduled_at
    FROM head_sources s
    JOIN ranges r ON r.rk = s.rk AND r.peeked
    CROSS JOIN LATERAL (
        SELECT c.id, c.priority, c.scheduled_at,
               row_number() OVER (ORDER BY c.priority, c.scheduled_at, c.id) AS n
        FROM tasuki_job c
        WHERE c.queue = s.queue
          AND c.kind = s.kind
          AND c.status = 'pending'
          AND c.scheduled_at <= (SELECT now FROM clock)
          AND NOT (c.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
          AND (coalesce(cardinality(sqlc.arg('only_ids')::bigint[]), 0) = 0 OR c.id = ANY(sqlc.arg('only_ids')::bigint[]))
        ORDER BY c.priority, c.scheduled_at, c.id
        LIMIT s.lim
    ) AS x
    UNION ALL
    SELECT s.qn, s.kn, s.shrunk AND x.n = s.lim AS last, x.id, x.priority, x.scheduled_at
    FROM seek_sources s
    JOIN ranges r ON r.rk = s.rk AND r.peeked
    CROSS JOIN LATERAL (
        SELECT c.id, c.priority, c.scheduled_at,
               row_number() OVER (ORDER BY c.scheduled_at, c.id) AS n
        FROM tasuki_job c
        WHERE c.queue = s.queue
          AND c.kind = s.kind
          AND c.priority = s.priority
          AND c.scheduled_at >= s.after
          AND c.status = 'pending'
          AND c.scheduled_at <= (SELECT now FROM clock)
          AND NOT (c.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
          AND (coalesce(cardinality(sqlc.arg('only_ids')::bigint[]), 0) = 0 OR c.id = ANY(sqlc.arg('only_ids')::bigint[]))
        ORDER BY c.scheduled_at, c.id
        LIMIT s.lim
    ) AS x
),
-- A peeked range may ask for less than its queue and kind leave (shrunk):
-- the worker asks each for about its share of the queue's recent leases,
-- rather than each for all the queue's free slots, which would read a
-- batch per range for every batch leased. A shrunk range that filled what
-- it asked may have more jobs after its last one, unread: so of its queue,
-- only jobs up to the earliest such last one (in priority, scheduled time
-- and id order) are leased, all of which were read, and the next lease
-- goes on from there. The worker shrinks no range of a queue whose kinds'
-- own limits may cut (kind_binds), so that a kind's jobs in one queue are
-- never cut short for its jobs in another.
peek_bounds AS MATERIALIZED (
    SELECT DISTINCT ON (p.qn) p.qn, p.priority, p.scheduled_at, p.id
    FROM peek p
    WHERE p.last
    ORDER BY p.qn, p.priority, p.scheduled_at, p.id
),
-- A kind's limit can cut only when its ranges ask for more than it leaves.
kind_binds AS MATERIALIZED (
    SELECT kl.kn, kl.max < coalesce((SELECT sum(a.lim) FROM (
        SELECT h.lim FROM head_sources h WHERE h.kn = kl.kn
        UNION ALL
        SELECT k.lim FROM seek_sources k WHERE k.kn = kl.kn) AS a), 0) AS binds
    FROM kind_limits kl
),
peek_by_kind AS MATERIALIZED (
    SELECT p.qn, p.kn, p.id, p.priority, p.scheduled_at
    FROM peek p
    JOIN kind_binds kb ON kb.kn = p.kn AND NOT kb.binds
    LEFT JOIN peek_bounds b ON b.qn = p.qn
    WHERE b.qn IS NULL OR (p.priority, p.scheduled_at, p.id) <= (b.priority, b.scheduled_at, b.id)
    UNION ALL
    SELECT w.qn, w.kn, w.id, w.priority, w.scheduled_at
    FROM (SELECT p.qn, p.kn, p.id, p.priority, p.scheduled_at,
                 row_number() OVER (PARTITION BY p.kn ORDER BY p.priority, p.scheduled_at, p.id) AS rank
          FROM peek p
          JOIN kind_binds kb ON kb.kn = p.kn AND kb.binds
          LEFT JOIN peek_bounds b ON b.qn = p.qn
          WHERE b.qn IS NULL OR (p.priority, p.scheduled_at, p.id) <= (b.priority, b.scheduled_at, b.id)) AS w
    JOIN kind_limits kl ON kl.kn = w.kn
    WHERE w.rank <= kl.max
),
-- Each queue's first jobs: a bounded sort per queue, not a window over
-- all that was read.
peek_kept AS (
    SELECT x.id
    FROM queue_limits ql
    CROSS JOIN LATERAL (
        SELECT b.id
        FROM peek_by_kind b
        WHERE b.qn = ql.qn
        ORDER BY b.priority, b.scheduled_at, b.id
        LIMIT ql.max
    ) AS x
),
take_peeked AS (
    SELECT c.queue, c.kind, c.id, c.priority, c.scheduled_at
    FROM tasuki_job c
    -- An array, and no join here: a plan that joins could read a queue's
    -- whole range of the pending index for a few thousand ids.
    WHERE c.id = ANY(ARRAY(SELECT k.id FROM peek_kept k))
      -- Rechecked when another transaction changed the row meanwhile. As
      -- text, so that no plan reads the partial pending index for it
      -- beside the ids (a whole index of pending jobs, for a few
      -- thousand, when the table's statistics are missing or stale).
      AND c.status::text = 'pending'
    FOR UPDATE OF c SKIP LOCKED
),
take AS (
    SELECT r.alone, s.qn, s.kn, x.id, x.priority, x.scheduled_at
    FROM head_sources s
    JOIN ranges r ON r.rk = s.rk AND NOT r.peeked
    CROSS JOIN LATERAL (
        SELECT c.id, c.priority, c.scheduled_at
        FROM tasuki_job c
        WHERE c.queue = s.queue
          AND c.kind = s.kind
          AND c.status = 'pending'
          AND c.scheduled_at <= (SELECT now FROM clock)
          AND NOT (c.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
          AND (coalesce(cardinality(sqlc.arg('only_ids')::bigint[]), 0) = 0 OR c.id = ANY(sqlc.arg('only_ids')::bigint[]))
        ORDER BY c.priority, c.scheduled_at, c.id
        LIMIT s.lim
        FOR UPDATE SKIP LOCKED
    ) AS x
    UNION ALL
    SELECT r.alone, s.qn, s.kn, x.id, x.priority, x.scheduled_at
    FROM seek_sources s
    JOIN ranges r ON r.rk = s.rk AND NOT r.peeked
    CROSS JOIN LATERAL (
        SELECT c.id, c.priority, c.scheduled_at
        FROM tasuki_job c
        WHERE c.queue = s.queue
          AND c.kind = s.kind
          AND c.priority = s.priority
          AND c.scheduled_at >= s.after
          AND c.status = 'pending'
          AND c.scheduled_at <= (SELECT now FROM clock)
          AND NOT (c.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
          AND (coalesce(cardinality(sqlc.arg('only_ids')::bigint[]), 0) = 0 OR c.id = ANY(sqlc.arg('only_ids')::bigint[]))
        ORDER BY c.scheduled_at, c.id
        LIMIT s.lim
        FOR UPDATE SKIP LOCKED
    ) AS x
),
-- The limits: first each kind's, over all queues, then each queue's, both
-- in the order jobs are taken. What a range alone took is kept: it took
-- no more than they allow; so is what the peeked ranges took when every
-- range that is not alone was peeked, as the peek applied them. Rows
-- locked here but cut by them stay locked only until this statement's
-- transaction ends, at once.
mixed AS (
    SELECT EXISTS (SELECT 1 FROM ranges r WHERE NOT r.alone AND NOT r.peeked) AS some_locked
),
by_kind AS (
    SELECT t.qn, t.kn, t.id, t.priority, t.scheduled_at,
           row_number() OVER (PARTITION BY t.kn ORDER BY t.priority, t.scheduled_at, t.id) AS rank
    FROM (SELECT take.qn, take.kn, take.id, take.priority, take.scheduled_at
          FROM take
          LEFT JOIN peek_bounds b ON b.qn = take.qn
          -- The worker shrinks no range of a queue it reads with locks;
          -- were one shrunk, the bound would hold for these rows too.
          WHERE NOT take.alone
            AND (b.qn IS NULL OR (take.priority, take.scheduled_at, take.id) <= (b.priority, b.scheduled_at, b.id))
          UNION ALL
          SELECT ql.qn, kl.kn, p.id, p.priority, p.scheduled_at
          FROM take_peeked p
          JOIN queue_limits ql ON ql.queue = p.queue
          JOIN kind_limits kl ON kl.kind = p.kind
          WHERE (SELECT some_locked FROM mixed)) AS t
),
by_queue AS (
    SELECT b.id, b.qn,
           row_number() OVER (PARTITION BY b.qn ORDER BY b.priority, b.scheduled_at, b.id) AS rank
    FROM by_kind b
    JOIN kind_limits kl ON kl.kn = b.kn
    WHERE b.rank <= kl.max
),
chosen AS (
    SELECT t.id FROM take t WHERE t.alone
    UNION ALL
    SELECT t.id FROM take_peeked t WHERE NOT (SELECT some_locked FROM mixed)
    UNION ALL
    SELECT b.id
    FROM by_queue b
    JOIN queue_limits ql ON ql.qn = b.qn
    WHERE b.rank <= ql.max
)
UPDATE tasuki_job j
SET status = 'running',
    -- A job scheduled at -infinity (by SQL of the application's own) is
    -- leased as scheduled at the earliest time Go can hold: returned as
    -- it is, it would fail the whole statement, for every queue and kind
    -- of the worker, at every try.
    scheduled_at = greatest(j.scheduled_at, '4714-11-24 00:00:00+00 BC'::timestamptz),
    attempts = j.attempts + 1,
    attempted_at = (SELECT now FROM clock),
    lease_token = (SELECT token FROM clock),
    lease_expires_at = (SELECT now FROM clock) + sqlc.arg('lease_us')::bigint * interval '1 microsecond'
FROM chosen
WHERE j.id = chosen.id
RETURNING j.*;

-- name: JobExpiredIDs :many
-- The ids of up to max jobs of the given queues whose lease expired, except
-- those in skip_ids, without changing them: after a batch rescue failed
-- for one row's data, the worker rescues these one at a time, so that the
-- row the database refuses does not hold back the others.
SELECT e.id
FROM tasuki_job e
WHERE e.queue = ANY(sqlc.arg('queues')::text[])
  AND e.status = 'running'
  AND e.lease_expires_at < coalesce(sqlc.narg('now')::timestamptz, now())
  -- coalesce: a nil Go slice arrives as NULL, which would match nothing.
  AND NOT (e.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
ORDER BY e.id
LIMIT sqlc.arg('max')::integer;

-- name: JobRunnableIDs :many
-- The ids of up to max runnable jobs of the given (queue, kind) pairs,
-- except those in skip_ids, without changing them: after the database
-- refused a lease for one row's data, the worker leases these one at a
-- time, so that the row it refuses does not hold back the others.
SELECT x.id, s.queue::text AS queue, s.kind::text AS kind
FROM (SELECT unnest(sqlc.arg('queues')::text[]) AS queue, unnest(sqlc.arg('kinds')::text[]) AS kind) AS s
CROSS JOIN LATERAL (
    SELECT c.id, c.priority, c.scheduled_at
    FROM tasuki_job c
    WHERE c.queue = s.queue
      AND c.kind = s.kind
      AND c.status = 'pending'
      AND c.scheduled_at <= now()
      AND NOT (c.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
    ORDER BY c.priority, c.scheduled_at, c.id
    LIMIT sqlc.arg('max')::integer
) AS x
ORDER BY x.priority, x.scheduled_at, x.id
LIMIT sqlc.arg('max')::integer;

-- name: JobRunnableHeads :many
-- The first runnable job of each priority of each given (queue, kind) pair
-- (nothing for a paused queue), except those in skip_ids: where a worker
-- that leases from remembered positions (JobLease's seeks) must look
-- again, as these jobs were committed behind them (inserted by SQL of the
-- application's own, or by a transaction that committed late) or became
-- runnable there. A loose index scan: one index descent per priority. It
-- reads past the dead index entries an old snapshot keeps at the head of
-- each range, so the worker runs it apart from its leases, and less often
-- the longer it takes.
WITH RECURSIVE sources AS MATERIALIZED (
    SELECT s.queue, s.kind
    FROM (SELECT unnest(sqlc.arg('queues')::text[]) AS queue, unnest(sqlc.arg('kinds')::text[]) AS kind) AS s
    WHERE NOT EXISTS (
        SELECT 1 FROM tasuki_queue pq
        WHERE pq.name = s.queue AND pq.paused_at IS NOT NULL
    )
),
found AS (
    SELECT f.queue, f.kind, f.priority, f.scheduled_at, f.id
    FROM sources s
    CROSS JOIN LATERAL (
        SELECT c.queue, c.kind, c.priority, c.scheduled_at, c.id
        FROM tasuki_job c
        WHERE c.queue = s.queue
          AND c.kind = s.kind
          AND c.status = 'pending'
          AND c.scheduled_at <= now()
          AND NOT (c.id = ANY(coalesce(sqlc.arg('skip_ids')::bigint[], '{}')))
        ORDER BY c.priority, c.scheduled_at, c.id
        LIMIT 1
    ) AS f
    UNION ALL
    SELECT n.queue, n.kind, n.priority, n.scheduled_at, n.id
    FROM found h
    CROSS JOIN LATERAL (
        SELECT c.queue, c.kind, c.priority, c.scheduled_at, c.id
        FROM tasuki_job c
        WHERE c.queue = h.queue
          AND c.kind = h.kind
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
SELECT found.queue::text AS queue, found.kind::text AS kind, found.priority::smallint AS priority,
       greatest(found.scheduled_at, '4714-11-24 00:00:00+00 BC'::timestamptz)::timestamptz AS scheduled_at,
       found.id::bigint AS id
FROM found;

-- name: JobRunnableHeadsSince :many
-- For each given (queue, kind, priority), the first runnable job scheduled
-- in the last window_us microseconds, by the database clock (nothing for a
-- paused queue), except those in skip_ids. The cheap, frequent
-- counterpart of JobRunnableHeads: it reads only that range of the index,
-- so it catches, within a poll interval, the jobs that became runnable a
-- little behind the worker's positions (a retry without delay whose
-- commit lagged, a lease of another worker that rolled back, an insert of
-- the application's own SQL in a short transaction), whatever an old
-- snapshot left before that.
SELECT x.queue, x.kind, x.priority, x.scheduled_at, x.id
FROM (SELECT unnest(sqlc.arg('queues')::text[]) AS queue, unnest(sqlc.arg('kinds')::text[]) AS kind, unnest(sqlc.arg('priorities')::smallint[]) AS priority) AS p
CROSS JOIN LATERAL (
    SELECT c.queue, c.kind, c.priority, c.scheduled_at, c.id
    FROM tasuki_job c
    WHERE c.queue = p.queue
      AND c.kind = p.kind
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
    WHERE pq.name = p.queue AND pq.paused_at IS NOT NULL
);

-- name: JobLeaseOne :one
-- Leases the one pending job id, if its kind is one of kinds, whatever
-- its scheduled time and its queue's pause: for running one job in a test
-- (Worker.WorkJob). The row changes as JobLease changes the rows it
-- leases.
UPDATE tasuki_job j
SET status = 'running',
    scheduled_at = greatest(j.scheduled_at, '4714-11-24 00:00:00+00 BC'::timestamptz),
    attempts = j.attempts + 1,
    attempted_at = now(),
    lease_token = gen_random_uuid(),
    lease_expires_at = now() + sqlc.arg('lease_us')::bigint * interval '1 microsecond'
WHERE j.id = sqlc.arg('id')
  AND j.status = 'pending'
  AND j.kind = ANY(sqlc.arg('kinds')::text[])
RETURNING j.*;
