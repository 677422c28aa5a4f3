-- Deprovisioning held back by the mass-change guard until an operator
-- approves it. One row per (app, person): a later job for the same person
-- only refreshes it.
CREATE TABLE staged_changes (
    app        text        NOT NULL,
    person_id  uuid        NOT NULL,
    job        jsonb       NOT NULL,
    reason     text        NOT NULL,
    staged_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app, person_id)
);

-- The guard counts an app's recent deprovisions.
CREATE INDEX events_app_deprovision_idx ON events ((metadata->>'app'), recorded_at)
    WHERE event_type IN ('AccountDeactivated', 'AccountDeleted');

GRANT SELECT, INSERT, UPDATE, DELETE ON staged_changes TO tenure_app;
