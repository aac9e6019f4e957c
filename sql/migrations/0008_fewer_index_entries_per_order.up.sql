-- A new order's payment has no PaymentIntent yet, and its NULL was written to the unique index
-- of PaymentIntent ids all the same. The index now holds only the payments that have one (the
-- lookups say `payment_intent_id = $1`, which a NULL never matches).
ALTER TABLE payments DROP CONSTRAINT payments_payment_intent_id_key;
CREATE UNIQUE INDEX payments_intent_idx ON payments (payment_intent_id) WHERE payment_intent_id IS NOT NULL;

-- A line is read with its order, in its position: that pair, unique already, is its key. The
-- line's id stays, shown by the API, without an index of its own that nothing read.
ALTER TABLE order_lines
    DROP CONSTRAINT order_lines_pkey,
    DROP CONSTRAINT order_lines_order_id_position_key,
    ADD PRIMARY KEY (order_id, position);
