-- An outbox row now lives until the task it asked for has run, so that work handed to a Redis
-- that then loses its data is never lost (PostgreSQL is the source of truth). The relay hands a
-- row off and schedules its redelivery (relay_at); the worker deletes the row once the task
-- finished; a row still here at relay_at is handed off again.
ALTER TABLE outbox
    ADD COLUMN relay_at   timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN deliveries integer     NOT NULL DEFAULT 0;

CREATE INDEX outbox_relay_at_idx ON outbox (relay_at, id);

-- The reconciler looks for orders whose task did not run in time: paid and not processed, or
-- with a cancel or refund still pending.
CREATE INDEX orders_stuck_idx ON orders (updated_at) WHERE status = 'PAID' OR pending_action IS NOT NULL;
