-- A payment waiting for its customer is stored, and shown, under Stripe's own name for the
-- PaymentIntent's status: SPEC §3 stores the PaymentIntent's status. The old name stays
-- allowed while programs from before this migration may still run beside the new ones (a
-- rolling deploy writes it until the last of them stops); the API reads it as the new one. A
-- later migration drops it.
ALTER DOMAIN payment_status DROP CONSTRAINT payment_status_check;
ALTER DOMAIN payment_status ADD CONSTRAINT payment_status_check
    CHECK (VALUE IN ('pending', 'requires_payment_method', 'requires_payment', 'failed', 'succeeded', 'canceled'));
UPDATE payments SET status = 'requires_payment_method' WHERE status = 'requires_payment';
