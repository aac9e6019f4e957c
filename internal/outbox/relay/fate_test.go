package relay

import (
	"context"
	"testing"

	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/hibiken/asynq"
)

// TestFateOf: what a row due again needs, for every state Asynq can report of its task.
func TestFateOf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		state   asynq.TaskState
		lastErr string
		want    fate
	}{
		{asynq.TaskStatePending, "", waiting},
		{asynq.TaskStateScheduled, "", waiting},
		{asynq.TaskStateAggregating, "", waiting},
		{asynq.TaskStateActive, "", waiting},
		{asynq.TaskStateRetry, "boom", waiting},
		{asynq.TaskStateRetry, asynq.ErrLeaseExpired.Error(), waiting}, // Asynq retries it itself
		{asynq.TaskStateCompleted, "", finished},
		{asynq.TaskStateArchived, "order: payment mismatch", finished},
		{asynq.TaskStateArchived, asynq.ErrLeaseExpired.Error(), abandoned},
		{asynq.TaskStateRetry, tasks.Unfinished + ": dial tcp: connection refused", waiting},
		{asynq.TaskStateArchived, tasks.Unfinished + ": dial tcp: connection refused", abandoned},
		{asynq.TaskStateRetry, context.DeadlineExceeded.Error(), waiting},
		{asynq.TaskStateArchived, context.DeadlineExceeded.Error(), abandoned}, // its policy ran on, and did not acknowledge the row
		{asynq.TaskStateArchived, "stripe: " + context.DeadlineExceeded.Error(), finished},
	} {
		if got := fateOf(tc.state, tc.lastErr); got != tc.want {
			t.Errorf("fateOf(%s, %q) = %d, want %d", tc.state, tc.lastErr, got, tc.want)
		}
	}
}
