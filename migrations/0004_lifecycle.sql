-- Lifecycle: what the engine last decided per person and app, and the
-- durable schedules of future transitions. All of it is derived from the
-- person streams and can be rebuilt from them.

ALTER TABLE persons
    ADD COLUMN start_at       timestamptz,
    ADD COLUMN termination_at timestamptz,
    ADD COLUMN time_zone      text;

-- What each app should hold for each person, as last decided by the engine.
CREATE TABLE entitlements (
    app         text        NOT NULL,
    person_id   uuid        NOT NULL,
    entitlement text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app, person_id)
);

-- Future instants at which a person must be looked at again. Replaced as a
-- set whenever the person changes; claimed with FOR UPDATE SKIP LOCKED.
CREATE TABLE schedules (
    schedule_id uuid        PRIMARY KEY,
    person_id   uuid        NOT NULL,
    kind        text        NOT NULL,
    app         text,
    due_at      timestamptz NOT NULL,
    time_zone   text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due_at_idx ON schedules (due_at);
CREATE INDEX schedules_person_idx ON schedules (person_id);

-- Last run of each periodic task (full reconcile per app, expiry sweep).
CREATE TABLE cron_runs (
    name        text        PRIMARY KEY,
    last_run_at timestamptz NOT NULL
);

GRANT SELECT, INSERT, UPDATE, DELETE ON entitlements, schedules, cron_runs TO tenure_app;
