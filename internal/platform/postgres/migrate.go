package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	migratepg "github.com/golang-migrate/migrate/v4/database/postgres"
	"github.com/golang-migrate/migrate/v4/source/iofs"

	"github.com/dispatchhq/dispatch/sql/migrations"
)

// Migrator applies the embedded migrations to one database.
type Migrator struct{ m *migrate.Migrate }

// NewMigrator connects to url and prepares golang-migrate with the embedded sql/migrations.
func NewMigrator(ctx context.Context, url string) (*Migrator, error) {
	return newMigrator(ctx, url, migrations.FS)
}

func newMigrator(ctx context.Context, url string, files fs.FS) (*Migrator, error) {
	db, err := Open(ctx, url, 2)
	if err != nil {
		return nil, err
	}
	src, err := iofs.New(files, ".")
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate: source: %w", err)
	}
	drv, err := migratepg.WithInstance(db.pool.DB, &migratepg.Config{})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate: driver: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "postgres", &atomicDriver{Driver: drv, db: db.pool.DB})
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	m.LockTimeout = lockWait
	return &Migrator{m: m}, nil
}

// lockWait is how long a migrator waits for another one's lock. Two may start at once (several
// deploy jobs or init containers on one database): the second waits for the first's migrations,
// which can take minutes on a large database, then finds nothing left to do. golang-migrate's
// own 15 s made it fail instead, and the programs started after it never started.
const lockWait = 10 * time.Minute

// atomicDriver commits each migration with the version it leads to. golang-migrate marks the
// version dirty, runs the migration, then marks it clean: three commits. A stop between them
// (migrate killed, PostgreSQL restarting) left a dirty version that every later "up" refused
// until someone forced one, without saying whether the migration had committed. Every
// migration file is one transactional script, so it and its version commit together: a stop
// leaves the version before it, clean, and the next "up" runs it again.
type atomicDriver struct {
	database.Driver
	db      *sql.DB
	pending []byte // the migration Run took (never nil then), run by the SetVersion that marks it done
}

// Run keeps the migration for the SetVersion that follows it.
func (d *atomicDriver) Run(migration io.Reader) error {
	body, err := io.ReadAll(migration)
	if err != nil {
		return err
	}
	d.pending = body
	return nil
}

// SetVersion records version: marking it dirty is left out, marking it clean runs the pending
// migration in the same transaction. Without one (force) it is golang-migrate's own.
func (d *atomicDriver) SetVersion(version int, dirty bool) error {
	if dirty && d.pending == nil {
		return nil // Run follows; its version is written with it
	}
	if d.pending == nil {
		return d.Driver.SetVersion(version, dirty)
	}
	body := d.pending
	d.pending = nil
	tx, err := d.db.BeginTx(context.Background(), nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }() // after a Commit, a no-op
	if _, err := tx.Exec(string(body)); err != nil {
		return fmt.Errorf("migration to version %d: %w", version, err)
	}
	if _, err := tx.Exec(`TRUNCATE schema_migrations`); err != nil {
		return err
	}
	if version >= 0 {
		if _, err := tx.Exec(`INSERT INTO schema_migrations (version, dirty) VALUES ($1, false)`, version); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Close releases the migrator's connection.
func (m *Migrator) Close() error {
	srcErr, dbErr := m.m.Close()
	return errors.Join(srcErr, dbErr)
}

// Up applies every pending migration. No change is not an error.
func (m *Migrator) Up() error { return ignoreNoChange(m.m.Up()) }

// Down reverts n migrations (all of them when n <= 0).
func (m *Migrator) Down(n int) error {
	if n <= 0 {
		return ignoreNoChange(m.m.Down())
	}
	return ignoreNoChange(m.m.Steps(-n))
}

// Version reports the applied version and whether the last migration failed halfway.
func (m *Migrator) Version() (version uint, dirty bool, err error) {
	v, d, err := m.m.Version()
	if errors.Is(err, migrate.ErrNilVersion) {
		return 0, false, nil
	}
	return v, d, err
}

// Force sets the version without running anything (to recover from a dirty state).
func (m *Migrator) Force(v int) error { return m.m.Force(v) }

func ignoreNoChange(err error) error {
	if errors.Is(err, migrate.ErrNoChange) {
		return nil
	}
	return err
}
