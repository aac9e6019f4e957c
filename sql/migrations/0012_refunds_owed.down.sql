DELETE FROM refunds WHERE kind = 'late_payment' AND refund_id LIKE 'refused\_%';
DROP INDEX refunds_owed_idx;
