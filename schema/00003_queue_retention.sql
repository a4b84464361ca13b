-- Retention becomes a setting of each queue, kept in the database, so that
-- every process cleans a queue by the same rule, and the cleaner finds a
-- queue's expired jobs through an index on the queue.

-- +goose Up

-- How long finished jobs of the queue are kept, in microseconds, by status.
-- NULL: tasuki's default (24 h for completed, 7 days for canceled and
-- failed). -1: kept forever.
ALTER TABLE tasuki_queue
    ADD COLUMN completed_retention_us bigint,
    ADD COLUMN canceled_retention_us  bigint,
    ADD COLUMN failed_retention_us    bigint,
    ADD CONSTRAINT tasuki_queue_completed_retention CHECK (completed_retention_us = -1 OR completed_retention_us > 0),
    ADD CONSTRAINT tasuki_queue_canceled_retention CHECK (canceled_retention_us = -1 OR canceled_retention_us > 0),
    ADD CONSTRAINT tasuki_queue_failed_retention CHECK (failed_retention_us = -1 OR failed_retention_us > 0);

-- Finished jobs by queue, status and finish time: the cleaner deletes each
-- queue's jobs past that queue's retention with one range of this index,
-- and never reads the jobs of a queue that keeps them (a queue kept forever
-- costs it nothing). It replaces the index on finished_at alone.
CREATE INDEX tasuki_job_finished_queue_idx
    ON tasuki_job (queue, status, finished_at)
    WHERE status IN ('completed', 'failed', 'canceled');
DROP INDEX tasuki_job_finished_idx;

-- +goose Down
CREATE INDEX tasuki_job_finished_idx
    ON tasuki_job (finished_at)
    WHERE status IN ('completed', 'failed', 'canceled');
DROP INDEX IF EXISTS tasuki_job_finished_queue_idx;
ALTER TABLE tasuki_queue
    DROP COLUMN IF EXISTS completed_retention_us,
    DROP COLUMN IF EXISTS canceled_retention_us,
    DROP COLUMN IF EXISTS failed_retention_us;
