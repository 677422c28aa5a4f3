-- Snapshots of the person aggregate, so applying a record costs the same
-- for a person with ten events as with ten thousand: the engine reads the
-- snapshot and only the events after its version. A projection like
-- `persons` (mutable, one row per person, never the only copy of a fact):
-- deleting any or all rows only makes the next load fold the whole stream.
CREATE TABLE person_snapshots (
    person_id   uuid        PRIMARY KEY,
    -- The stream version folded into `state`.
    version     bigint      NOT NULL,
    -- The engine's snapshot format; rows of another format are ignored.
    schema      integer     NOT NULL,
    -- `state` holds only the facts that can be in force from this instant
    -- on; it is used for decisions at this instant or later only.
    valid_from  timestamptz NOT NULL,
    -- tenure_domain::Person, compacted.
    state       jsonb       NOT NULL,
    -- Where each kept fact's record was received: source, delivery id,
    -- event id and correlation id (what later decisions name as cause).
    records     jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE, DELETE ON person_snapshots TO tenure_app;

-- IdP identity snapshots carry the position they were written at in the
-- inbound SCIM outbox; an older one delivered after a newer one is not
-- applied.
ALTER TABLE idp_identities ADD COLUMN sequence bigint;
