package catalog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
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
// Redis failures are logged and degrade to loading from the database. An invalidation Redis
// did not take (it was down, or full) would leave the entries from before the change to be
// served until they expire, so the cache sends it again every second until Redis takes it or
// those entries have expired; until then this process's reads of what it changed skip the
// cache.
type Cache struct {
	rdb  *redis.Client
	keys redisx.Prefix
	ttl  time.Duration
	log  *slog.Logger
	// outage logs what happens on every request while Redis is away, once per
	// logging.OutageEvery.
	outage *slog.Logger

	mu       sync.Mutex
	missed   map[string]time.Time // generation keys not yet bumped, with when their entries expire
	nMissed  atomic.Int32         // len(missed), read without the lock on every cache read
	retrying bool
}

// NewCache returns a cache with entries living ttl.
func NewCache(rdb *redis.Client, keys redisx.Prefix, ttl time.Duration, log *slog.Logger) *Cache {
	return &Cache{rdb: rdb, keys: keys, ttl: ttl, log: log, outage: logging.Sometimes(log, logging.OutageEvery)}
}

const genTTL = 7 * 24 * time.Hour

// bumpScript moves each counter in KEYS on and keeps it ARGV[1] seconds. A counter that is gone
// (expired, or Redis lost its data) starts again at Redis's clock in microseconds, not at 1: an
// entry stored under its old values may still be alive, and must never match again.
var bumpScript = redis.NewScript(`
local t = redis.call('TIME')
local start = t[1] .. string.sub('00000' .. t[2], -6)
for _, k in ipairs(KEYS) do
	if redis.call('EXISTS', k) == 1 then
		redis.call('INCR', k)
	else
		redis.call('SET', k, start)
	end
	redis.call('EXPIRE', k, ARGV[1])
end
return 0
`)

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
	keys := append(c.genKeys(ids), c.keys.Key("items", "gen"))
	if err := c.bump(ctx, keys); err != nil {
		c.outage.ErrorContext(ctx, "item cache invalidation failed; sending it again until Redis takes it",
			"err", err, "items", len(ids))
		c.miss(keys)
	}
}

// bump moves the generation counters of keys on.
func (c *Cache) bump(ctx context.Context, keys []string) error {
	return bumpScript.Run(ctx, c.rdb, keys, int64(genTTL/time.Second)).Err()
}

// retryEvery is how often missed invalidations are sent again.
const retryEvery = time.Second

// miss records generation keys whose bump failed and makes sure they are sent again.
func (c *Cache) miss(keys []string) {
	expire := time.Now().Add(c.ttl)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.missed == nil {
		c.missed = map[string]time.Time{}
	}
	for _, k := range keys {
		c.missed[k] = expire
	}
	c.nMissed.Store(int32(len(c.missed)))
	if !c.retrying {
		c.retrying = true
		go c.resend()
	}
}

// resend bumps the missed keys every retryEvery until none is left: bumped, or past the time
// the entries it retires expire anyway.
func (c *Cache) resend() {
	for {
		time.Sleep(retryEvery)
		c.mu.Lock()
		now, due := time.Now(), map[string]time.Time{}
		for k, expire := range c.missed {
			if now.After(expire) {
				delete(c.missed, k)
			} else {
				due[k] = expire
			}
		}
		c.nMissed.Store(int32(len(c.missed)))
		if len(due) == 0 {
			c.retrying = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		keys := make([]string, 0, len(due))
		for k := range due {
			keys = append(keys, k)
		}
		ctx, cancel := context.WithTimeout(context.Background(), retryEvery)
		err := c.bump(ctx, keys)
		cancel()
		if err != nil {
			continue
		}
		c.log.Info("item cache invalidation sent again", "keys", len(keys))
		c.mu.Lock()
		for k, expire := range due {
			if c.missed[k].Equal(expire) { // not missed again meanwhile
				delete(c.missed, k)
			}
		}
		c.nMissed.Store(int32(len(c.missed)))
		c.mu.Unlock()
	}
}

// stale reports whether genKey's bump is still owed, so its entries must not be served.
func (c *Cache) stale(genKey string) bool {
	if c.nMissed.Load() == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, owed := c.missed[genKey]
	return owed
}

func (c *Cache) genKeys(ids []uuid.UUID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = c.keys.Key("items", "gen", id.String())
	}
	return out
}

func (c *Cache) get(ctx context.Context, kind, genKey, key string, load func() ([]byte, error)) ([]byte, error) {
	if c.stale(genKey) {
		metrics.Cache(kind, false)
		return load()
	}
	vals, err := c.rdb.MGet(ctx, genKey, key).Result()
	if err != nil {
		c.outage.WarnContext(ctx, "item cache unavailable; reading the database", "err", err)
		metrics.Cache(kind, false)
		return load()
	}
	gen := "0"
	if s, ok := vals[0].(string); ok {
		gen = s
	}
	if s, ok := vals[1].(string); ok {
		if g, body, found := bytes.Cut([]byte(s), []byte{'|'}); found && string(g) == gen {
			metrics.Cache(kind, true)
			return body, nil
		}
	}
	metrics.Cache(kind, false)
	body, err := load()
	if err != nil {
		return nil, err
	}
	entry := make([]byte, 0, len(gen)+1+len(body))
	entry = append(append(append(entry, gen...), '|'), body...)
	if err := c.rdb.Set(ctx, key, entry, c.ttl).Err(); err != nil {
		c.outage.WarnContext(ctx, "item cache write failed", "err", err)
	}
	return body, nil
}
