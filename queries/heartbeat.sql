/*
Heartbeats: keeping leases alive.
*/

-- name: JobHeartbeatMany :many
-- Extends the leases of many running jobs in one statement. Only jobs still
-- running under the given token are extended and returned: a job missing
-- from the result was canceled or its lease was lost, and its handler must
-- stop. Only lease_expires_at changes; the running jobs' index is ordered
-- by it (so that a rescue reads only the leases expired since the last),
-- so a renewal writes new index entries. Like a lease, a renewal need not
-- outlive a database crash, so its commit does not wait for the WAL flush.
WITH clock AS (
    SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS now,
           set_config('synchronous_commit', 'off', true) AS async_commit
),
-- A row another transaction holds is skipped, not waited for: a handler
-- that completes its job in a transaction of its own (CompleteTx) holds
-- its row until that transaction ends, and every other lease of the
-- worker would wait with it. The worker tells a skipped row from a lost
-- lease by JobStatusMany.
held AS (
    SELECT h.id
    FROM tasuki_job h
    JOIN (
        SELECT unnest(sqlc.arg('ids')::bigint[]) AS id,
               unnest(sqlc.arg('tokens')::uuid[]) AS token
    ) AS t ON h.id = t.id
    -- A lease token is set on a running job only (the table's
    -- tasuki_job_lease_iff_running), so it alone fences. A test of status
    -- here would let the planner read the running jobs' partial index in
    -- full instead of the primary key: while an old snapshot holds back
    -- vacuum, that index keeps an entry for every job run since, and this
    -- statement grew slower with each.
    WHERE h.lease_token = t.token
    ORDER BY h.id
    FOR UPDATE OF h SKIP LOCKED
)
UPDATE tasuki_job j
SET lease_expires_at = (SELECT now FROM clock) + sqlc.arg('lease_us')::bigint * interval '1 microsecond'
FROM held
WHERE j.id = held.id
RETURNING j.id;

-- name: JobStatusMany :many
-- The statuses and lease tokens of jobs a heartbeat did not renew:
-- canceled ones were canceled from outside; one still running under the
-- worker's token was held by another transaction (the handler's own, after
-- CompleteTx) and is renewed at the next heartbeat; the others' lease was
-- lost.
SELECT id, status, lease_token FROM tasuki_job WHERE id = ANY(sqlc.arg('ids')::bigint[]);
