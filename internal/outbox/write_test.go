package outbox_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

type row struct {
	Type          string `db:"type"`
	Payload       string `db:"payload"`
	CorrelationID string `db:"correlation_id"`
}

func rows(t *testing.T, db *postgres.DB) []row {
	t.Helper()
	var out []row
	if err := db.Select(&out, `SELECT type, payload::text AS payload, correlation_id FROM outbox ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWriteCommitsWithTheTransaction(t *testing.T) {
	db, _ := testenv.DB(t)
	ctx := logging.WithCorrelationID(testenv.Context(t), "cid-123")
	uid := uuid.New()
	err := postgres.WithTx(ctx, db, func(tx *postgres.Tx) error {
		return outbox.Write(ctx, tx,
			outbox.Message{Type: tasks.CustomerCreate, Payload: tasks.Customer{UserID: uid}},
			outbox.Message{Type: tasks.NotifyUser, Payload: tasks.Notify{UserID: uid, Event: "auth.login"}})
	})
	if err != nil {
		t.Fatal(err)
	}
	got := rows(t, db)
	if len(got) != 2 {
		t.Fatalf("rows: %+v", got)
	}
	if got[0].Type != tasks.CustomerCreate || got[0].Payload != `{"userId": "`+uid.String()+`"}` || got[0].CorrelationID != "cid-123" {
		t.Fatalf("first row: %+v", got[0])
	}
	if got[1].Type != tasks.NotifyUser || got[1].CorrelationID != "cid-123" {
		t.Fatalf("second row: %+v", got[1])
	}
}

func TestWriteRollsBackWithTheTransaction(t *testing.T) {
	db, _ := testenv.DB(t)
	ctx := testenv.Context(t)
	boom := errors.New("change failed")
	err := postgres.WithTx(ctx, db, func(tx *postgres.Tx) error {
		if err := outbox.Write(ctx, tx, outbox.Message{Type: tasks.CustomerUpdate, Payload: tasks.Customer{UserID: uuid.New()}}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("WithTx = %v", err)
	}
	if got := rows(t, db); len(got) != 0 {
		t.Fatalf("rolled-back rows survived: %+v", got)
	}
}

func TestWriteRefusesUnknownTypesAndBadPayloads(t *testing.T) {
	db, _ := testenv.DB(t)
	ctx := context.Background()
	for name, msgs := range map[string][]outbox.Message{
		"unknown type":   {{Type: "payment:customer:create"}, {Type: "no:such:task", Payload: 1}},
		"prefix of type": {{Type: "payment:customer", Payload: 1}},
		"payload":        {{Type: tasks.NotifyUser, Payload: func() {}}},
	} {
		if err := outbox.Write(ctx, db, msgs...); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := outbox.Write(ctx, db); err != nil {
		t.Fatalf("writing nothing: %v", err)
	}
	if got := rows(t, db); len(got) != 0 {
		t.Fatalf("refused writes stored rows: %+v", got)
	}
}
