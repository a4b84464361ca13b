/*
LISTEN/NOTIFY: how workers hear about new and canceled jobs.
*/

-- name: ListenJobs :exec
-- Subscribes the connection to the channel that inserts and job
-- cancellation notify on.
LISTEN tasuki_jobs;

-- name: NotifyJobCanceled :exec
-- Tells the worker running a job that it was canceled, so its handler stops
-- at once instead of at the next heartbeat.
SELECT pg_notify('tasuki_jobs', json_build_object(
    'k', 'cancel',
    's', current_schema(),
    'q', sqlc.arg('queue')::text,
    'id', sqlc.arg('id')::bigint)::text);

-- name: CurrentSchema :one
-- The schema tasuki's tables are found in; it tells this installation's
-- notifications from those of other schemas in the same database.
SELECT current_schema()::text;
