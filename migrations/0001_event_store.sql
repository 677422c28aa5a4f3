-- Event store: the single source of truth. Everything else is a projection
-- that can be rebuilt from this table.
CREATE TABLE events (
    global_position bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction's id. Global readers order by
    -- (transaction_id, global_position) and only read below the oldest
    -- in-progress xid, so an event whose transaction commits late is never
    -- skipped (identity values are handed out before commit, in any order).
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text        NOT NULL,
    version         bigint      NOT NULL CHECK (version >= 1),
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    prev_hash       bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash            bytea       NOT NULL CHECK (octet_length(hash) = 32),
    -- Named explicitly: the store maps violations of these two constraints
    -- to typed errors by name.
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_id_version_key UNIQUE (stream_id, version)
);

CREATE INDEX events_transaction_position_idx ON events (transaction_id, global_position);

CREATE INDEX events_person_id_idx ON events ((metadata->>'person_id'));

-- Append-only is enforced here rather than trusted to application code, so
-- that even a superuser's stray UPDATE/DELETE/TRUNCATE is refused. Tampering
-- therefore needs a deliberate step (disabling triggers), which the hash
-- chain then exposes.
CREATE FUNCTION events_reject_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only (% rejected)', TG_OP
        USING HINT = 'record a compensating event instead';
END
$$;

CREATE TRIGGER events_append_only_row
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_reject_mutation();

CREATE TRIGGER events_append_only_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_mutation();
