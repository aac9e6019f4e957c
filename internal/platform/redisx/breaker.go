package redisx

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/outage"
)

// FailFast puts a breaker in front of c's commands and pipelines and returns it: once Redis has
// failed breakerThreshold calls in a row, the client answers outage.ErrSkipped at once, and a
// PING every breakerCooldown finds out when Redis is back. For the API, whose every use of Redis
// (rate limits, the item cache, the denylist) has a fallback: a stalled Redis then costs the
// first requests the client's timeout, not every request. Subscriptions are not covered; they
// watch their own connection.
func FailFast(c *redis.Client, log *slog.Logger) *outage.Breaker {
	return FailFastWith(c, breakerThreshold, breakerCooldown, log)
}

// FailFastWith is FailFast with a threshold and a cooldown of the caller's.
func FailFastWith(c *redis.Client, threshold int, cooldown time.Duration, log *slog.Logger) *outage.Breaker {
	ping := func(ctx context.Context) error {
		err := c.Ping(context.WithValue(ctx, inCall{}, true)).Err()
		if errors.Is(err, redis.ErrClosed) {
			return nil // closed, the client has no calls left to protect: the probe ends
		}
		return err
	}
	b := outage.NewBreaker("redis", threshold, cooldown, ping, log)
	c.AddHook(breakerHook{b})
	return b
}

const (
	breakerThreshold = 3
	breakerCooldown  = time.Second
)

type breakerHook struct{ b *outage.Breaker }

// inCall marks the context of a call the breaker let go (or its probe): go-redis runs the
// handshake of a connection the call opens through the same hooks, and that is part of the
// call, not another.
type inCall struct{}

func (h breakerHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h breakerHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if ctx.Value(inCall{}) != nil {
			return next(ctx, cmd)
		}
		err := h.b.Do(ctx, func() error { return next(context.WithValue(ctx, inCall{}, true), cmd) })
		if errors.Is(err, outage.ErrSkipped) {
			cmd.SetErr(err)
		}
		return err
	}
}

func (h breakerHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if ctx.Value(inCall{}) != nil {
			return next(ctx, cmds)
		}
		err := h.b.Do(ctx, func() error { return next(context.WithValue(ctx, inCall{}, true), cmds) })
		if errors.Is(err, outage.ErrSkipped) {
			for _, cmd := range cmds {
				cmd.SetErr(err)
			}
		}
		return err
	}
}
