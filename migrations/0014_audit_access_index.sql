-- Access at an instant (`tenure audit access`, shared/audit/src/read.rs
-- `access_at`) folds every account of one app. With 0013's index alone it
-- fetched each account event from the heap: an app everyone has, on a
-- 100k-person, 11M-event store, is ~810k rows spread over the whole table
-- (7 s in the database alone; docs/benchmarks.md, "Audit queries at
-- scale").
--
-- This partial index holds only the events that can change what the access
-- report shows: an account appearing, being deactivated or deleted, and the
-- updates that write `active` or `userName` (a PATCH naming either path, or
-- a PUT). Updates of other attributes (a mover's title, department) are
-- most account events and are left out. The columns the fold reads are
-- included so the query is an index-only scan (the table is insert-only,
-- so autovacuum keeps the visibility map current).
--
-- The WHERE clause must stay textually in step with `ACCESS_EVENTS` in
-- shared/audit/src/read.rs, or the planner cannot use the index.
CREATE INDEX events_account_access_idx
    ON events ((metadata->>'app'), recorded_at)
    INCLUDE (stream_id, version, event_id, event_type, global_position, data, metadata)
    WHERE stream_id LIKE 'account-%' AND (
        event_type IN ('AccountCreated', 'AccountLinked', 'AccountAdopted', 'AccountDeactivated', 'AccountDeleted')
        OR (event_type = 'AccountUpdated' AND (
            data ? 'replaced_with'
            OR data->'changes' @> '[{"path": "active"}]'
            OR data->'changes' @> '[{"path": "userName"}]')));
