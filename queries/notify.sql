/*
LISTEN/NOTIFY: how workers hear about new and canceled jobs.
*/

-- name: ListenJobs :exec
-- Subscribes the connection to the channel that inserts and job
-- cancellation notify on.
LISTEN tasuki_jobs;

-- name: TasukiSchema :one
-- The schema that holds tasuki_job as the connection's search_path finds
-- it: it tells this installation's notifications from those of other
-- schemas in the same database. Every statement that sends a notification
-- or takes an advisory lock names the schema the same way, not by
-- current_schema(): that is the first schema of the search_path, which
-- need not be tasuki's (with the default "$user", public and a schema per
-- role, say).
SELECT (SELECT n.nspname::text
                FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = 'tasuki_job'::regclass)::text AS schema;
