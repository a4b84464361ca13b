-- The rescue of expired leases reads only the leases that expired since
-- the process's last rescue: while an old snapshot holds back vacuum, the
-- running jobs' index keeps an entry for every job run since it began,
-- and a rescue that read them all took longer with every job worked. The
-- index is ordered by lease expiry within each queue, and each process
-- records in tasuki_process how far its last rescue got. A lease renewal
-- now changes an indexed column, so it writes new index entries.
--
-- Building the index blocks writes to tasuki_job until it is built; on a
-- large table, build it first without blocking:
--   CREATE INDEX CONCURRENTLY tasuki_job_running_expiry_idx
--       ON tasuki_job (queue, lease_expires_at)
--       WHERE status = 'running';

-- +goose Up
ALTER TABLE tasuki_process ADD COLUMN IF NOT EXISTS rescued_through timestamptz;
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'tasuki_job'::regclass
          AND c.relname = 'tasuki_job_running_expiry_idx'
          AND NOT (i.indisvalid AND i.indisready)
    ) THEN
        EXECUTE format('DROP INDEX %s.tasuki_job_running_expiry_idx',
                       (SELECT relnamespace::regnamespace::text FROM pg_catalog.pg_class WHERE oid = 'tasuki_job'::regclass));
    END IF;
END
$$;
-- +goose StatementEnd
CREATE INDEX IF NOT EXISTS tasuki_job_running_expiry_idx
    ON tasuki_job (queue, lease_expires_at)
    WHERE status = 'running';
DROP INDEX IF EXISTS tasuki_job_running_idx;

-- +goose Down
CREATE INDEX IF NOT EXISTS tasuki_job_running_idx
    ON tasuki_job (queue)
    WHERE status = 'running';
DROP INDEX IF EXISTS tasuki_job_running_expiry_idx;
ALTER TABLE tasuki_process DROP COLUMN IF EXISTS rescued_through;
