ALTER TABLE idempotency_keys
    ALTER COLUMN state TYPE text,
    ADD CONSTRAINT idempotency_keys_state_check CHECK (state IN ('in_flight', 'completed'));

ALTER TABLE payments
    ALTER COLUMN status TYPE text,
    ADD CONSTRAINT payments_status_check CHECK (status IN ('pending', 'requires_payment', 'failed', 'succeeded', 'canceled'));

ALTER TABLE order_lines
    ALTER COLUMN unit_price TYPE bigint,
    ALTER COLUMN quantity TYPE integer,
    ADD CONSTRAINT order_lines_unit_price_check CHECK (unit_price > 0),
    ADD CONSTRAINT order_lines_quantity_check CHECK (quantity > 0 AND quantity <= 1000);

ALTER TABLE orders
    ALTER COLUMN status TYPE text,
    ALTER COLUMN pending_action TYPE text,
    ALTER COLUMN total TYPE bigint,
    ALTER COLUMN currency TYPE text,
    ADD CONSTRAINT orders_status_check CHECK (status IN ('PENDING', 'PAID', 'PROCESSED', 'SHIPPED', 'DELIVERED', 'CANCELED', 'REFUNDED')),
    ADD CONSTRAINT orders_pending_action_check CHECK (pending_action IN ('cancel', 'refund')),
    ADD CONSTRAINT orders_total_check CHECK (total > 0),
    ADD CONSTRAINT orders_currency_check CHECK (currency IN ('usd', 'brl', 'eur'));

ALTER TABLE items
    ALTER COLUMN name TYPE text,
    ALTER COLUMN description TYPE text,
    ALTER COLUMN price TYPE bigint,
    ALTER COLUMN currency TYPE text,
    ADD CONSTRAINT items_name_check CHECK (char_length(name) BETWEEN 2 AND 200),
    ADD CONSTRAINT items_description_check CHECK (char_length(description) BETWEEN 1 AND 5000),
    ADD CONSTRAINT items_price_check CHECK (price > 0),
    ADD CONSTRAINT items_currency_check CHECK (currency IN ('usd', 'brl', 'eur'));

DROP DOMAIN idempotency_state, payment_status, line_quantity, order_action, order_status,
    item_description, item_name, positive_amount, currency_code;
