-- Retention becomes a setting of each queue, and of the installation as a
-- whole, kept in the database, so that every process cleans a queue by the
-- same rule; and the cleaner finds a queue's expired jobs through an index
-- on the queue.
--
-- On a large tasuki_job, building the new index here holds a lock that
-- blocks writes to the table until it is built. To avoid that, build it
-- first, without blocking, and this migration then leaves it as it is:
--   CREATE INDEX CONCURRENTLY tasuki_job_finished_queue_idx
--       ON tasuki_job (queue, status, finished_at)
--       WHERE status IN ('completed', 'failed', 'canceled');

-- +goose Up

-- How long finished jobs of the queue are kept, in microseconds, by status.
-- NULL: the installation's default (tasuki_settings). -1: kept forever. At
-- most 100 years.
ALTER TABLE tasuki_queue
    ADD COLUMN completed_retention_us bigint,
    ADD COLUMN canceled_retention_us  bigint,
    ADD COLUMN failed_retention_us    bigint,
    ADD CONSTRAINT tasuki_queue_completed_retention
        CHECK (completed_retention_us = -1 OR completed_retention_us BETWEEN 1 AND 3153600000000000),
    ADD CONSTRAINT tasuki_queue_canceled_retention
        CHECK (canceled_retention_us = -1 OR canceled_retention_us BETWEEN 1 AND 3153600000000000),
    ADD CONSTRAINT tasuki_queue_failed_retention
        CHECK (failed_retention_us = -1 OR failed_retention_us BETWEEN 1 AND 3153600000000000);

-- Settings of the installation as a whole: one row at most. Its retention
-- columns apply to queues without a setting of their own; NULL there
-- means tasuki's built-in default (24 h for completed jobs, 7 days for
-- canceled and failed ones).
CREATE TABLE tasuki_settings (
    singleton              boolean     PRIMARY KEY DEFAULT true,
    completed_retention_us bigint,
    canceled_retention_us  bigint,
    failed_retention_us    bigint,
    updated_at             timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT tasuki_settings_singleton CHECK (singleton),
    CONSTRAINT tasuki_settings_completed_retention
        CHECK (completed_retention_us = -1 OR completed_retention_us BETWEEN 1 AND 3153600000000000),
    CONSTRAINT tasuki_settings_canceled_retention
        CHECK (canceled_retention_us = -1 OR canceled_retention_us BETWEEN 1 AND 3153600000000000),
    CONSTRAINT tasuki_settings_failed_retention
        CHECK (failed_retention_us = -1 OR failed_retention_us BETWEEN 1 AND 3153600000000000)
);

-- Finished jobs by queue, status and finish time: the cleaner deletes each
-- queue's jobs past that queue's retention with one range of this index,
-- and never reads the jobs of a queue that keeps them (a queue kept forever
-- costs it nothing). It replaces the index on finished_at alone.
-- A build with CREATE INDEX CONCURRENTLY that was interrupted leaves an
-- invalid index of that name, which IF NOT EXISTS would take as built: it
-- is dropped and built again here.
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'tasuki_job'::regclass
          AND c.relname = 'tasuki_job_finished_queue_idx'
          AND NOT (i.indisvalid AND i.indisready)
    ) THEN
        EXECUTE format('DROP INDEX %s.tasuki_job_finished_queue_idx',
                       (SELECT relnamespace::regnamespace::text FROM pg_catalog.pg_class WHERE oid = 'tasuki_job'::regclass));
    END IF;
END
$$;
-- +goose StatementEnd
CREATE INDEX IF NOT EXISTS tasuki_job_finished_queue_idx
    ON tasuki_job (queue, status, finished_at)
    WHERE status IN ('completed', 'failed', 'canceled');
DROP INDEX IF EXISTS tasuki_job_finished_idx;

-- +goose Down
CREATE INDEX IF NOT EXISTS tasuki_job_finished_idx
    ON tasuki_job (finished_at)
    WHERE status IN ('completed', 'failed', 'canceled');
DROP INDEX IF EXISTS tasuki_job_finished_queue_idx;
DROP TABLE IF EXISTS tasuki_settings;
ALTER TABLE tasuki_queue
    DROP COLUMN IF EXISTS completed_retention_us,
    DROP COLUMN IF EXISTS canceled_retention_us,
    DROP COLUMN IF EXISTS failed_retention_us;
