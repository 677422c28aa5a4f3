-- IdP identities as the engine last saw them, and the HR person each is
-- linked to (NULL: no person correlates yet; it is linked when one does).
-- A projection like `persons`: rebuilt from the identity snapshots.
CREATE TABLE idp_identities (
    provider    text        NOT NULL,
    idp_id      text        NOT NULL,
    user_name   text        NOT NULL,
    keys        text[]      NOT NULL,
    snapshot    jsonb       NOT NULL,
    person_id   uuid,
    deleted     boolean     NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, idp_id)
);
CREATE INDEX idp_identities_keys ON idp_identities USING gin (keys);
CREATE INDEX idp_identities_person ON idp_identities (person_id);

-- What rules and group definitions see as `person.groups`.
ALTER TABLE persons ADD COLUMN groups jsonb NOT NULL DEFAULT '[]';

-- Correlation look-ups from an IdP identity to its HR person.
CREATE INDEX persons_email ON persons (lower(attributes->>'email'));
CREATE INDEX persons_employee_number ON persons ((attributes->>'employee_number'));
CREATE INDEX persons_email_local ON persons (lower(split_part(attributes->>'email', '@', 1)));

GRANT SELECT, INSERT, UPDATE, DELETE ON idp_identities TO tenure_app;
