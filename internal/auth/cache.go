package auth

import (
	"sync"
	"time"
)

// cacheCap bounds each cache: past it, lapsed entries go, and if that is not enough, all do.
const cacheCap = 10000

// expiring is a small in-process map whose entries lapse at a time of their own. As a cache
// (the zero value) it holds at most cacheCap entries and may forget live ones to stay there.
// With keepAll (the denylist's copy, which must not forget a session before it lapses) it is
// unbounded, and sweeps its lapsed entries each time it has doubled since the last sweep.
type expiring[K comparable, V any] struct {
	keepAll bool

	mu    sync.Mutex
	m     map[K]expiringEntry[V]
	swept int // entries left by the last sweep (keepAll)
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
	switch {
	case c.keepAll && len(c.m) > 2*c.swept+1024:
		c.sweep(now)
		c.swept = len(c.m)
	case !c.keepAll && len(c.m) >= cacheCap:
		if c.sweep(now); len(c.m) >= cacheCap {
			clear(c.m)
		}
	}
	c.m[k] = expiringEntry[V]{v: v, until: until}
}

func (c *expiring[K, V]) sweep(now time.Time) {
	for k, e := range c.m {
		if !now.Before(e.until) {
			delete(c.m, k)
		}
	}
}

func (c *expiring[K, V]) drop(k K) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}

// dropIf forgets the entries whose value matches.
func (c *expiring[K, V]) dropIf(match func(V) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if match(e.v) {
			delete(c.m, k)
		}
	}
}
