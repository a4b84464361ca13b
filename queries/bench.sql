/*
Statements of tasuki bench's snapshot run, which measures the queue while an
old transaction holds back vacuum, and of its idle run, which counts what an
idle worker holds. Nothing else uses them.
*/

-- name: BenchSnapshotHold :one
-- Run as the first statements of a REPEATABLE READ transaction that then
-- stays idle: txid_current() gives the transaction an xid and the count
-- takes its snapshot, which from then on holds back the xmin horizon of the
-- whole cluster, as a long report or a forgotten psql session would. No
-- row version that died after it can be removed, by vacuum or by pruning,
-- until it ends. The count reads the table, so the snapshot is that of a
-- real reader of tasuki_job, not only of an open xid.
SELECT txid_current()::bigint AS xid,
       (SELECT count(*) FROM tasuki_job) AS jobs;

-- name: BenchJobDeadTuples :one
-- The dead row versions of tasuki_job (in the schema the search_path
-- finds, hence the regclass) as the statistics system counts them: the
-- function behind pg_stat_user_tables.n_dead_tup, which sqlc does not
-- know as a view. Each backend reports its counts when it goes idle, at
-- most once a second, so the figure lags the table by a second or more;
-- BenchStatFlush, run first, makes it as fresh as those reports.
SELECT pg_stat_get_dead_tuples('tasuki_job'::regclass)::bigint AS n_dead_tup;

-- name: BenchStatFlush :exec
-- Flushes this backend's pending statistics (PostgreSQL 15 and later), and
-- drops the statistics snapshot it may hold, so that the next read of
-- pg_stat_user_tables is as fresh as the other backends' reports.
SELECT pg_stat_force_next_flush(), pg_stat_clear_snapshot();

-- name: BenchExplainPendingScan :many
-- The read at the heart of JobLease, without its locks and updates: the
-- first 32 runnable jobs of a queue in lease order, through the pending
-- index. Explained with ANALYZE and BUFFERS, it shows how many pages a
-- lease has to visit to find them; under a held snapshot that number grows
-- with the index entries of jobs that left pending but cannot be removed.
EXPLAIN (ANALYZE, BUFFERS)
SELECT id
FROM tasuki_job
WHERE queue = @queue AND status = 'pending' AND scheduled_at <= now()
ORDER BY priority, scheduled_at, id
LIMIT 32;

-- name: BenchWorkerConnections :many
-- The connections an idle worker holds, by application_name: those of its
-- own pool ('tasuki-worker') and its LISTEN connection ('tasuki-listener').
-- Only the backends whose pids the bench saw its pool's connections open
-- count (pids), so that workers of other runs or tests on the same server,
-- which carry the same names, are left out (a pid is reused only once
-- its backend has exited). From the function behind pg_stat_activity,
-- which sqlc does not know as a view.
SELECT a.application_name::text AS application_name, count(*)::int AS connections
FROM pg_stat_get_activity(NULL) AS a
WHERE a.application_name IN ('tasuki-worker', 'tasuki-listener')
  AND a.pid = ANY(@pids::int[])
GROUP BY a.application_name
ORDER BY a.application_name;
