ALTER TABLE order_lines ADD CONSTRAINT order_lines_order_id_position_key UNIQUE (order_id, position);

DROP INDEX payments_intent_idx;
ALTER TABLE payments ADD CONSTRAINT payments_payment_intent_id_key UNIQUE (payment_intent_id);
