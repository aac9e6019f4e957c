// Package ratelimit counts requests per key in fixed windows shared through Redis, so every
// API replica enforces the same limit.
package ratelimit

import (
	"context"
	"net/netip"
	"time"

	"github.com/redis/go-redis/v9"
)

// Result is the state of a key's window after counting one request.
type Result struct {
	Allowed   bool
	Limit     int
	Remaining int
	Reset     time.Duration // until the window ends
}

// Limiter counts requests in Redis.
type Limiter struct {
	rdb *redis.Client
}

// New returns a limiter on rdb.
func New(rdb *redis.Client) *Limiter { return &Limiter{rdb: rdb} }

// The window starts with a key's first request and ends window later; one round trip counts a
// request and reads the time left.
var hit = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}`)

// Allow counts one request for key against limit per window.
func (l *Limiter) Allow(ctx context.Context, key string, limit int, window time.Duration) (Result, error) {
	vals, err := hit.Run(ctx, l.rdb, []string{key}, window.Milliseconds()).Int64Slice()
	if err != nil {
		return Result{Allowed: true, Limit: limit, Remaining: limit}, err
	}
	n, ttl := int(vals[0]), time.Duration(vals[1])*time.Millisecond
	return Result{Allowed: n <= limit, Limit: limit, Remaining: max(limit-n, 0), Reset: ttl}, nil
}

// attempt decides and counts in one step: past the limit it refuses, under it it counts a
// failure (ARGV[3] = 1) and starts the window with the first.
var attempt = redis.NewScript(`
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[2]) then
  return {0, redis.call('PTTL', KEYS[1])}
end
if ARGV[3] == '1' and redis.call('INCR', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return {1, 0}`)

// Attempt decides an attempt at a guard that counts only failures (a wrong password), limit
// per window: once limit failures are counted, every attempt is refused until the window ends,
// a right one too, so that a right guess is not told apart; refused, it returns how long the
// window has left. Deciding and counting are one step, so parallel guesses get no more than
// limit failures answered, and an attempt that did not fail uses no budget.
func (l *Limiter) Attempt(ctx context.Context, key string, limit int, window time.Duration, failed bool) (bool, time.Duration, error) {
	fail := 0
	if failed {
		fail = 1
	}
	vals, err := attempt.Run(ctx, l.rdb, []string{key}, window.Milliseconds(), limit, fail).Int64Slice()
	if err != nil {
		return false, 0, err
	}
	return vals[0] == 1, max(time.Duration(vals[1])*time.Millisecond, 0), nil
}

// Client is the part of a client's IP address that counts as one client: an IPv4 address, or
// the /64 network of an IPv6 one. A single IPv6 host is usually given a whole /64, so counting
// its addresses one by one would let it pick a fresh budget for every request.
func Client(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.Unmap()
	if addr.Is4() {
		return addr.String()
	}
	return netip.PrefixFrom(addr, 64).Masked().String()
}
