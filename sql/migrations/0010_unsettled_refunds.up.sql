-- The reconciler asks Stripe about refunds still under way (their webhook lost, or one that came
-- before the refund was recorded). Most refunds are settled when recorded; only the few still
-- under way are in this index, so finding them reads none of the others.
CREATE INDEX refunds_unsettled_idx ON refunds (updated_at) WHERE status IN ('pending', 'requires_action');
