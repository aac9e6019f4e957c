package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// denylist holds the revoked sessions whose access tokens may still be presented. Redis keeps
// it as a sorted set of session ids scored by when the last of their access tokens expires,
// and announces every addition on a channel.
//
// An API that follows the channel keeps a copy and checks a request against it without a round
// trip. The copy is used only while it is complete: from the moment the subscription is
// confirmed and the set read after it (so nothing added meanwhile is missed: an addition is
// written before it is announced), until any error on the subscription. Otherwise a request
// asks Redis. Entries are never taken back, only left to lapse, so a copy can be behind but
// never wrong in a session's favour once it has an entry.
type denylist struct {
	rdb     *redis.Client
	key     string // the sorted set
	channel string

	local expiring[uuid.UUID, struct{}] // session → when its entry lapses; kept until then
	live  atomic.Bool
	loads atomic.Int64 // completed reads of the whole set (tests wait on them)
}

func newDenylist(rdb *redis.Client, key, channel string) *denylist {
	return &denylist{rdb: rdb, key: key, channel: channel, local: expiring[uuid.UUID, struct{}]{keepAll: true}}
}

// add puts sessions on the list until the given time: in this process at once, then in Redis,
// then announced to the other followers.
func (d *denylist) add(ctx context.Context, until time.Time, sids ...uuid.UUID) error {
	d.remember(until, sids...)
	ms := until.UnixMilli()
	members := make([]redis.Z, len(sids))
	var msg strings.Builder
	msg.WriteString(strconv.FormatInt(ms, 10))
	for i, sid := range sids {
		members[i] = redis.Z{Score: float64(ms), Member: sid.String()}
		msg.WriteString(" " + sid.String())
	}
	pipe := d.rdb.Pipeline()
	pipe.ZAdd(ctx, d.key, members...)
	pipe.ZRemRangeByScore(ctx, d.key, "-inf", strconv.FormatInt(time.Now().UnixMilli(), 10))
	pipe.Publish(ctx, d.channel, msg.String())
	_, err := pipe.Exec(ctx)
	return err
}

// has reports whether sid is on the list at now, from the copy while it is complete, else from
// Redis.
func (d *denylist) has(ctx context.Context, sid uuid.UUID, now time.Time) (bool, error) {
	if d.live.Load() {
		_, ok := d.local.get(sid, now)
		return ok, nil
	}
	score, err := d.rdb.ZScore(ctx, d.key, sid.String()).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return now.UnixMilli() < int64(score), nil
}

// remember puts sessions in the copy until the given time, replacing an entry's time: any time
// given for a session is at least its first denial plus the access tokens' lifetime, which
// outlives every token of the session (none is issued once it is revoked).
func (d *denylist) remember(until time.Time, sids ...uuid.UUID) {
	now := time.Now()
	for _, sid := range sids {
		d.local.put(sid, struct{}{}, until, now)
	}
}

// followPing is how long a quiet subscription waits before it pings Redis; a ping unanswered
// for as long again ends it, so a connection that died without a word is noticed.
const followPing = 5 * time.Second

// follow keeps the copy until ctx ends, subscribing again after any failure.
func (d *denylist) follow(ctx context.Context, log *slog.Logger) {
	const first = 100 * time.Millisecond
	wait := first
	for {
		wasLive, err := d.subscription(ctx)
		d.live.Store(false)
		if ctx.Err() != nil {
			return
		}
		if wasLive {
			wait = first
		}
		log.Warn("denylist subscription lost; requests ask Redis until it is back", "err", err, "retryIn", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// subscription follows the channel on one connection until it fails, and tells whether the
// copy was complete on the way.
func (d *denylist) subscription(ctx context.Context) (wasLive bool, err error) {
	ps := d.rdb.Subscribe(ctx, d.channel)
	defer ps.Close()
	// A read waiting for the next message does not watch ctx; closing the subscription ends it.
	defer context.AfterFunc(ctx, func() { ps.Close() })()
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, followPing)
		var timeout interface{ Timeout() bool }
		switch {
		case err != nil && errors.As(err, &timeout) && timeout.Timeout() && !pinged && ctx.Err() == nil:
			if err := ps.Ping(ctx); err != nil {
				return wasLive, err
			}
			pinged = true
			continue
		case err != nil:
			return wasLive, err
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if err := d.load(ctx); err != nil {
				return wasLive, err
			}
			d.live.Store(true)
			wasLive = true
		case *redis.Message:
			if err := d.apply(m.Payload); err != nil {
				return wasLive, err
			}
		}
	}
}

// load adds every entry of the set that has not lapsed to the copy.
func (d *denylist) load(ctx context.Context) error {
	entries, err := d.rdb.ZRangeByScoreWithScores(ctx, d.key, &redis.ZRangeBy{
		Min: "(" + strconv.FormatInt(time.Now().UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil {
		return err
	}
	for _, e := range entries {
		sid, err := uuid.Parse(fmt.Sprint(e.Member))
		if err != nil {
			continue // not a session id: not ours to honour
		}
		d.remember(time.UnixMilli(int64(e.Score)), sid)
	}
	d.loads.Add(1)
	return nil
}

// apply adds an announced entry ("<until, unix ms> <session id>…") to the copy. One it
// cannot read makes the copy incomplete.
func (d *denylist) apply(payload string) error {
	fields := strings.Fields(payload)
	if len(fields) < 2 {
		return fmt.Errorf("denylist announcement %q unreadable", payload)
	}
	ms, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil {
		return fmt.Errorf("denylist announcement %q unreadable: %w", payload, err)
	}
	sids := make([]uuid.UUID, 0, len(fields)-1)
	for _, f := range fields[1:] {
		sid, err := uuid.Parse(f)
		if err != nil {
			return fmt.Errorf("denylist announcement %q unreadable: %w", payload, err)
		}
		sids = append(sids, sid)
	}
	d.remember(time.UnixMilli(ms), sids...)
	return nil
}
