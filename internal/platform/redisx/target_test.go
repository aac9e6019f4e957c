package redisx_test

import (
	"strings"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/redisx"
)

func TestParseSentinelURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		url                          string
		master                       string
		addrs                        []string
		db                           int
		user, password               string
		sentinelUser, sentinelPasswd string
	}{
		{url: "redis-sentinel://s1:26379,s2:26380,s3:26381/0?master=mymaster", master: "mymaster",
			addrs: []string{"s1:26379", "s2:26380", "s3:26381"}},
		{url: "redis-sentinel://:secret@10.0.0.1:5000,10.0.0.2/3?master=orders", master: "orders",
			addrs: []string{"10.0.0.1:5000", "10.0.0.2:26379"}, db: 3, password: "secret"},
		{url: "redis-sentinel://app:p%40ss@s1?master=m&sentinel_username=sen&sentinel_password=s%26p", master: "m",
			addrs: []string{"s1:26379"}, user: "app", password: "p@ss", sentinelUser: "sen", sentinelPasswd: "s&p"},
		{url: "redis-sentinel://[::1]:26379,[fe80::1],s3:1/?master=m", master: "m",
			addrs: []string{"[::1]:26379", "[fe80::1]:26379", "s3:1"}},
	} {
		target, err := redisx.Parse(c.url)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.url, err)
			continue
		}
		f := target.Failover
		if f == nil || target.Server != nil {
			t.Errorf("Parse(%q) = %+v, want a Sentinel target", c.url, target)
			continue
		}
		if f.MasterName != c.master || strings.Join(f.SentinelAddrs, " ") != strings.Join(c.addrs, " ") || f.DB != c.db ||
			f.Username != c.user || f.Password != c.password || f.SentinelUsername != c.sentinelUser || f.SentinelPassword != c.sentinelPasswd {
			t.Errorf("Parse(%q): master %q, sentinels %v, db %d, user %q/%q, sentinel user %q/%q", c.url, f.MasterName,
				f.SentinelAddrs, f.DB, f.Username, f.Password, f.SentinelUsername, f.SentinelPassword)
		}
		// The same short timeouts as a single server's.
		if f.DialTimeout != 2*time.Second || f.ReadTimeout != time.Second || f.WriteTimeout != time.Second || f.MaxRetries != 1 {
			t.Errorf("Parse(%q): timeouts %s/%s/%s, retries %d", c.url, f.DialTimeout, f.ReadTimeout, f.WriteTimeout, f.MaxRetries)
		}
	}
}

func TestParseSingleServerURL(t *testing.T) {
	t.Parallel()
	target, err := redisx.Parse("rediss://:pw@cache:6380/2")
	if err != nil {
		t.Fatal(err)
	}
	s := target.Server
	if s == nil || target.Failover != nil || s.Addr != "cache:6380" || s.DB != 2 || s.Password != "pw" || s.TLSConfig == nil ||
		s.ReadTimeout != time.Second || s.MaxRetries != 1 {
		t.Fatalf("Parse(rediss://…) = %+v", target)
	}
}

func TestParseRefusesBadURLs(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]string{
		"redis-sentinel://s1,s2,s3/0":                         "?master=",
		"redis-sentinel://s1,s2/0?master=":                    "?master=",
		"redis-sentinel:///0?master=m":                        "at least one sentinel",
		"redis-sentinel://s1,,s3/0?master=m":                  "empty sentinel address",
		"redis-sentinel://s1:26379,s1:26379/0?master=m":       "listed twice",
		"redis-sentinel://s1:abc/0?master=m":                  "no valid port",
		"redis-sentinel://s1:70000/0?master=m":                "no valid port",
		"redis-sentinel://s1:/0?master=m":                     "no valid port",
		"redis-sentinel://:26379/0?master=m":                  "no host",
		"redis-sentinel://::1/0?master=m":                     "not host or host:port",
		"redis-sentinel://s1/zero?master=m":                   "not a number",
		"redis-sentinel://s1/0?master=m&mastr=n":              `unknown parameter "mastr"`,
		"redis-sentinel://s1/0?master=m#frag":                 "fragment",
		"sentinel://s1/0?master=m":                            "is not one of redis, rediss, redis-sentinel",
		"not a url":                                           "is not one of",
		"redis://cache:6379/x":                                "invalid database number",
		"redis+sentinel://:pw@s1:26379/mymaster/0":            "is not one of",
		"redis-sentinel://:pw@s1:26379,s2:26379/0?master=m&x": `unknown parameter "x"`,
	} {
		_, err := redisx.Parse(url)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error about %q", url, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("Parse(%q): the error shows the password: %v", url, err)
		}
	}
}

func TestRedactHidesEveryPassword(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"redis://:pw@cache:6379/0":  "redis://:xxxxx@cache:6379/0",
		"redis://user@cache:6379/0": "redis://user@cache:6379/0",
		"redis-sentinel://app:pw@[::1]:26379,s2/1?master=m&sentinel_password=spw": "redis-sentinel://app:xxxxx@[::1]:26379,s2/1?master=m&sentinel_password=xxxxx",
		"redis-sentinel://s1,s2/0?master=m":                                       "redis-sentinel://s1,s2/0?master=m",
	} {
		if got := redisx.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
