package postgres

// Versions are two columns a statement that locks a row (FOR UPDATE) reads beside it
// (VersionColumns). Under READ COMMITTED such a statement, when it waits for the row's lock,
// returns the newest version of the rows it locks but whatever else it joins (rows it does not
// or cannot lock: the nullable side of an outer join) as its snapshot had them, before the
// lock's holder committed. The subquery reads the row as that snapshot
// holds it, so the two differ when the row changed after the snapshot was taken. A writer that
// changes the joined rows under the lock and updates the locked row with them can then be
// seen, and the read made again.
type Versions struct {
	Locked string `db:"locked_xmin"`
	Seen   string `db:"seen_xmin"`
}

// Stale reports whether the locked row changed after the statement's snapshot was taken: what
// the statement read of other rows may be older than the change, and must be read again.
func (v Versions) Stale() bool { return v.Locked != v.Seen }

// VersionColumns are Versions' two columns for the row of table under alias, keyed by its id:
//
//	alias.xmin::text AS locked_xmin, (SELECT xmin::text FROM table WHERE id = alias.id) AS seen_xmin
func VersionColumns(table, alias string) string {
	return alias + ".xmin::text AS locked_xmin, (SELECT xmin::text FROM " + table + " WHERE id = " + alias + ".id) AS seen_xmin"
}
