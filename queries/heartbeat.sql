/*
Heartbeats: keeping leases alive.
*/

-- name: JobHeartbeatMany :many
-- Extends the leases of many running jobs in one statement. Only jobs still
-- running under the given token are extended and returned: a job missing
-- from the result was canceled or its lease was lost, and its handler must
-- stop. Only lease_expires_at changes, an unindexed column, so the update
-- can be HOT. Like a lease, a renewal need not outlive a database crash,
-- so its commit does not wait for the WAL flush.
WITH clock AS (
    SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS now,
           set_config('synchronous_commit', 'off', true) AS async_commit
)
UPDATE tasuki_job j
SET lease_expires_at = (SELECT now FROM clock) + sqlc.arg('lease_us')::bigint * interval '1 microsecond'
FROM (
    SELECT unnest(sqlc.arg('ids')::bigint[]) AS id,
           unnest(sqlc.arg('tokens')::uuid[]) AS token
) AS t
WHERE j.id = t.id
  -- A lease token is set on a running job only (the table's
  -- tasuki_job_lease_iff_running), so it alone fences. A test of status
  -- here would let the planner read the running jobs' partial index in
  -- full instead of the primary key: while an old snapshot holds back
  -- vacuum, that index keeps an entry for every job run since, and this
  -- statement grew slower with each.
  AND j.lease_token = t.token
RETURNING j.id;

-- name: JobStatusMany :many
-- The statuses of jobs a heartbeat no longer found running under this
-- worker's token: canceled ones were canceled from outside, the others' lease
-- was lost.
SELECT id, status FROM tasuki_job WHERE id = ANY(sqlc.arg('ids')::bigint[]);
