-- Inbound SCIM 2.0 (shared/idp-scim): the Users and Groups an identity
-- provider (Authentik) pushes to Tenure, one namespace per configured
-- provider, and an outbox of identity snapshots written in the same
-- transaction as every change to what a user looks like.

CREATE TABLE idp_scim_users (
    provider      text        NOT NULL,
    id            uuid        NOT NULL,
    -- Derived from `resource` on every write, for the indexes.
    user_name     text        NOT NULL,
    external_id   text,
    -- The resource as the client sent it, normalised (no id, meta, groups).
    resource      jsonb       NOT NULL,
    version       bigint      NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    modified_at   timestamptz NOT NULL DEFAULT now(),
    -- The last snapshot written to the outbox, so unchanged writes (a full
    -- sync re-sending every user) publish nothing.
    last_snapshot jsonb,
    PRIMARY KEY (provider, id)
);

-- userName is unique per provider, case-insensitively (RFC 7643 §4.1.1).
CREATE UNIQUE INDEX idp_scim_users_user_name_key ON idp_scim_users (provider, lower(user_name));
CREATE INDEX idp_scim_users_external_id ON idp_scim_users (provider, external_id);
CREATE INDEX idp_scim_users_created ON idp_scim_users (provider, created_at, id);

CREATE TABLE idp_scim_groups (
    provider      text        NOT NULL,
    id            uuid        NOT NULL,
    display_name  text        NOT NULL,
    external_id   text,
    -- Without members, which live in idp_scim_members.
    resource      jsonb       NOT NULL,
    version       bigint      NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    modified_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, id)
);

-- Exact (case-sensitive) uniqueness: Authentik's group names are unique as
-- written, and "Admins" and "admins" may both exist there.
CREATE UNIQUE INDEX idp_scim_groups_display_name_key ON idp_scim_groups (provider, display_name);
CREATE INDEX idp_scim_groups_display_name_lower ON idp_scim_groups (provider, lower(display_name));
CREATE INDEX idp_scim_groups_external_id ON idp_scim_groups (provider, external_id);
CREATE INDEX idp_scim_groups_created ON idp_scim_groups (provider, created_at, id);

CREATE TABLE idp_scim_members (
    provider  text   NOT NULL,
    group_id  uuid   NOT NULL,
    user_id   uuid   NOT NULL,
    -- The member's other sub-attributes as sent (display, type).
    attrs     jsonb  NOT NULL DEFAULT '{}',
    -- Insertion order, so members are listed as they were added.
    seq       bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (provider, group_id, user_id),
    FOREIGN KEY (provider, group_id) REFERENCES idp_scim_groups (provider, id) ON DELETE CASCADE,
    FOREIGN KEY (provider, user_id) REFERENCES idp_scim_users (provider, id) ON DELETE CASCADE
);

CREATE INDEX idp_scim_members_user ON idp_scim_members (provider, user_id);

-- Identity snapshots (tenure_domain::IdpIdentity) waiting to be published,
-- oldest first. Every transaction that writes a user's snapshot holds that
-- user's row lock, so for one user seq order is commit order.
CREATE TABLE idp_scim_outbox (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider   text        NOT NULL,
    user_id    uuid        NOT NULL,
    snapshot   jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idp_scim_outbox_provider ON idp_scim_outbox (provider, seq);

GRANT SELECT, INSERT, UPDATE, DELETE
    ON idp_scim_users, idp_scim_groups, idp_scim_members, idp_scim_outbox TO tenure_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO tenure_app;
