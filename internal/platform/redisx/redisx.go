// Package redisx opens the go-redis client and names the keys the programs share.
package redisx

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Open parses url (any form Parse accepts), connects and pings.
func Open(ctx context.Context, url string) (*redis.Client, error) {
	c, err := New(url)
	if err != nil {
		return nil, err
	}
	if err := Ping(ctx, c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// New parses url and returns its client, which connects at its first command.
func New(url string) (*redis.Client, error) {
	t, err := Parse(url)
	if err != nil {
		return nil, err
	}
	return t.NewClient(), nil
}

// Ping checks that c's server answers, within 5 s.
func Ping(ctx context.Context, c *redis.Client) error {
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ping(pingCtx).Err(); err != nil {
		return fmt.Errorf("redis: ping %s: %w", c, err)
	}
	return nil
}

// ParseURL turns a single-server redis:// or rediss:// URL into client options with short
// timeouts: Redis is a cache and a queue here, and a slow Redis must degrade a request, not
// hang it.
func ParseURL(url string) (*redis.Options, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis: parse url: %w", err)
	}
	opts.DialTimeout = dialTimeout
	opts.ReadTimeout, opts.WriteTimeout = ioTimeout, ioTimeout
	opts.MaxRetries = 1
	// During an outage every call would otherwise redial five times, 100 ms apart.
	opts.DialerRetries, opts.DialerRetryTimeout = 1, 10*time.Millisecond
	return opts, nil
}

const (
	dialTimeout = 2 * time.Second
	ioTimeout   = time.Second
)

// Prefix namespaces every key the application writes (cache, rate limits, denylist, locks).
// Production uses DefaultPrefix; tests use a fresh prefix each so they never share keys.
type Prefix string

// DefaultPrefix is the namespace of a deployment.
const DefaultPrefix Prefix = "dispatch:"

// Key joins the prefix and parts with ':'.
func (p Prefix) Key(parts ...string) string {
	n := len(p)
	for _, s := range parts {
		n += len(s) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, p...)
	for i, s := range parts {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, s...)
	}
	return string(b)
}

// Durability describes what Redis keeps across a restart.
type Durability struct {
	AppendOnly bool   // AOF on
	SavePoints string // RDB snapshot rules ("" for none; "?" when CONFIG is not allowed)
}

// Persistent reports whether anything survives a restart.
func (d Durability) Persistent() bool {
	return d.AppendOnly || (d.SavePoints != "" && d.SavePoints != "?")
}

// ReadDurability asks Redis how it persists. Managed services that forbid CONFIG still answer
// INFO, which tells about AOF.
func ReadDurability(ctx context.Context, rdb redis.UniversalClient) (Durability, error) {
	info, err := rdb.Info(ctx, "persistence").Result()
	if err != nil {
		return Durability{}, err
	}
	d := Durability{AppendOnly: strings.Contains(info, "aof_enabled:1"), SavePoints: "?"}
	if cfg, err := rdb.ConfigGet(ctx, "save").Result(); err == nil {
		d.SavePoints = cfg["save"]
	}
	return d, nil
}
