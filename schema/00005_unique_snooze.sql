-- Unique jobs and snoozes.
--
-- A job inserted as unique carries a key (unique_key: a hash of its kind
-- and of what the insert chose to count: its payload, a key of the
-- caller's, its queue, a time period) and the statuses in which it blocks
-- another job with the same key (unique_statuses, a bit per status: 1
-- pending, 2 running, 4 completed, 8 failed, 16 canceled; always with
-- pending and running). The unique index below enforces it, so that concurrent inserts
-- from many processes leave one job. Jobs inserted without uniqueness have
-- neither, and the index holds no entry for them.
--
-- snoozes counts how often a handler put its job back to wait
-- (tasuki.Snooze): a snooze uses no attempt and records no error.
--
-- Adding the columns rewrites nothing. Building the index reads the whole
-- table and blocks writes while it does (no row has a key yet, so it is
-- small); on a large tasuki_job build it first without blocking, if
-- needed, after adding the columns:
--   CREATE UNIQUE INDEX CONCURRENTLY tasuki_job_unique_idx
--       ON tasuki_job (unique_key)
--       WHERE unique_key IS NOT NULL
--         AND (unique_statuses & CASE status WHEN 'pending' THEN 1 WHEN 'running' THEN 2 WHEN 'completed' THEN 4
--                                            WHEN 'failed' THEN 8 ELSE 16 END) <> 0;

-- +goose Up
ALTER TABLE tasuki_job
    ADD COLUMN IF NOT EXISTS snoozes integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS unique_key bytea,
    ADD COLUMN IF NOT EXISTS unique_statuses smallint;
ALTER TABLE tasuki_job
    ADD CONSTRAINT tasuki_job_snoozes_range CHECK (snoozes >= 0),
    ADD CONSTRAINT tasuki_job_unique_both CHECK ((unique_key IS NULL) = (unique_statuses IS NULL)),
    -- A unique job stays unique while it waits and while it runs, so that
    -- no move between those (a lease, a retry, a rescue) can collide with
    -- another job's key.
    ADD CONSTRAINT tasuki_job_unique_statuses_live CHECK (
        unique_statuses IS NULL OR (unique_statuses & 3 = 3 AND unique_statuses BETWEEN 3 AND 31)
    );

-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'tasuki_job'::regclass
          AND c.relname = 'tasuki_job_unique_idx'
          AND NOT (i.indisvalid AND i.indisready)
    ) THEN
        EXECUTE format('DROP INDEX %s.tasuki_job_unique_idx',
                       (SELECT relnamespace::regnamespace::text FROM pg_catalog.pg_class WHERE oid = 'tasuki_job'::regclass));
    END IF;
END
$$;
-- +goose StatementEnd
CREATE UNIQUE INDEX IF NOT EXISTS tasuki_job_unique_idx
    ON tasuki_job (unique_key)
    WHERE unique_key IS NOT NULL
        AND (unique_statuses & CASE status WHEN 'pending' THEN 1 WHEN 'running' THEN 2 WHEN 'completed' THEN 4
                                           WHEN 'failed' THEN 8 ELSE 16 END) <> 0;

-- +goose Down
DROP INDEX IF EXISTS tasuki_job_unique_idx;
ALTER TABLE tasuki_job
    DROP CONSTRAINT IF EXISTS tasuki_job_unique_statuses_live,
    DROP CONSTRAINT IF EXISTS tasuki_job_unique_both,
    DROP CONSTRAINT IF EXISTS tasuki_job_snoozes_range,
    DROP COLUMN IF EXISTS unique_statuses,
    DROP COLUMN IF EXISTS unique_key,
    DROP COLUMN IF EXISTS snoozes;
