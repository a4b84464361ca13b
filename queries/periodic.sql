/*
Periodic jobs: where each schedule stands.
*/

-- name: PeriodicGet :one
-- The last tick a job was enqueued for, by any process, of one schedule.
SELECT last_tick FROM tasuki_periodic WHERE name = @name;

-- name: PeriodicRecord :exec
-- Records a schedule as seen by a process: its kind and schedule, the last
-- tick enqueued (never moved back: processes may record out of order) and
-- the next one.
INSERT INTO tasuki_periodic AS p (name, kind, schedule, last_tick, next_tick, updated_at)
VALUES (@name, @kind, @schedule, sqlc.narg('last_tick')::timestamptz, sqlc.narg('next_tick')::timestamptz, now())
ON CONFLICT (name) DO UPDATE
SET kind = EXCLUDED.kind,
    schedule = EXCLUDED.schedule,
    last_tick = CASE WHEN p.last_tick IS NULL OR EXCLUDED.last_tick > p.last_tick
                     THEN coalesce(EXCLUDED.last_tick, p.last_tick) ELSE p.last_tick END,
    next_tick = CASE WHEN p.last_tick IS NULL OR EXCLUDED.last_tick >= p.last_tick OR EXCLUDED.last_tick IS NULL
                     THEN EXCLUDED.next_tick ELSE p.next_tick END,
    updated_at = now();

-- name: PeriodicList :many
-- Every schedule the database has seen, by name.
SELECT name, kind, schedule, last_tick, next_tick, updated_at
FROM tasuki_periodic
ORDER BY name;
