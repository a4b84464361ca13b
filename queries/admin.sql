/*
Reading and managing jobs from outside a worker.
*/

-- name: JobGet :one
SELECT * FROM tasuki_job WHERE id = @id;

-- name: JobCancel :one
-- Cancels a pending or running job; a finished job is left as it is and no
-- row is returned. A running job's worker learns of it from the
-- notification sent by NotifyJobCanceled, or at worst at its next
-- heartbeat; its late result is refused because the job is no longer
-- running.
UPDATE tasuki_job
SET status = 'canceled',
    finished_at = coalesce(sqlc.narg('now')::timestamptz, now()),
    errors = errors || jsonb_build_array(jsonb_build_object(
        'attempt', attempts,
        'at', coalesce(sqlc.narg('now')::timestamptz, now()),
        'error', 'canceled: ' || sqlc.arg('reason')::text)),
    lease_token = NULL,
    lease_expires_at = NULL
WHERE id = @id
  AND status IN ('pending', 'running')
RETURNING *;

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
