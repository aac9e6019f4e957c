package loadtest

import (
	"context"
	"fmt"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// StatementMeter counts the statements PostgreSQL ran in the stack's database, from
// pg_stat_statements, so that a run can say how many each order took: a figure that, unlike
// CPU on a shared machine, does not move from run to run. It needs the server to load the
// module (shared_preload_libraries) and the database to have the extension; without them it
// reports nothing.
type StatementMeter struct {
	db *postgres.DB
	ok bool
}

// statementsQuery counts every statement of the current database, BEGIN and COMMIT included.
const statementsQuery = `SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`

// NewStatementMeter returns a meter on db, working when pg_stat_statements can be read.
func NewStatementMeter(ctx context.Context, db *postgres.DB) *StatementMeter {
	m := &StatementMeter{db: db, ok: true}
	_, err := m.read(ctx)
	m.ok = err == nil
	return m
}

// Sample reads the statement count now (0 when the meter does not work).
func (m *StatementMeter) Sample(ctx context.Context) int64 {
	if !m.ok {
		return 0
	}
	n, err := m.read(ctx)
	if err != nil {
		m.ok = false
	}
	return n
}

func (m *StatementMeter) read(ctx context.Context) (int64, error) {
	var n int64
	err := m.db.GetContext(ctx, &n, statementsQuery)
	return n, err
}

// Report renders the statements per unit of work (n of them) between two samples.
func (m *StatementMeter) Report(before, after int64, n int, unit string) string {
	if !m.ok || n == 0 {
		return ""
	}
	return fmt.Sprintf("  PostgreSQL statements per %s: %.2f (pg_stat_statements; BEGIN and COMMIT included)\n",
		unit, float64(after-before)/float64(n))
}
