/*
Reading jobs for the assertions of package tasukitest, which tests that
share one database make without seeing one another's jobs.
*/

-- name: JobTestList :many
-- Lists the jobs an assertion may see, in insertion (id) order, each with
-- the conditions of each want that it fails.
--
-- Which jobs: those of the kinds given (of every kind when kinds is
-- empty), at most max_rows of them (NULL: all), narrowed to one scope:
--
--  * own_tx: only the jobs the calling transaction inserted itself, in
--    any of its savepoints. A row is visible to a transaction, and its
--    writer (xmin) still in progress, only when that writer is the
--    transaction itself or one of its subtransactions: the uncommitted
--    rows of other transactions are invisible. So no snapshot or list of
--    ids is needed, only pg_xact_status. It takes the 64-bit xid8, and
--    xmin is the 32-bit xid, so xmin is placed after the transaction's
--    top-level xid8 (pg_current_xact_id_if_assigned): its subtransactions'
--    xids are assigned after it, and may be in the next epoch, so the
--    offset is taken modulo 2^32. A transaction without an xid has written
--    nothing, and asking for it assigns none: no row is its own.
--    Only rows created since the transaction began (created_at defaults
--    to now(), the start of the inserting transaction) are asked about: a
--    frozen row keeps its original xmin, which after 2^32 more xids can
--    fall among the transaction's own, or among xids not yet assigned, of
--    which pg_xact_status raises an error. (So a row the transaction only
--    changed is left out too, unless it was created after the transaction
--    began.) Nor is a writer more than 2^31 xids on asked about (the
--    transaction has not assigned that many), or a special xid (below 3).
--  * scope: only the jobs whose metadata holds the scope id under
--    "tasukitest_scope", where tasukitest.ScopeMiddleware put it when the
--    test's code inserted them (jsonb containment).
--  * neither: every job of the kinds.
--
-- wants is a JSON array of objects, one per want. Each key an object has
-- is a condition: payload and metadata by jsonb containment (@>), so that
-- a want names only the fields it cares about; queue, priority,
-- max_attempts and status by equality; scheduled_at exactly (to the
-- microsecond, PostgreSQL's precision); scheduled_after and
-- scheduled_before as inclusive bounds. differences holds, for each want
-- in order, the names of the conditions the job fails: [] when it
-- matches. Comparing here keeps containment PostgreSQL's own (numbers by
-- value, arrays as sets), and lets a failed assertion name the nearest
-- job's differing fields. wants arrives as text, as payloads do in
-- JobInsert: the simple protocol would send bytes as bytea.
WITH me AS (
    SELECT CASE WHEN sqlc.arg('own_tx')::boolean
                THEN pg_current_xact_id_if_assigned()::text::bigint END AS xid
)
SELECT sqlc.embed(j),
       coalesce((
           SELECT jsonb_agg((
                      SELECT coalesce(jsonb_agg(c.name ORDER BY c.ord), '[]'::jsonb)
                      FROM (VALUES
                          (1, 'payload', w.want -> 'payload' IS NOT NULL
                                         AND NOT j.payload @> (w.want -> 'payload')),
                          (2, 'metadata', w.want -> 'metadata' IS NOT NULL
                                          AND NOT j.metadata @> (w.want -> 'metadata')),
                          (3, 'queue', w.want -> 'queue' IS NOT NULL
                                       AND j.queue <> w.want ->> 'queue'),
                          (4, 'priority', w.want -> 'priority' IS NOT NULL
                                          AND j.priority <> (w.want ->> 'priority')::bigint),
                          (5, 'max_attempts', w.want -> 'max_attempts' IS NOT NULL
                                              AND j.max_attempts <> (w.want ->> 'max_attempts')::bigint),
                          (6, 'status', w.want -> 'status' IS NOT NULL
                                        AND j.status::text <> w.want ->> 'status'),
                          (7, 'scheduled_at', w.want -> 'scheduled_at' IS NOT NULL
                                              AND j.scheduled_at <> (w.want ->> 'scheduled_at')::timestamptz),
                          (8, 'scheduled_after', w.want -> 'scheduled_after' IS NOT NULL
                                                 AND j.scheduled_at < (w.want ->> 'scheduled_after')::timestamptz),
                          (9, 'scheduled_before', w.want -> 'scheduled_before' IS NOT NULL
                                                  AND j.scheduled_at > (w.want ->> 'scheduled_before')::timestamptz)
                      ) AS c(ord, name, differs)
                      WHERE c.differs
                  ) ORDER BY w.n)
           FROM jsonb_array_elements(sqlc.arg('wants')::text::jsonb) WITH ORDINALITY AS w(want, n)
       ), '[]'::jsonb)::text AS differences
FROM tasuki_job j, me
WHERE (cardinality(sqlc.arg('kinds')::text[]) = 0 OR j.kind = ANY(sqlc.arg('kinds')::text[]))
  AND (sqlc.narg('scope')::text IS NULL
       OR j.metadata @> jsonb_build_object('tasukitest_scope', sqlc.narg('scope')::text))
  AND (NOT sqlc.arg('own_tx')::boolean
       OR CASE WHEN j.created_at = transaction_timestamp()
                    AND j.xmin::text::bigint >= 3
                    AND (j.xmin::text::bigint - me.xid % 4294967296 + 4294967296) % 4294967296 < 2147483648
               THEN pg_xact_status((me.xid + (j.xmin::text::bigint - me.xid % 4294967296 + 4294967296) % 4294967296)::text::xid8)
                    = 'in progress'
               ELSE false
          END)
ORDER BY j.id
LIMIT sqlc.narg('max_rows')::integer;
