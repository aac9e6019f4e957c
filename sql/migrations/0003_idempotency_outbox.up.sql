-- HTTP idempotency records (SPEC §7). The scope is the user id or 'anonymous'; path is the
-- concrete request path so that one key used on two resources never collides.
CREATE TABLE idempotency_keys (
    scope           text        NOT NULL,
    method          text        NOT NULL,
    path            text        NOT NULL,
    key             text        NOT NULL,
    fingerprint     bytea       NOT NULL,
    state           text        NOT NULL CHECK (state IN ('in_flight', 'completed')),
    locked_until    timestamptz,
    recovery_point  text        NOT NULL DEFAULT 'started',
    resource_id     uuid,
    response_status integer,
    response_body   bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (scope, method, path, key)
);

CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

-- Transactional outbox (SPEC §5): rows written with the change they announce, drained by
-- cmd/outbox-relay in id order.
CREATE TABLE outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type           text        NOT NULL,
    payload        jsonb       NOT NULL,
    correlation_id text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Wake the relays when a transaction that wrote outbox rows commits (NOTIFY is delivered at
-- commit and collapsed per transaction). The relays also poll, so a lost wake-up only delays.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dispatch_outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
