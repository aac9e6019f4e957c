-- Staff list the orders that owe a payment back (GET /v1/admin/orders?refundOwed=true): those
-- whose refund failed or was canceled at Stripe, a few among many, read through this index.
CREATE INDEX refunds_owed_idx ON refunds (order_id) WHERE status IN ('failed', 'canceled');

-- A late payment whose refund Stripe refused used to leave no refund behind; it is now recorded
-- as a failed refund of ours ('refused_…'), as the worker records one from now on, so that
-- those orders are found by the index too.
INSERT INTO refunds (id, order_id, kind, refund_id, amount, currency, status)
SELECT gen_random_uuid(), o.id, 'late_payment', 'refused_' || gen_random_uuid(),
       COALESCE(NULLIF(p.amount_received, 0), o.total), lower(COALESCE(p.received_currency, o.currency)), 'failed'
FROM orders o JOIN payments p ON p.order_id = o.id
WHERE o.status = 'CANCELED' AND p.status = 'succeeded' AND o.pending_action IS NULL
  AND NOT EXISTS (SELECT FROM refunds r WHERE r.order_id = o.id);
