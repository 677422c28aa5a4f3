-- Group sync that cannot converge is set aside instead of looping: each
-- group remembers the desired state it was last changed towards and how
-- many consecutive syncs had to change it towards that same state; past the
-- app's limit the group is parked
-- (GroupNotConverging) until an operator redrives it or the app's group
-- configuration changes (GroupRedriven).
ALTER TABLE app_groups
    ADD COLUMN pending_change text,
    ADD COLUMN repeats        integer NOT NULL DEFAULT 0,
    ADD COLUMN stuck_reason   text,
    ADD COLUMN stuck_at       timestamptz,
    ADD COLUMN stuck_config   text;

-- What Tenure learned about an app's server by talking to it (which key
-- group members come back by, which member-removal form it accepts,
-- whether it pages with `count`, whether it honours `filter`); each change
-- is a ServerBehaviourLearned event on the app's stream.
CREATE TABLE app_server_behaviour (
    app        text        PRIMARY KEY,
    learned    jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE, DELETE ON app_server_behaviour TO tenure_app;
