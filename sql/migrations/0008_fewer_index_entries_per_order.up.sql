-- A new order's payment has no PaymentIntent yet, and its NULL was written to the unique index
-- of PaymentIntent ids all the same. The index now holds only the payments that have one (the
-- lookups say `payment_intent_id = $1`, which a NULL never matches).
ALTER TABLE payments DROP CONSTRAINT payments_payment_intent_id_key;
CREATE UNIQUE INDEX payments_intent_idx ON payments (payment_intent_id) WHERE payment_intent_id IS NOT NULL;

-- A line's position is given by the one statement that writes an order's lines (in the order of
-- the request, WITH ORDINALITY) and never changes. Its unique index was written for every line
-- and read by nothing that the index of (order_id, item_id) does not serve.
ALTER TABLE order_lines DROP CONSTRAINT order_lines_order_id_position_key;
