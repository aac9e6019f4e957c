package postgres

import (
	"strconv"
	"strings"
	"time"
)

// Query assembles a SELECT whose WHERE clause depends on optional filters, numbering the
// placeholders as arguments are added. Lists use it; fixed statements stay plain constants.
type Query struct {
	Args  []any
	where []string
}

// Arg adds an argument and returns its placeholder.
func (q *Query) Arg(v any) string {
	q.Args = append(q.Args, v)
	return "$" + strconv.Itoa(len(q.Args))
}

// Where adds a condition joined with AND.
func (q *Query) Where(cond string) { q.where = append(q.where, cond) }

// Keyset adds the condition that starts a page after the row (at, id) in the order
// "timeCol DESC, idCol DESC" (or ASC when asc). Equal timestamps are ordered by id, so no row
// is skipped or repeated.
func (q *Query) Keyset(timeCol, idCol string, at time.Time, id any, asc bool) {
	op := "<"
	if asc {
		op = ">"
	}
	q.Where("(" + timeCol + ", " + idCol + ") " + op + " (" + q.Arg(at) + ", " + q.Arg(id) + ")")
}

// WhereSQL returns " WHERE a AND b" or "".
func (q *Query) WhereSQL() string {
	if len(q.where) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(q.where, " AND ")
}

// Contains returns an ILIKE pattern matching s anywhere, with LIKE's wildcards escaped.
func Contains(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(s) + "%"
}
