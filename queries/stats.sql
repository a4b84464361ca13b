/*
Counters read by monitoring and the benchmark.
*/

-- name: JobAnyUnfinished :one
-- Whether a queue has a job not yet finished; stops at the first one found.
SELECT EXISTS (
    SELECT 1 FROM tasuki_job u
    WHERE u.queue = @queue AND u.status IN ('pending', 'running')
) AS unfinished;
