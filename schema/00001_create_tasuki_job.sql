-- tasuki's job table, its status type and its indexes.
--
-- Every object is created unqualified, so it lands in the first schema of the
-- connection's search_path: several tasuki installations can share a database
-- in different schemas.

-- +goose Up

-- A job is pending (waiting for its scheduled time or for a worker), running
-- (leased by a worker), or finished as completed, failed (out of attempts,
-- or a payload that cannot be decoded) or canceled. A job waiting for a retry
-- is pending with a future scheduled_at: a separate "retryable" state would
-- only split the lease index in two.
CREATE TYPE tasuki_job_status AS ENUM (
    'pending',
    'running',
    'completed',
    'failed',
    'canceled'
);

-- fillfactor 80 leaves room on each page so that a heartbeat, which only
-- rewrites lease_expires_at (an unindexed column), can be a HOT update: the
-- new row version stays on its page and no index is touched.
CREATE TABLE tasuki_job (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue            text              NOT NULL DEFAULT 'default',
    status           tasuki_job_status NOT NULL DEFAULT 'pending',
    -- Lower runs first; 0 is the default and the most urgent.
    priority         smallint          NOT NULL DEFAULT 0,
    payload          jsonb             NOT NULL,
    -- attempts counts leases: it is raised when a worker takes the job, so a
    -- job that kills its worker every time still runs out of attempts.
    attempts         integer           NOT NULL DEFAULT 0,
    max_attempts     integer           NOT NULL DEFAULT 25,
    scheduled_at     timestamptz       NOT NULL DEFAULT now(),
    created_at       timestamptz       NOT NULL DEFAULT now(),
    -- When the current or last attempt started.
    attempted_at     timestamptz,
    -- The lease: set while running. Every change a worker makes checks
    -- lease_token, so a worker that lost its lease can never change the job.
    lease_expires_at timestamptz,
    lease_token      uuid,
    -- One object per failed attempt: {"attempt", "at", "error"}; the last
    -- element is the last error.
    errors           jsonb             NOT NULL DEFAULT '[]',
    finished_at      timestamptz,
    -- Free-form data for features around the job (tracing context, tags,
    -- middleware); not interpreted by the queue itself.
    metadata         jsonb             NOT NULL DEFAULT '{}',

    CONSTRAINT tasuki_job_queue_length CHECK (char_length(queue) BETWEEN 1 AND 128),
    CONSTRAINT tasuki_job_priority_range CHECK (priority >= 0),
    CONSTRAINT tasuki_job_max_attempts_positive CHECK (max_attempts >= 1),
    CONSTRAINT tasuki_job_attempts_range CHECK (attempts >= 0),
    CONSTRAINT tasuki_job_errors_array CHECK (jsonb_typeof(errors) = 'array'),
    CONSTRAINT tasuki_job_metadata_object CHECK (jsonb_typeof(metadata) = 'object'),
    -- A running job always holds a lease; a job that is not running holds none.
    CONSTRAINT tasuki_job_lease_iff_running CHECK (
        (status = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)
    ),
    -- Finished jobs, and only they, carry finished_at.
    CONSTRAINT tasuki_job_finished_at CHECK (
        (status IN ('completed', 'failed', 'canceled')) = (finished_at IS NOT NULL)
    )
) WITH (fillfactor = 80);

-- The lease query's index: pending jobs of one queue in the order they are
-- taken (priority, then scheduled time, then id). Partial, so it holds only
-- the work still to do and stays small however many finished jobs are kept.
CREATE INDEX tasuki_job_pending_idx
    ON tasuki_job (queue, priority, scheduled_at, id)
    WHERE status = 'pending';

-- Finds running jobs whose lease expired (their worker died or hung).
-- lease_expires_at is deliberately not a key or INCLUDE column here: a
-- heartbeat rewrites it, and an indexed column would rule out HOT updates.
-- The running set is bounded by the workers' concurrency, so checking each
-- running job's expiry on the heap is cheap.
CREATE INDEX tasuki_job_running_idx
    ON tasuki_job (queue)
    WHERE status = 'running';

-- Retention and cleaning: finished jobs by the time they finished.
CREATE INDEX tasuki_job_finished_idx
    ON tasuki_job (finished_at)
    WHERE status IN ('completed', 'failed', 'canceled');

-- +goose Down
DROP TABLE IF EXISTS tasuki_job;
DROP TYPE IF EXISTS tasuki_job_status;
