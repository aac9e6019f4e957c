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
// failed breakerThreshold calls in a row, the client answers outage.ErrSkipped at once, but for
// one trial at a time, breakerCooldown after the last. For the API, whose every use of Redis (rate limits, the
// item cache, the denylist) has a fallback: a stalled Redis then costs a few requests the client's
// timeout, not every request. Subscriptions are not covered; they watch their own connection.
func FailFast(c *redis.Client, log *slog.Logger) *outage.Breaker {
	return FailFastWith(c, outage.NewBreaker("redis", breakerThreshold, breakerCooldown, log))
}

// FailFastWith is FailFast with a breaker of the caller's.
func FailFastWith(c *redis.Client, b *outage.Breaker) *outage.Breaker {
	c.AddHook(breakerHook{b})
	return b
}

const (
	breakerThreshold = 3
	breakerCooldown  = time.Second
)

type breakerHook struct{ b *outage.Breaker }

// inCall marks the context of a call the breaker let go: go-redis runs the handshake of a
// connection the call opens through the same hooks, and that is part of the call, not another.
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
