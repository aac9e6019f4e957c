-- Value rules as domains instead of table CHECKs on the tables every order writes.
--
-- PostgreSQL reads a table's CHECK constraints from their stored text and prepares them anew
-- for every statement that inserts into or updates the table, and an UPDATE checks every one of
-- them whatever it changes (a stock decrement checked the item's name and description). A
-- domain's constraints are read once per connection and checked only where a value is given
-- to a column of that type. Same rules, same check_violation (23514) on a breach; the rules
-- that tie columns together stay table CHECKs, and so does the stock rule, which every stock
-- change must pass (docs/decisions.md, "Value rules").
CREATE DOMAIN currency_code AS text CONSTRAINT currency_code_check CHECK (VALUE IN ('usd', 'brl', 'eur'));
CREATE DOMAIN positive_amount AS bigint CONSTRAINT positive_amount_check CHECK (VALUE > 0);
CREATE DOMAIN item_name AS text CONSTRAINT item_name_check CHECK (char_length(VALUE) BETWEEN 2 AND 200);
CREATE DOMAIN item_description AS text CONSTRAINT item_description_check CHECK (char_length(VALUE) BETWEEN 1 AND 5000);
CREATE DOMAIN order_status AS text
    CONSTRAINT order_status_check CHECK (VALUE IN ('PENDING', 'PAID', 'PROCESSED', 'SHIPPED', 'DELIVERED', 'CANCELED', 'REFUNDED'));
CREATE DOMAIN order_action AS text CONSTRAINT order_action_check CHECK (VALUE IN ('cancel', 'refund'));
CREATE DOMAIN line_quantity AS integer CONSTRAINT line_quantity_check CHECK (VALUE > 0 AND VALUE <= 1000);
CREATE DOMAIN payment_status AS text
    CONSTRAINT payment_status_check CHECK (VALUE IN ('pending', 'requires_payment', 'failed', 'succeeded', 'canceled'));
CREATE DOMAIN idempotency_state AS text CONSTRAINT idempotency_state_check CHECK (VALUE IN ('in_flight', 'completed'));

ALTER TABLE items
    DROP CONSTRAINT items_name_check,
    DROP CONSTRAINT items_description_check,
    DROP CONSTRAINT items_price_check,
    DROP CONSTRAINT items_currency_check,
    ALTER COLUMN name TYPE item_name,
    ALTER COLUMN description TYPE item_description,
    ALTER COLUMN price TYPE positive_amount,
    ALTER COLUMN currency TYPE currency_code;

ALTER TABLE orders
    DROP CONSTRAINT orders_status_check,
    DROP CONSTRAINT orders_pending_action_check,
    DROP CONSTRAINT orders_total_check,
    DROP CONSTRAINT orders_currency_check,
    ALTER COLUMN status TYPE order_status,
    ALTER COLUMN pending_action TYPE order_action,
    ALTER COLUMN total TYPE positive_amount,
    ALTER COLUMN currency TYPE currency_code;

ALTER TABLE order_lines
    DROP CONSTRAINT order_lines_unit_price_check,
    DROP CONSTRAINT order_lines_quantity_check,
    ALTER COLUMN unit_price TYPE positive_amount,
    ALTER COLUMN quantity TYPE line_quantity;

ALTER TABLE payments
    DROP CONSTRAINT payments_status_check,
    ALTER COLUMN status TYPE payment_status;

ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_state_check,
    ALTER COLUMN state TYPE idempotency_state;
