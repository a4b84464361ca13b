-- LISTEN/NOTIFY: how workers hear about new and canceled jobs.

-- name: ListenJobs :exec
-- Subscribes the connection to the channel the insert trigger and job
-- cancellation notify on.
LISTEN tasuki_jobs;
