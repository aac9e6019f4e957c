-- A refund Stripe could not make (the card closed for good, say) is returned by staff some other
-- way, a bank transfer, and recorded on the order: method says which.
ALTER TABLE refunds ADD COLUMN method text NOT NULL DEFAULT 'stripe' CHECK (method IN ('stripe', 'outside'));
