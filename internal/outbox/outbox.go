// Package outbox writes messages in the transaction of the change they announce; package
// outbox/relay hands them to the task queue.
//
// Why: a change and its consequence (a task, a notification) must commit together. Writing the
// message to the same database transaction means a crash can never leave one without the other;
// the relay then delivers each row at least once and consumers are idempotent.
package outbox

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/tasks"
)

// Channel is the LISTEN/NOTIFY channel a trigger on the outbox table signals on insert.
const Channel = "dispatch_outbox"

// Message is one task to enqueue once the transaction commits.
type Message struct {
	Type    string
	Payload any
}

const insertQuery = `INSERT INTO outbox (type, payload, correlation_id) SELECT * FROM unnest($1::text[], $2::jsonb[], $3::text[])`

// Write inserts msgs with tx, tagged with the correlation id carried by ctx. It must be called
// with the transaction of the change the messages announce.
func Write(ctx context.Context, tx sqlx.ExtContext, msgs ...Message) error {
	if len(msgs) == 0 {
		return nil
	}
	types := make([]string, len(msgs))
	payloads := make([]string, len(msgs))
	cids := make([]string, len(msgs))
	cid := logging.CorrelationID(ctx)
	for i, m := range msgs {
		if _, ok := tasks.QueueOf(m.Type); !ok {
			return fmt.Errorf("outbox: unknown task type %q", m.Type)
		}
		raw, err := json.Marshal(m.Payload)
		if err != nil {
			return fmt.Errorf("outbox: encode %s: %w", m.Type, err)
		}
		types[i], payloads[i], cids[i] = m.Type, string(raw), cid
	}
	if _, err := tx.ExecContext(ctx, insertQuery, pq.Array(types), pq.Array(payloads), pq.Array(cids)); err != nil {
		return fmt.Errorf("outbox: insert: %w", err)
	}
	return nil
}
