-- A payment waiting for its customer is stored, and shown, under Stripe's own name for the
-- PaymentIntent's status: SPEC §3 stores the PaymentIntent's status.
ALTER DOMAIN payment_status DROP CONSTRAINT payment_status_check;
UPDATE payments SET status = 'requires_payment_method' WHERE status = 'requires_payment';
ALTER DOMAIN payment_status ADD CONSTRAINT payment_status_check
    CHECK (VALUE IN ('pending', 'requires_payment_method', 'failed', 'succeeded', 'canceled'));
