-- The events of 0014's `events_account_access_idx` and the ones that
-- explain a slow deprovisioning, keyed by person: time to deprovision reads
-- the account streams of a quarter's leavers, the exceptions report those
-- of every current leaver. With the person_id index of 0001 alone this read
-- every event of those persons (4,600 leavers of a 100k-person, 11M-event
-- store: a parallel scan of the whole table, 4 s). Index-only, as 0014.
-- The WHERE clause must stay textually in step with `LEAVER_EVENTS` in
-- shared/audit/src/read.rs.
CREATE INDEX events_leaver_accounts_idx
    ON events ((metadata->>'person_id'))
    INCLUDE (stream_id, version, event_id, event_type, global_position, data, metadata, recorded_at)
    WHERE stream_id LIKE 'account-%' AND (
        event_type IN ('AccountCreated', 'AccountLinked', 'AccountAdopted', 'AccountDeactivated', 'AccountDeleted',
                       'JobDeadLettered', 'DeprovisionStaged', 'ScimCallFailed', 'ReconcileFailed')
        OR (event_type = 'AccountUpdated' AND (
            data ? 'replaced_with'
            OR data->'changes' @> '[{"path": "active"}]'
            OR data->'changes' @> '[{"path": "userName"}]')));
