package postgres

// Under READ COMMITTED, a SELECT … FOR UPDATE that waits for a row's lock returns the newest
// version of the rows it locks, but whatever else it joins (rows it does not or cannot lock: the
// nullable side of an outer join) as the statement's snapshot had them, before the lock's
// holder committed. A writer that changes those rows only with the locked row updates the
// locked row too; a read can then tell that it waited across such a change, and read again.

// LockedVersions is the SQL of the Versions columns, for a statement that locks the row of
// table under alias (keyed by id).
func LockedVersions(table, alias string) string {
	return alias + `.xmin::text AS locked_xmin, (SELECT xmin::text FROM ` + table + ` WHERE id = ` + alias + `.id) AS seen_xmin`
}

// Versions are the version of a row the lock returned and the one the statement's snapshot
// holds.
type Versions struct {
	Locked string `db:"locked_xmin"`
	Seen   string `db:"seen_xmin"`
}

// Stale reports whether the locked row changed after the statement's snapshot was taken: what
// the statement read of other rows may be older than the change, and must be read again.
func (v Versions) Stale() bool { return v.Locked != v.Seen }
