/*
Worker processes, as they record themselves in tasuki_process (see
JobLease): read by tasuki.Admin and the tasuki command, removed by the
worker when it stops.
*/

-- name: ProcessListLive :many
-- The worker processes alive now: those whose expires_at lies ahead, as a
-- running process renews it and a process that died stops doing so. A
-- process that stopped cleanly has deleted its row. Ordered by host and
-- pid, so that a listing reads like ps. The id is text: pgx's UUID type
-- would need converting.
SELECT p.id::text AS id,
       p.host,
       p.pid,
       p.queues,
       p.kinds,
       p.started_at,
       p.expires_at
FROM tasuki_process p
WHERE p.expires_at > coalesce(sqlc.narg('now')::timestamptz, now())
ORDER BY p.host, p.pid, p.started_at, p.id;

-- name: ProcessForget :exec
-- Removes a worker process's row when it stops, and rows of processes
-- that died more than a day ago.
DELETE FROM tasuki_process
WHERE id = @id OR expires_at < now() - interval '1 day';
