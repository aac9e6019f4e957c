package catalog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/redisx"
)

// Cache is the cache-aside for rendered item reads, one entry per view (public, admin) per
// item or list query.
//
// Invalidation uses generation counters instead of deleting keys (and never KEYS): each item
// has a counter and all lists share one. An entry stores the generation it was read under and
// counts only while that generation is current, so a reader that loaded old rows while a writer
// committed can at worst store an entry nobody will accept. A read is one MGET.
//
// Redis failures are logged and degrade to loading from the database.
type Cache struct {
	rdb  *redis.Client
	keys redisx.Prefix
	ttl  time.Duration
	log  *slog.Logger
	// Hit and Miss are called on every lookup (metrics); nil means nothing to do.
	Hit, Miss func(kind string)
}

// NewCache returns a cache with entries living ttl.
func NewCache(rdb *redis.Client, keys redisx.Prefix, ttl time.Duration, log *slog.Logger) *Cache {
	return &Cache{rdb: rdb, keys: keys, ttl: ttl, log: log}
}

const genTTL = 7 * 24 * time.Hour

// Item returns the rendered view of one item, calling load on a miss.
func (c *Cache) Item(ctx context.Context, view string, id uuid.UUID, load func() ([]byte, error)) ([]byte, error) {
	return c.get(ctx, "item", c.keys.Key("items", "gen", id.String()), c.keys.Key("items", view, id.String()), load)
}

// List returns a rendered list page; query identifies the filters and position.
func (c *Cache) List(ctx context.Context, view, query string, load func() ([]byte, error)) ([]byte, error) {
	sum := sha256.Sum256([]byte(query))
	return c.get(ctx, "list", c.keys.Key("items", "gen"), c.keys.Key("items", "list", view, hex.EncodeToString(sum[:16])), load)
}

// Invalidate retires the entries of the given items and every list. Call it after the commit
// of any change to items, before answering.
func (c *Cache) Invalidate(ctx context.Context, ids ...uuid.UUID) {
	pipe := c.rdb.Pipeline()
	for _, key := range append(c.genKeys(ids), c.keys.Key("items", "gen")) {
		pipe.Incr(ctx, key)
		pipe.Expire(ctx, key, genTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		c.log.ErrorContext(ctx, "item cache invalidation failed; entries may be stale until they expire",
			"err", err, "items", len(ids))
	}
}

func (c *Cache) genKeys(ids []uuid.UUID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = c.keys.Key("items", "gen", id.String())
	}
	return out
}

func (c *Cache) get(ctx context.Context, kind, genKey, key string, load func() ([]byte, error)) ([]byte, error) {
	vals, err := c.rdb.MGet(ctx, genKey, key).Result()
	if err != nil {
		c.log.WarnContext(ctx, "item cache unavailable; reading the database", "err", err)
		c.count(c.Miss, kind)
		return load()
	}
	gen := "0"
	if s, ok := vals[0].(string); ok {
		gen = s
	}
	if s, ok := vals[1].(string); ok {
		if g, body, found := bytes.Cut([]byte(s), []byte{'|'}); found && string(g) == gen {
			c.count(c.Hit, kind)
			return body, nil
		}
	}
	c.count(c.Miss, kind)
	body, err := load()
	if err != nil {
		return nil, err
	}
	entry := make([]byte, 0, len(gen)+1+len(body))
	entry = append(append(append(entry, gen...), '|'), body...)
	if err := c.rdb.Set(ctx, key, entry, c.ttl).Err(); err != nil {
		c.log.WarnContext(ctx, "item cache write failed", "err", err)
	}
	return body, nil
}

func (c *Cache) count(f func(string), kind string) {
	if f != nil {
		f(kind)
	}
}
