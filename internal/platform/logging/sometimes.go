package logging

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// OutageEvery is how often the lines logged on every request during an outage are written.
const OutageEvery = 10 * time.Second

// Sometimes returns a logger that writes each message at most once per interval. It is for the
// lines a component would write on every request or wake-up while a backing service is away
// (a cache or denylist fallback, a refused request): one line per request floods the log
// during an outage and, since warnings are flushed at once, costs a write each. The next line
// written of a message says how many were left out ("suppressed"). A line's "code" attribute, if
// any, is part of what makes it the same line: a 503 for Stripe is not held back by one for
// PostgreSQL.
func Sometimes(log *slog.Logger, every time.Duration) *slog.Logger {
	return slog.New(sometimes{next: log.Handler(), every: every, seen: &seen{last: map[string]seenMessage{}}})
}

type sometimes struct {
	next  slog.Handler
	every time.Duration
	seen  *seen // shared by the loggers derived with With
}

type seen struct {
	mu   sync.Mutex
	last map[string]seenMessage // by message and code: the callers log constant messages
}

type seenMessage struct {
	at         time.Time
	suppressed int
}

func (h sometimes) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h sometimes) Handle(ctx context.Context, r slog.Record) error {
	at := r.Time
	if at.IsZero() {
		at = time.Now()
	}
	key := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "code" {
			key += "\x00" + a.Value.String()
			return false
		}
		return true
	})
	h.seen.mu.Lock()
	m := h.seen.last[key]
	if !m.at.IsZero() && at.Sub(m.at) < h.every {
		m.suppressed++
		h.seen.last[key] = m
		h.seen.mu.Unlock()
		return nil
	}
	h.seen.last[key] = seenMessage{at: at}
	h.seen.mu.Unlock()
	if m.suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", m.suppressed))
	}
	return h.next.Handle(ctx, r)
}

func (h sometimes) WithAttrs(attrs []slog.Attr) slog.Handler {
	return sometimes{next: h.next.WithAttrs(attrs), every: h.every, seen: h.seen}
}

func (h sometimes) WithGroup(name string) slog.Handler {
	return sometimes{next: h.next.WithGroup(name), every: h.every, seen: h.seen}
}
