package outbox

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// Waker tells the relays that outbox rows were committed: a NOTIFY on Channel sent right after
// the writer's commit, in a transaction of its own that does not wait for the disk.
//
// Why not from the writing transaction: PostgreSQL serializes the commits of all transactions
// that sent a NOTIFY (a database-wide lock taken at commit and held through the WAL flush), so
// every order, payment and transition would commit one at a time behind the others. The wake-up
// is a hint: one lost to a crash right after the commit costs only the relays' poll interval.
// Wakes that come while a NOTIFY is in flight share the next one, so a busy process sends far
// fewer than it commits.
type Waker struct {
	db    *postgres.DB
	log   *slog.Logger
	state atomic.Int32 // idle, sending, or sending with another NOTIFY due after it
}

const (
	idle int32 = iota
	sending
	sendAgain
)

// NewWaker returns a Waker sending on db.
func NewWaker(db *postgres.DB, log *slog.Logger) *Waker {
	return &Waker{db: db, log: log}
}

// Wake makes sure a NOTIFY is sent that starts after this call. It never blocks.
func (w *Waker) Wake() {
	for {
		switch w.state.Load() {
		case idle:
			if w.state.CompareAndSwap(idle, sending) {
				go w.send()
				return
			}
		case sending:
			if w.state.CompareAndSwap(sending, sendAgain) {
				return
			}
		default:
			return // the NOTIFY due next starts after this call
		}
	}
}

// InTx runs fn in a transaction on the Waker's database (postgres.WithTx) and wakes the relays
// once it committed: the way to run a transaction that writes outbox rows.
func (w *Waker) InTx(ctx context.Context, fn func(tx *postgres.Tx) error) error {
	err := postgres.WithTx(ctx, w.db, fn)
	if err == nil {
		w.Wake()
	}
	return err
}

var notifyQuery = `WITH ` + postgres.Relaxed + ` SELECT pg_notify($1, '') FROM relaxed`

func (w *Waker) send() {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := w.db.ExecContext(ctx, notifyQuery, Channel); err != nil {
			w.log.Warn("relays not woken; they find the rows at their next poll", "err", err)
		}
		cancel()
		if w.state.CompareAndSwap(sending, idle) {
			return
		}
		w.state.Store(sending) // a Wake came meanwhile
	}
}
