-- Role the services switch to (SET ROLE tenure_app) for normal operation.
-- Roles are cluster-wide while migrations run per database, so several fresh
-- databases (e.g. parallel tests) may race to create it: the existence check
-- alone is not enough, hence the exception handler. A concurrent CREATE ROLE
-- surfaces as unique_violation on pg_authid rather than duplicate_object.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenure_app') THEN
        BEGIN
            CREATE ROLE tenure_app NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;
        END;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO tenure_app;

-- The event store is append-only for the application. INSERT is granted per
-- column so the application cannot forge transaction_id (the global reader's
-- no-skip guarantee depends on it being the real writing transaction) nor
-- global_position (OVERRIDING SYSTEM VALUE needs the column privilege).
GRANT SELECT ON events TO tenure_app;
GRANT INSERT (stream_id, version, event_id, event_type, data, metadata, recorded_at, prev_hash, hash)
    ON events TO tenure_app;
REVOKE UPDATE, DELETE, TRUNCATE ON events FROM tenure_app;

GRANT SELECT, INSERT, UPDATE, DELETE ON persons, accounts, inbox, outbox TO tenure_app;

-- Identity columns are backed by sequences.
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO tenure_app;
