// Command migrate applies the embedded SQL migrations: up | down N | version | force V.
// "up" creates the database first when it does not exist. It exits 3 when PostgreSQL could
// not be reached, 1 on any other failure.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/platform/outage"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// exitUnavailable is the exit status when PostgreSQL could not be reached: worth trying again
// (scripts/run.sh does), where any other failure (a bad setting, a failing migration) is not.
const exitUnavailable = 3

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "migrate:", err)
		if outage.Is(err) {
			os.Exit(exitUnavailable)
		}
		os.Exit(1)
	}
}

const usage = "usage: migrate up | down N | down all | version | force V"

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	cfg, err := config.Load(config.Migrate, getenv)
	if err != nil {
		return err
	}
	if args[0] == "up" {
		if err := postgres.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
			return err
		}
	}
	m, err := postgres.NewMigrator(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer m.Close()

	switch {
	case args[0] == "up" && len(args) == 1:
		err = m.Up()
	case args[0] == "down" && len(args) == 2 && args[1] == "all":
		err = m.Down(0)
	case args[0] == "down" && len(args) == 2:
		n, perr := strconv.Atoi(args[1])
		if perr != nil || n < 1 {
			return errors.New(usage)
		}
		err = m.Down(n)
	case args[0] == "force" && len(args) == 2:
		v, perr := strconv.Atoi(args[1])
		if perr != nil {
			return errors.New(usage)
		}
		err = m.Force(v)
	case args[0] == "version" && len(args) == 1:
	default:
		return errors.New(usage)
	}
	if err != nil {
		return err
	}
	v, dirty, err := m.Version()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "version %d (dirty: %t)\n", v, dirty)
	return nil
}
