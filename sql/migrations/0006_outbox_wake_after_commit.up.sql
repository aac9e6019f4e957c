-- The writers wake the relays themselves, right after their commit (outbox.Waker). A NOTIFY
-- sent from the writing transaction, as this trigger did, takes a database-wide lock at commit
-- and holds it through the WAL flush: every transaction that wrote outbox rows committed one at
-- a time behind the others, and under load they queued for it (docs/decisions.md).
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
