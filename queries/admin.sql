-- Reading and managing jobs from outside a worker.

-- name: JobGet :one
SELECT * FROM tasuki_job WHERE id = @id;
