package testenv

import (
	"context"
	"fmt"
	"testing"
)

func TestRedisServerKeepsItsAppendOnlyFileOverAKill(t *testing.T) {
	s := StartRedisServer(t, "redis", "appendonly yes", "appendfsync always")
	ctx := context.Background()
	c := s.Client()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	s.Start()
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("after restart k = %q, %v; want v", v, err)
	}
}

func TestRedisSentinelSeesItsMaster(t *testing.T) {
	m := StartRedisServer(t, "master")
	s := StartRedisSentinel(t, "sentinel", fmt.Sprintf("sentinel monitor m 127.0.0.1 %d 1", m.Port))
	addr, err := s.Client().Do(context.Background(), "SENTINEL", "get-master-addr-by-name", "m").StringSlice()
	if err != nil || len(addr) != 2 || addr[1] != fmt.Sprint(m.Port) {
		t.Fatalf("sentinel names master %v, %v; want port %d", addr, err, m.Port)
	}
}
