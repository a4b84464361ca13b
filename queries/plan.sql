/*
Planning.
*/

-- name: PlanGeneric :exec
-- Has the statements that follow it in the same transaction run on their
-- prepared statements' generic plans rather than plan each call anew (a
-- custom plan). PostgreSQL picks between the two by comparing estimated
-- costs, which for tasuki's statements depend on the lengths of their
-- array parameters and on the table's statistics: a pick can flip to
-- custom plans after an analyze, and planning a lease costs several times
-- its execution. The worker sends it in the same round trip as its
-- statements while jobs flow (worker/generic.go).
SELECT set_config('plan_cache_mode', 'force_generic_plan', true);
