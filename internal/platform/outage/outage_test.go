package outage_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/platform/outage"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

func TestIs(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	for err, want := range map[error]bool{
		refused: true,
		fmt.Errorf("idempotency: begin: %w", refused):           true,
		&pq.Error{Code: "57P01"}:                                true, // terminating connection due to administrator command
		&pq.Error{Code: "57P03"}:                                true, // the database system is starting up
		&pq.Error{Code: "08006"}:                                true,
		&pq.Error{Code: "53300"}:                                true,
		&pq.Error{Code: "25P03"}:                                true, // idle-in-transaction session timeout
		driver.ErrBadConn:                                       true,
		fmt.Errorf("postgres: commit: %w", io.ErrUnexpectedEOF): true,
		io.EOF:                             true,
		redis.ErrPoolTimeout:               true,
		redis.Nil:                          false,
		fmt.Errorf("cache: %w", redis.Nil): false,
		&pq.Error{Code: "23505"}:           false,
		&pq.Error{Code: "22021"}:           false,
		sql.ErrNoRows:                      false,
		context.Canceled:                   false,
		apperr.ErrValidation:               false,
		errors.New("something else"):       false,
		nil:                                false,
	} {
		if got := outage.Is(err); got != want {
			t.Errorf("Is(%v) = %v, want %v", err, got, want)
		}
	}
}

// TestRedisThatCannotServe: a Redis that answers but cannot serve (full, a replica after a
// failover, cut off from its master, loading its data) is an outage like one that is away,
// whatever wraps its error; an error of the command itself is not. The errors are a real
// server's.
func TestRedisThatCannotServe(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedisServer(t, "outage", "maxmemory 2mb", "maxmemory-policy noeviction")
	rdb := srv.Client()
	ctx := context.Background()
	is := func(what string, err error, want bool) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error", what)
		}
		for _, e := range []error{err, fmt.Errorf("cache: %w", err)} {
			if got := outage.Is(e); got != want {
				t.Errorf("%s: Is(%v) = %v, want %v", what, e, got, want)
			}
		}
	}

	rdb.HSet(ctx, "h", "f", "v")
	is("WRONGTYPE", rdb.Get(ctx, "h").Err(), false)
	is("unknown command", rdb.Do(ctx, "NOSUCHCOMMAND").Err(), false)
	if err := rdb.Get(ctx, "missing").Err(); outage.Is(err) {
		t.Errorf("Is(redis.Nil) = true")
	}

	var err error
	big := strings.Repeat("x", 64<<10)
	for i := 0; i < 1000 && err == nil; i++ {
		err = rdb.Set(ctx, fmt.Sprintf("fill-%d", i), big, 0).Err()
	}
	is("full (OOM)", err, true)
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	// A replica of a master that is not there: writes are refused, and so are reads once it may
	// not serve stale data.
	if err := rdb.Do(ctx, "REPLICAOF", "127.0.0.1", strconv.Itoa(testenv.FreePort(t))).Err(); err != nil {
		t.Fatal(err)
	}
	is("READONLY", rdb.Set(ctx, "k", "v", 0).Err(), true)
	if err := rdb.ConfigSet(ctx, "replica-serve-stale-data", "no").Err(); err != nil {
		t.Fatal(err)
	}
	is("MASTERDOWN", rdb.Get(ctx, "k").Err(), true)
}
