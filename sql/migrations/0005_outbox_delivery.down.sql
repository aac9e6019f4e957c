DROP INDEX orders_stuck_idx;
DROP INDEX outbox_relay_at_idx;
ALTER TABLE outbox DROP COLUMN deliveries, DROP COLUMN relay_at;
