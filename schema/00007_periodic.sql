-- Periodic jobs: one row per schedule a worker process runs (worker.Periodic),
-- with the last tick a job was enqueued for and the next one. Every process
-- that runs a schedule enqueues each tick's job under a unique key of the
-- tick, so many processes enqueue it once; this table keeps where the
-- schedule stands for the processes that start later (so that a tick
-- missed while none ran is run once, or skipped, as the schedule says) and
-- for `tasuki periodic`.

-- +goose Up
CREATE TABLE IF NOT EXISTS tasuki_periodic (
    name       text        PRIMARY KEY,
    kind       text        NOT NULL,
    schedule   text        NOT NULL,
    last_tick  timestamptz,
    next_tick  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tasuki_periodic_name_length CHECK (char_length(name) BETWEEN 1 AND 128)
);

-- +goose Down
DROP TABLE IF EXISTS tasuki_periodic;
