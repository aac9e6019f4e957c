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

	"github.com/lib/pq"

	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
)

// Channel is the LISTEN/NOTIFY channel on which writers wake the relays (Waker).
const Channel = "dispatch_outbox"

// Message is one task to enqueue once the transaction commits.
type Message struct {
	Type    string
	Payload any
}

// Rows are messages encoded for an insert; a statement that writes them beside the change they
// announce takes Args as the parameters of Insert.
type Rows struct{ types, payloads, cids []string }

// Encode checks and encodes msgs, tagged with the correlation id carried by ctx.
func Encode(ctx context.Context, msgs ...Message) (Rows, error) {
	r := Rows{make([]string, len(msgs)), make([]string, len(msgs)), make([]string, len(msgs))}
	cid := logging.CorrelationID(ctx)
	for i, m := range msgs {
		if _, ok := tasks.QueueOf(m.Type); !ok {
			return Rows{}, fmt.Errorf("outbox: unknown task type %q", m.Type)
		}
		raw, err := json.Marshal(m.Payload)
		if err != nil {
			return Rows{}, fmt.Errorf("outbox: encode %s: %w", m.Type, err)
		}
		r.types[i], r.payloads[i], r.cids[i] = m.Type, string(raw), cid
	}
	return r, nil
}

// Len is the number of rows.
func (r Rows) Len() int { return len(r.types) }

// Args are the three parameters of Insert.
func (r Rows) Args() []any {
	return []any{pq.Array(r.types), pq.Array(r.payloads), pq.Array(r.cids)}
}

// Insert is the INSERT of a Rows whose Args are the parameters $n, $n+1 and $n+2, written only
// when the condition cond (SQL) holds: a statement that changes a row and announces it in one
// round trip writes the messages only if the change matched.
func Insert(n int, cond string) string { return insert(n, cond, "p") }

// InsertSetting is Insert with the value at path (as jsonb_set takes it, '{data,number}') of
// every payload set to value (SQL): for messages that carry what their statement assigns.
func InsertSetting(n int, cond, path, value string) string {
	return insert(n, cond, fmt.Sprintf("jsonb_set(p, '%s', %s)", path, value))
}

func insert(n int, cond, payload string) string {
	return fmt.Sprintf(`INSERT INTO outbox (type, payload, correlation_id)
    SELECT t, %s, c FROM unnest($%d::text[], $%d::jsonb[], $%d::text[]) AS m(t, p, c) WHERE %s`,
		payload, n, n+1, n+2, cond)
}

var insertQuery = Insert(1, "true")

// Write inserts msgs with tx, tagged with the correlation id carried by ctx. It must be called
// with the transaction of the change the messages announce.
func Write(ctx context.Context, tx postgres.Querier, msgs ...Message) error {
	if len(msgs) == 0 {
		return nil
	}
	r, err := Encode(ctx, msgs...)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, insertQuery, r.Args()...); err != nil {
		return fmt.Errorf("outbox: insert: %w", err)
	}
	return nil
}
