-- Every new order was written to this index, read only by the reconciler's scan of unpaid
-- orders. That scan reads the PENDING part of orders_status_keyset_idx instead (a pending order
-- is never deleted, so its partial predicate leaves none out): one index write less per order.
DROP INDEX orders_pending_idx;
