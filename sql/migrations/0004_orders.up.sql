CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    number          bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    user_id         uuid        NOT NULL REFERENCES users (id),
    status          text        NOT NULL CHECK (status IN ('PENDING', 'PAID', 'PROCESSED', 'SHIPPED', 'DELIVERED', 'CANCELED', 'REFUNDED')),
    pending_action  text        CHECK (pending_action IN ('cancel', 'refund')),
    total           bigint      NOT NULL CHECK (total > 0),
    currency        text        NOT NULL CHECK (currency IN ('usd', 'brl', 'eur')),
    tracking_number text,
    carrier         text,
    shipped_at      timestamptz,
    delivered_at    timestamptz,
    canceled_at     timestamptz,
    refunded_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    CHECK (status <> 'SHIPPED' OR (tracking_number IS NOT NULL AND carrier IS NOT NULL))
);

CREATE INDEX orders_user_keyset_idx ON orders (user_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX orders_keyset_idx ON orders (created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX orders_status_keyset_idx ON orders (status, created_at DESC, id DESC) WHERE deleted_at IS NULL;
-- The reconciler scans PENDING orders oldest first.
CREATE INDEX orders_pending_idx ON orders (created_at) WHERE status = 'PENDING';

CREATE TABLE order_lines (
    id         uuid PRIMARY KEY,
    order_id   uuid    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    position   integer NOT NULL,
    item_id    uuid    NOT NULL REFERENCES items (id),
    name       text    NOT NULL,
    unit_price bigint  NOT NULL CHECK (unit_price > 0),
    quantity   integer NOT NULL CHECK (quantity > 0 AND quantity <= 1000),
    subtotal   bigint  NOT NULL CHECK (subtotal = unit_price * quantity),
    UNIQUE (order_id, position),
    UNIQUE (order_id, item_id)
);

-- The timeline: every status change and action, oldest first.
CREATE TABLE order_events (
    id             uuid PRIMARY KEY,
    order_id       uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    type           text        NOT NULL,
    from_status    text,
    to_status      text,
    actor          text        NOT NULL,
    reason         text,
    correlation_id text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX order_events_order_idx ON order_events (order_id, created_at, id);

-- One payment per order: its PaymentIntent and what Stripe reported.
CREATE TABLE payments (
    order_id          uuid PRIMARY KEY REFERENCES orders (id) ON DELETE CASCADE,
    payment_intent_id text UNIQUE,
    client_secret     text,
    status            text        NOT NULL CHECK (status IN ('pending', 'requires_payment', 'failed', 'succeeded', 'canceled')),
    amount_received   bigint,
    received_currency text,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Refunds at Stripe. kind 'order' is the refund of the order (cancel after capture, refund,
-- compensation); 'late_payment' returns a payment that arrived after the order was canceled.
CREATE TABLE refunds (
    id         uuid PRIMARY KEY,
    order_id   uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    kind       text        NOT NULL CHECK (kind IN ('order', 'late_payment')),
    refund_id  text        NOT NULL UNIQUE,
    amount     bigint      NOT NULL CHECK (amount > 0),
    currency   text        NOT NULL,
    status     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, kind)
);

CREATE TABLE notifications (
    id         uuid PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    event      text        NOT NULL,
    data       jsonb       NOT NULL DEFAULT '{}',
    -- The outbox row that asked for it: a task delivered twice inserts one notification.
    outbox_id  bigint UNIQUE,
    read_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX notifications_user_keyset_idx ON notifications (user_id, created_at DESC, id DESC);
CREATE INDEX notifications_unread_idx ON notifications (user_id, created_at DESC, id DESC) WHERE read_at IS NULL;

-- Stripe events seen, so a redelivered event does nothing.
CREATE TABLE stripe_events (
    id          text PRIMARY KEY,
    type        text        NOT NULL,
    outcome     text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
