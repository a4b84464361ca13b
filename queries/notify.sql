/*
LISTEN/NOTIFY: how workers hear about new and canceled jobs.
*/

-- name: ListenJobs :exec
-- Subscribes the connection to the channel that inserts and job
-- cancellation notify on.
LISTEN tasuki_jobs;

-- name: CurrentSchema :one
-- The schema tasuki's tables are found in; it tells this installation's
-- notifications from those of other schemas in the same database.
SELECT current_schema()::text;
