-- Counters read by monitoring and the benchmark.

-- name: JobCountUnfinished :one
-- Jobs of a queue not yet finished (pending or running). Both statuses have
-- a partial index, so this stays cheap while the finished jobs pile up.
SELECT (
    (SELECT count(*) FROM tasuki_job p WHERE p.queue = @queue AND p.status = 'pending')
  + (SELECT count(*) FROM tasuki_job r WHERE r.queue = @queue AND r.status = 'running')
)::bigint AS count;

-- name: JobAnyUnfinished :one
-- Whether a queue has a job not yet finished; stops at the first one found.
SELECT EXISTS (
    SELECT 1 FROM tasuki_job u
    WHERE u.queue = @queue AND u.status IN ('pending', 'running')
) AS unfinished;
