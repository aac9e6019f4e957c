// Package migrations embeds the SQL schema migrations applied by cmd/migrate and the tests.
package migrations

import "embed"

// FS holds the numbered NNNN_name.up.sql / .down.sql pairs.
//
//go:embed *.sql
var FS embed.FS
