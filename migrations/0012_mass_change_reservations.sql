-- The mass-change guard's ledger: one row per deprovision let through,
-- written *before* the SCIM call under a per-app lock, so concurrent jobs
-- cannot all pass a check that only counts committed events. Rows older
-- than the app's window no longer count and are deleted as the guard runs.
-- Coordination state, not a fact: the deprovision itself is recorded by
-- `AccountDeactivated` / `AccountDeleted` on the account stream.
CREATE TABLE mass_change_reservations (
    app         text        NOT NULL,
    person_id   uuid        NOT NULL,
    reserved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app, person_id)
);

-- The per-app row the guard locks (`SELECT … FOR UPDATE`) while it counts
-- and reserves.
CREATE TABLE mass_change_windows (
    app text PRIMARY KEY
);

GRANT SELECT, INSERT, UPDATE, DELETE ON mass_change_reservations, mass_change_windows TO tenure_app;
