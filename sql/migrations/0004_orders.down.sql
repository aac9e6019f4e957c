DROP TABLE stripe_events;
DROP TABLE notifications;
DROP TABLE refunds;
DROP TABLE payments;
DROP TABLE order_events;
DROP TABLE order_lines;
DROP TABLE orders;
