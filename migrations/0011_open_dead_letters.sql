-- Open dead letters per (app, person): a projection of the account streams'
-- `JobDeadLettered` events, closed by `DeadLetterRedriven` (an operator's
-- `tenure dlq redrive`) or `DeadLetterCleared` (the person changed since).
-- While a row is open the periodic reconcile queues no job for the person
-- in that app: one person the app keeps refusing must not be retried
-- every hour for ever.
CREATE TABLE open_dead_letters (
    app          text        NOT NULL,
    person_id    uuid        NOT NULL,
    -- Sequence of the dead letter in the DLQ stream.
    sequence     bigint      NOT NULL,
    reason       text        NOT NULL,
    error        text        NOT NULL,
    deliveries   bigint      NOT NULL,
    -- The event that caused the dead job; a job with another cause (a
    -- newer change of the person) clears the row and runs.
    causation_id uuid,
    dead_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app, person_id)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON open_dead_letters TO tenure_app;
