/*
The floor that tasuki bench insert --producers compares tasuki's inserts
with: a plain one-row INSERT into the same table, without anything of
tasuki's around it.
*/

-- name: BenchPlainInsert :exec
-- One job row, as an application would insert any row of its own.
INSERT INTO tasuki_job (queue, kind, payload) VALUES (@queue, 'bench', '{}'::jsonb);
