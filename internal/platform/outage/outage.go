// Package outage tells errors that mean a backing service (PostgreSQL, Redis) could not be
// reached or went away from errors of the request itself: the first are a 503 to retry, not a
// bug.
package outage

import (
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"
)

// Is reports whether err means a backing service is unreachable, restarting or refusing
// connections.
func Is(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) { // Redis's empty answer, the commonest error by far
		return false
	}
	var (
		netErr net.Error
		pqErr  *pq.Error
	)
	if errors.As(err, &pqErr) {
		return serverGoingAway(string(pqErr.Code))
	}
	// A refused or dropped connection: lib/pq and go-redis return the network error, or EOF
	// when the server closed the connection mid-exchange.
	return errors.As(err, &netErr) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) ||
		errors.Is(err, ErrSkipped) || redisCannotServe(err)
}

// redisCannotServe: Redis answered but cannot serve any such command now: full (OOM, with
// noeviction), loading its data after a restart, a replica after a failover (READONLY), cut off
// from its master (MASTERDOWN), failing over (TRYAGAIN, CLUSTERDOWN), out of connections.
func redisCannotServe(err error) bool {
	return redis.IsOOMError(err) || redis.IsLoadingError(err) || redis.IsReadOnlyError(err) ||
		redis.IsMasterDownError(err) || redis.IsTryAgainError(err) || redis.IsClusterDownError(err) ||
		redis.IsMaxClientsError(err)
}

// serverGoingAway: class 08 (connection exception), 57P01-57P03 (shutdown, crash, cannot
// connect now), 53300 (too many connections) and 25P03 (the server ended a transaction left
// idle, as it does when the program was stopped in one: nothing of it was written).
func serverGoingAway(code string) bool {
	return strings.HasPrefix(code, "08") || code == "57P01" || code == "57P02" || code == "57P03" || code == "53300" ||
		code == "25P03"
}
