package postgres

import (
	"context"
	"io/fs"
)

// NewMigratorFrom is NewMigrator with the migrations of files.
func NewMigratorFrom(ctx context.Context, url string, files fs.FS) (*Migrator, error) {
	return newMigrator(ctx, url, files)
}
