-- Jobs get a kind: the stable name of their payload type, which decides
-- the handler that runs them. Many kinds share a queue; a worker process
-- leases only the kinds it has handlers for. And worker processes record
-- which queues and kinds they work, so that jobs no running process
-- handles can be reported.
--
-- Rows that exist when this migration runs get their queue's name as
-- their kind: before kinds, one queue held one payload type. Give the
-- payload type of each queue a Kind method that returns the queue's name,
-- or move the queue's unfinished jobs to the kind you chose:
--   UPDATE tasuki_job SET kind = 'email' WHERE queue = 'emails' AND status IN ('pending', 'running');
--
-- Run it when no process of an earlier tasuki version inserts jobs: their
-- inserts name no kind, which this column requires. On a large tasuki_job
-- the UPDATE below rewrites every row, and building the new index blocks
-- writes until it is built; build it first without blocking, if needed:
--   CREATE INDEX CONCURRENTLY tasuki_job_pending_kind_idx
--       ON tasuki_job (queue, kind, priority, scheduled_at, id)
--       WHERE status = 'pending';
-- (after adding the column).

-- +goose Up
ALTER TABLE tasuki_job ADD COLUMN IF NOT EXISTS kind text;
UPDATE tasuki_job SET kind = queue WHERE kind IS NULL;
ALTER TABLE tasuki_job
    ALTER COLUMN kind SET NOT NULL,
    ADD CONSTRAINT tasuki_job_kind_length CHECK (char_length(kind) BETWEEN 1 AND 128);

-- The lease reads each (queue, kind) it handles as a range of this index,
-- so that jobs of kinds a process does not handle cost its leases nothing,
-- however many there are. It replaces the index on (queue, priority,
-- scheduled_at, id).
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'tasuki_job'::regclass
          AND c.relname = 'tasuki_job_pending_kind_idx'
          AND NOT (i.indisvalid AND i.indisready)
    ) THEN
        EXECUTE format('DROP INDEX %s.tasuki_job_pending_kind_idx',
                       (SELECT relnamespace::regnamespace::text FROM pg_catalog.pg_class WHERE oid = 'tasuki_job'::regclass));
    END IF;
END
$$;
-- +goose StatementEnd
CREATE INDEX IF NOT EXISTS tasuki_job_pending_kind_idx
    ON tasuki_job (queue, kind, priority, scheduled_at, id)
    WHERE status = 'pending';
DROP INDEX IF EXISTS tasuki_job_pending_idx;

-- One row per running worker process: the queues and kinds it works.
-- A process renews expires_at while it runs and deletes its row when it
-- stops; a row past expires_at is a process that died.
CREATE TABLE tasuki_process (
    id         uuid        PRIMARY KEY,
    host       text        NOT NULL,
    pid        integer     NOT NULL,
    queues     text[]      NOT NULL,
    kinds      text[]      NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE IF EXISTS tasuki_process;
CREATE INDEX IF NOT EXISTS tasuki_job_pending_idx
    ON tasuki_job (queue, priority, scheduled_at, id)
    WHERE status = 'pending';
DROP INDEX IF EXISTS tasuki_job_pending_kind_idx;
ALTER TABLE tasuki_job DROP COLUMN IF EXISTS kind;
