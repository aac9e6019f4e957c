package redisx

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelScheme is the scheme of a REDIS_URL that finds the master through Redis Sentinel:
//
//	redis-sentinel://[[user]:password@]host1[:port],host2[:port],…[/db]?master=name[&sentinel_username=…][&sentinel_password=…]
//
// The user and password are those of the Redis master and replicas; sentinel_username and
// sentinel_password, when the sentinels require their own, authenticate to the sentinels.
// A host without a port uses DefaultSentinelPort.
const SentinelScheme = "redis-sentinel"

// DefaultSentinelPort is the port of a sentinel address that names none.
const DefaultSentinelPort = "26379"

// Target is where a REDIS_URL points: one server (redis://, rediss://) or the master that a
// set of sentinels names (redis-sentinel://). Exactly one of Server and Failover is set.
type Target struct {
	Server   *redis.Options
	Failover *redis.FailoverOptions
}

// Parse reads a REDIS_URL in any of its forms. Both forms get the same short timeouts.
func Parse(raw string) (Target, error) {
	scheme, _, _ := strings.Cut(raw, "://")
	switch scheme {
	case "redis", "rediss":
		opts, err := ParseURL(raw)
		if err != nil {
			return Target{}, err
		}
		return Target{Server: opts}, nil
	case SentinelScheme:
		opts, err := parseSentinelURL(raw)
		if err != nil {
			return Target{}, fmt.Errorf("redis: parse url: %w", err)
		}
		return Target{Failover: opts}, nil
	default:
		return Target{}, fmt.Errorf("redis: parse url: scheme %q is not one of redis, rediss, %s", scheme, SentinelScheme)
	}
}

// NewClient returns a client of the target. A Sentinel target's client asks the sentinels
// for the master on every new connection and drops its connections when they announce a new
// one, so whoever holds it (cache, rate limiter, denylist, locks, queues) follows a failover.
func (t Target) NewClient() *redis.Client {
	if t.Failover != nil {
		return redis.NewFailoverClient(t.Failover)
	}
	return redis.NewClient(t.Server)
}

// String names the target without credentials, for logs and errors.
func (t Target) String() string {
	if f := t.Failover; f != nil {
		return fmt.Sprintf("master %q of sentinels %s (db %d)", f.MasterName, strings.Join(f.SentinelAddrs, ","), f.DB)
	}
	return fmt.Sprintf("%s (db %d)", t.Server.Addr, t.Server.DB)
}

// The query parameters a Sentinel URL may carry.
const (
	paramMaster           = "master"
	paramSentinelUsername = "sentinel_username"
	paramSentinelPassword = "sentinel_password"
)

// parseSentinelURL reads a redis-sentinel:// URL. The host list is split by hand: net/url
// does not accept several hosts when one of them is an IPv6 literal.
func parseSentinelURL(raw string) (*redis.FailoverOptions, error) {
	rest := strings.TrimPrefix(raw, SentinelScheme+"://")
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	userinfo, hosts := "", authority
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		userinfo, hosts = authority[:i+1], authority[i+1:]
	}
	addrs, err := sentinelAddrs(hosts)
	if err != nil {
		return nil, err
	}
	// What is left is an ordinary URL around a placeholder host.
	u, err := url.Parse(SentinelScheme + "://" + userinfo + "sentinels" + tail)
	if err != nil {
		return nil, err
	}
	if u.Fragment != "" {
		return nil, errors.New("a Sentinel URL has no #fragment")
	}
	db, err := dbNumber(u.Path)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	for k := range q {
		if k != paramMaster && k != paramSentinelUsername && k != paramSentinelPassword {
			return nil, fmt.Errorf("unknown parameter %q (a Sentinel URL takes %s, %s and %s)", k, paramMaster, paramSentinelUsername, paramSentinelPassword)
		}
	}
	master := q.Get(paramMaster)
	if master == "" {
		return nil, errors.New("a Sentinel URL needs ?master=<name>, the name the sentinels monitor the master under")
	}
	opts := &redis.FailoverOptions{
		MasterName: master, SentinelAddrs: addrs, DB: db,
		SentinelUsername: q.Get(paramSentinelUsername), SentinelPassword: q.Get(paramSentinelPassword),
		DialTimeout: dialTimeout, ReadTimeout: ioTimeout, WriteTimeout: ioTimeout, MaxRetries: 1,
		DialerRetries: 1, DialerRetryTimeout: 10 * time.Millisecond,
	}
	if u.User != nil {
		opts.Username = u.User.Username()
		opts.Password, _ = u.User.Password()
	}
	return opts, nil
}

// sentinelAddrs splits a comma-separated host list into host:port addresses.
func sentinelAddrs(hosts string) ([]string, error) {
	if hosts == "" {
		return nil, errors.New("a Sentinel URL needs at least one sentinel address (host:port,host:port,…)")
	}
	var addrs []string
	seen := map[string]bool{}
	for _, h := range strings.Split(hosts, ",") {
		addr, err := sentinelAddr(h)
		if err != nil {
			return nil, err
		}
		if seen[addr] {
			return nil, fmt.Errorf("sentinel %s is listed twice", addr)
		}
		seen[addr] = true
		addrs = append(addrs, addr)
	}
	return addrs, nil
}

func sentinelAddr(h string) (string, error) {
	if h == "" {
		return "", errors.New("empty sentinel address in the host list")
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		// No port: the default one ("[::1]" is an IPv6 literal without a port).
		host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), DefaultSentinelPort
		if strings.ContainsAny(host, "[]") || (strings.Contains(host, ":") && !strings.HasPrefix(h, "[")) {
			return "", fmt.Errorf("sentinel address %q is not host or host:port", h)
		}
	}
	if host == "" {
		return "", fmt.Errorf("sentinel address %q has no host", h)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("sentinel address %q has no valid port", h)
	}
	return net.JoinHostPort(host, port), nil
}

// dbNumber reads the database number of a URL path ("", "/" or "/<n>").
func dbNumber(path string) (int, error) {
	p := strings.TrimPrefix(path, "/")
	if p == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("database %q is not a number", p)
	}
	return n, nil
}

// Redact returns a REDIS_URL of any form with its passwords (the user's and the sentinels')
// replaced by xxxxx, for logs.
func Redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		if user, _, hasPassword := strings.Cut(authority[:i], ":"); hasPassword {
			authority = user + ":xxxxx" + authority[i:]
		}
	}
	if path, query, ok := strings.Cut(tail, "?"); ok {
		if q, err := url.ParseQuery(query); err == nil && q.Has(paramSentinelPassword) {
			q.Set(paramSentinelPassword, "xxxxx")
			tail = path + "?" + q.Encode()
		} else if err != nil {
			tail = path + "?…" // unparsable: show none of it
		}
	}
	return scheme + "://" + authority + tail
}
