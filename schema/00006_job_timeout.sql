-- A job's own timeout (InsertOpts.Timeout), in milliseconds: how long one
-- attempt may run before its handler's context ends. NULL: the timeout of
-- the job's kind (worker.KindConfig.Timeout), if any. Adding the column
-- rewrites nothing.

-- +goose Up
ALTER TABLE tasuki_job
    ADD COLUMN IF NOT EXISTS timeout_ms bigint;
ALTER TABLE tasuki_job
    ADD CONSTRAINT tasuki_job_timeout_positive CHECK (timeout_ms > 0);

-- +goose Down
ALTER TABLE tasuki_job
    DROP CONSTRAINT IF EXISTS tasuki_job_timeout_positive,
    DROP COLUMN IF EXISTS timeout_ms;
