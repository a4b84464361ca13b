-- Per-queue settings that every worker process obeys. A queue needs no row
-- here to be used: a missing row means defaults (not paused). Later
-- per-queue features (rate limits, concurrency limits) get their columns
-- here.

-- +goose Up
CREATE TABLE tasuki_queue (
    name       text        PRIMARY KEY,
    -- Set while the queue is paused: its workers lease nothing new.
    paused_at  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT tasuki_queue_name_length CHECK (char_length(name) BETWEEN 1 AND 128)
);

-- +goose Down
DROP TABLE IF EXISTS tasuki_queue;
