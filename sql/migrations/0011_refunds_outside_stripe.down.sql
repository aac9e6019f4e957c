ALTER TABLE refunds DROP COLUMN method;
