/*
Reading and managing jobs from outside a worker.
*/

-- name: JobGet :one
SELECT * FROM tasuki_job WHERE id = @id;

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
