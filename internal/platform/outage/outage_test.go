package outage_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/platform/outage"
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
		driver.ErrBadConn:                                       true,
		fmt.Errorf("postgres: commit: %w", io.ErrUnexpectedEOF): true,
		io.EOF:                       true,
		redis.ErrPoolTimeout:         true,
		&pq.Error{Code: "23505"}:     false,
		&pq.Error{Code: "22021"}:     false,
		sql.ErrNoRows:                false,
		context.Canceled:             false,
		apperr.ErrValidation:         false,
		errors.New("something else"): false,
		nil:                          false,
	} {
		if got := outage.Is(err); got != want {
			t.Errorf("Is(%v) = %v, want %v", err, got, want)
		}
	}
}
