-- Projection and work tables. Unlike `events` these are mutable and can be
-- dropped and rebuilt from the event store at any time.

CREATE TABLE persons (
    person_id        uuid        PRIMARY KEY,
    source           text        NOT NULL,
    source_person_id text        NOT NULL,
    status           text        NOT NULL,
    attributes       jsonb       NOT NULL,
    version          bigint      NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, source_person_id)
);

CREATE TABLE accounts (
    app        text        NOT NULL,
    person_id  uuid        NOT NULL,
    remote_id  text,
    user_name  text,
    active     boolean,
    state      jsonb,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app, person_id)
);

-- Deliveries already consumed, so redelivered input is processed only once.
CREATE TABLE inbox (
    source       text        NOT NULL,
    delivery_id  text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, delivery_id)
);

-- Messages written in the same transaction as the state change that caused
-- them, published afterwards; msg_id lets the bus deduplicate.
CREATE TABLE outbox (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    msg_id     text        NOT NULL UNIQUE,
    subject    text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
