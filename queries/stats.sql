/*
Counters read by monitoring and the benchmark.
*/

-- name: JobAnyUnfinished :one
-- Whether a queue has a job not yet finished; stops at the first one found.
SELECT EXISTS (
    SELECT 1 FROM tasuki_job u
    WHERE u.queue = @queue AND u.status IN ('pending', 'running')
) AS unfinished;

-- name: DurableCommitProbe :exec
-- Writes one empty WAL record in a transaction of its own and commits it,
-- so that the commit waits for the disk (with synchronous_commit on, the
-- default) while no data changes. tasuki bench times it to show how many
-- durable commits per second the database allows one connection: the
-- ceiling of single inserts, each of which is its own transaction.
SELECT pg_logical_emit_message(true, 'tasuki.bench', '');

-- name: JobTableVacuum :exec
-- Removes the dead row versions of tasuki_job and refreshes its planner
-- statistics. tasuki bench runs it between runs on its throwaway cluster,
-- so that each run starts from the state its own command would.
VACUUM (ANALYZE) tasuki_job;
