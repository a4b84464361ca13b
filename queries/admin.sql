/*
Reading and managing jobs from outside a worker.
*/

-- name: JobGet :one
SELECT * FROM tasuki_job WHERE id = @id;

-- name: JobCancel :one
-- Cancels a pending or running job; a finished job is left as it is and no
-- row is returned. When the job was running, the same statement tells its
-- worker, on commit: the notification carries the lease token the job had,
-- so a worker that has since leased the job again (after a retry) does not
-- take it for its own lease. A worker that misses the notification learns
-- of the cancellation at its next heartbeat; its late result is refused
-- because the job is no longer running. notified runs only because the
-- final select reads it.
WITH clock AS (
    SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS now
),
target AS (
    SELECT t.id, t.lease_token
    FROM tasuki_job t
    WHERE t.id = @id
      AND t.status IN ('pending', 'running')
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
    FROM target
    WHERE j.id = target.id
    RETURNING j.*
),
notified AS (
    SELECT pg_notify('tasuki_jobs', json_build_object(
        'k', 'cancel', 's', current_schema(), 'q', c.queue, 'id', c.id, 't', target.lease_token)::text)
    FROM canceled c
    JOIN target ON target.id = c.id
    WHERE target.lease_token IS NOT NULL
)
SELECT canceled.*
FROM canceled
CROSS JOIN (SELECT count(*) AS sent FROM notified) n;

-- name: JobCountByStatus :many
-- Jobs per queue and status; queues and statuses without jobs are absent.
SELECT queue, status, count(*)::bigint AS count
FROM tasuki_job
GROUP BY queue, status
ORDER BY queue, status;

-- name: JobDeleteQueueBatch :execrows
-- Deletes up to max jobs of a queue that are not running, whatever their
-- status; returns how many it deleted. Call it until it returns 0.
DELETE FROM tasuki_job
WHERE id IN (
    SELECT d.id FROM tasuki_job d
    WHERE d.queue = @queue AND d.status <> 'running'
    LIMIT sqlc.arg('max')::integer
);
