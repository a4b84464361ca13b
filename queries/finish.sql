/*
State transitions a worker makes when its handlers return.
*/

-- name: JobFinishMany :many
-- Records the outcomes of many attempts in one statement. For each job:
--   status     completed, failed or canceled (finished), or pending (retry);
--   delay_us   for pending: microseconds from now until the retry;
--   error      the attempt's error, recorded in the job's history ('' = none);
--   give_back  true when the attempt was interrupted (graceful shutdown): it
--              does not count against max_attempts.
--   snooze     true when the handler snoozed the job (tasuki.Snooze): it
--              waits delay_us, the attempt does not count against
--              max_attempts, and the job's snoozes count grows by one.
-- Every row is fenced by its lease token: a worker that lost its lease
-- changes nothing, and a job canceled meanwhile stays canceled. The returned
-- ids are the jobs actually changed.
WITH clock AS (
    SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS now
)
UPDATE tasuki_job j
SET status = t.status::tasuki_job_status,
    attempts = j.attempts - CASE WHEN t.give_back OR t.snooze THEN 1 ELSE 0 END,
    snoozes = j.snoozes + CASE WHEN t.snooze THEN 1 ELSE 0 END,
    scheduled_at = CASE WHEN t.status = 'pending'
                        THEN (SELECT now FROM clock) + t.delay_us * interval '1 microsecond'
                        ELSE j.scheduled_at END,
    finished_at = CASE WHEN t.status = 'pending' THEN NULL ELSE (SELECT now FROM clock) END,
    errors = CASE WHEN t.error = '' THEN j.errors
                  ELSE j.errors || jsonb_build_array(jsonb_build_object(
                      'attempt', j.attempts,
                      'at', (SELECT now FROM clock),
                      'error', t.error))
             END,
    lease_token = NULL,
    lease_expires_at = NULL
FROM (
    -- Several set-returning functions in one select list advance together,
    -- row by row: the arrays are zipped into one row per job.
    SELECT unnest(sqlc.arg('ids')::bigint[]) AS id,
           unnest(sqlc.arg('tokens')::uuid[]) AS token,
           unnest(sqlc.arg('statuses')::text[]) AS status,
           unnest(sqlc.arg('delays_us')::bigint[]) AS delay_us,
           unnest(sqlc.arg('errors')::text[]) AS error,
           unnest(sqlc.arg('give_back')::boolean[]) AS give_back,
           unnest(sqlc.arg('snooze')::boolean[]) AS snooze
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

-- name: JobCompleteTx :one
-- Completes a running job inside the caller's transaction (a handler's
-- own), fenced by its lease token: nothing changes, and no row is
-- returned, when the lease was lost or the job canceled. Then the caller
-- must not commit its transaction. The job's row stays locked by that
-- transaction until it ends, so the completion and the caller's writes
-- commit together or not at all.
UPDATE tasuki_job
SET status = 'completed',
    finished_at = coalesce(sqlc.narg('now')::timestamptz, now()),
    lease_token = NULL,
    lease_expires_at = NULL
WHERE id = sqlc.arg('id')::bigint
  AND lease_token = sqlc.arg('token')::uuid
RETURNING id;
