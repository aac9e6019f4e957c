ALTER DOMAIN payment_status DROP CONSTRAINT payment_status_check;
UPDATE payments SET status = 'requires_payment' WHERE status = 'requires_payment_method';
ALTER DOMAIN payment_status ADD CONSTRAINT payment_status_check
    CHECK (VALUE IN ('pending', 'requires_payment', 'failed', 'succeeded', 'canceled'));
