-- Audit queries read history from `events`, never from projections
-- (docs/audit.md). These indexes keep them off full scans:
--   * access at an instant, exceptions and time to deprovision read one
--     app's account events of a few types up to an instant;
--   * leavers in a window are PersonTerminated events by time, and event
--     search filters by type;
--   * event search by correlation id.
CREATE INDEX events_app_type_recorded_idx
    ON events ((metadata->>'app'), event_type, recorded_at);

CREATE INDEX events_type_recorded_idx ON events (event_type, recorded_at);

CREATE INDEX events_correlation_idx ON events ((metadata->>'correlation_id'));

-- recorded_at grows with insertion order, so a BRIN index answers time
-- ranges (exports, search) for almost no space or insert cost.
CREATE INDEX events_recorded_at_brin ON events USING brin (recorded_at);

-- Signed checkpoints of the global log (`tenure audit checkpoint`). Each row
-- commits to every event up to its position through a running hash, so a
-- whole stream deleted with the append-only triggers disabled is detected
-- by re-walking the log, which a per-stream hash chain alone cannot show.
-- Not append-only: a checkpoint is evidence about `events`, and losing one
-- loses coverage, not history.
CREATE TABLE audit_checkpoints (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The last event covered, in the global reader's order
    -- (transaction_id, global_position).
    transaction_id  bigint      NOT NULL,
    global_position bigint      NOT NULL,
    event_count     bigint      NOT NULL,
    running_hash    bytea       NOT NULL CHECK (octet_length(running_hash) = 32),
    created_at      timestamptz NOT NULL,
    public_key      bytea       NOT NULL CHECK (octet_length(public_key) = 32),
    signature       bytea       NOT NULL CHECK (octet_length(signature) = 64)
);

GRANT SELECT, INSERT ON audit_checkpoints TO tenure_app;
