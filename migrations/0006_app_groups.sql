-- Groups Tenure created or adopted in each app, so renames and deletions
-- reach the right remote group and unrelated groups are never touched.
CREATE TABLE app_groups (
    app          text        NOT NULL,
    display_name text        NOT NULL,
    remote_id    text        NOT NULL,
    members      integer     NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app, display_name)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON app_groups TO tenure_app;
