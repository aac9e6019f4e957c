DROP INDEX refunds_unsettled_idx;
