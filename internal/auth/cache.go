package auth

import (
	"sync"
	"time"
)

// cacheCap bounds each cache: past it, lapsed entries go, and if that is not enough, all do.
const cacheCap = 10000

// expiring is a small in-process map whose entries lapse at a time of their own.
type expiring[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]expiringEntry[V]
}

type expiringEntry[V any] struct {
	v     V
	until time.Time
}

// get returns the entry of k if it has not lapsed at now.
func (c *expiring[K, V]) get(k K, now time.Time) (V, bool) {
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if !ok || !now.Before(e.until) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// put keeps v for k until the given time.
func (c *expiring[K, V]) put(k K, v V, until, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[K]expiringEntry[V]{}
	}
	if len(c.m) >= cacheCap {
		for key, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, key)
			}
		}
		if len(c.m) >= cacheCap {
			clear(c.m)
		}
	}
	c.m[k] = expiringEntry[V]{v: v, until: until}
}

func (c *expiring[K, V]) drop(k K) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}
