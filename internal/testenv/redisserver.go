package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a redis-server process of a test's own, on a loopback port of its own, with
// its data directory in the test's temporary directory. Tests that kill, restart or fail over
// Redis use it; the shared server of TEST_REDIS_URL is never touched.
type RedisServer struct {
	t    testing.TB
	name string
	bin  string
	Port int
	conf string
	mode []string
	proc *Program
}

// StartRedisServer starts redis-server with the given configuration lines (for example
// "appendonly yes" or "replicaof 127.0.0.1 6400"). Port, bind address and directory are set here.
func StartRedisServer(t testing.TB, name string, conf ...string) *RedisServer {
	return startRedis(t, name, nil, conf)
}

// StartRedisSentinel starts redis-server in Sentinel mode with the given configuration lines
// (for example "sentinel monitor mymaster 127.0.0.1 6400 2").
func StartRedisSentinel(t testing.TB, name string, conf ...string) *RedisServer {
	return startRedis(t, name, []string{"--sentinel"}, conf)
}

func startRedis(t testing.TB, name string, mode, conf []string) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("testenv: redis-server is not installed: %v", err)
	}
	dir := t.TempDir()
	port := FreePort(t)
	lines := append([]string{
		"bind 127.0.0.1",
		fmt.Sprintf("port %d", port),
		"dir " + dir,
		"save \"\"",
		"protected-mode no",
	}, conf...)
	path := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &RedisServer{t: t, name: name, bin: bin, Port: port, conf: path, mode: mode}
	s.Start()
	return s
}

// Addr is host:port of the server.
func (s *RedisServer) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.Port) }

// URL is a redis:// URL of the server's database 0.
func (s *RedisServer) URL() string { return "redis://" + s.Addr() + "/0" }

// Start runs the server (again, after Kill) with the same port, configuration and data
// directory, and waits until it answers PING.
func (s *RedisServer) Start() {
	s.t.Helper()
	args := append([]string{s.conf}, s.mode...)
	s.proc = StartProgram(s.t, s.name, s.bin, os.Environ(), args...)
	Eventually(s.t, 15*time.Second, s.name+" answers PING", func() bool {
		if !s.proc.Running() {
			s.t.Fatalf("%s exited: %v\n%s", s.name, s.proc.Err(), s.proc.Output(4000))
		}
		c := redis.NewClient(&redis.Options{Addr: s.Addr(), DialTimeout: 200 * time.Millisecond})
		defer c.Close()
		return c.Ping(context.Background()).Err() == nil
	})
}

// Kill sends SIGKILL and waits for the process to end: what it had not written to disk is lost.
func (s *RedisServer) Kill() { s.proc.Kill() }

// ForgetData deletes what the stopped server wrote to its directory (RDB and AOF files), so
// that it starts again empty, as a node that lost its disk or never persisted.
func (s *RedisServer) ForgetData() {
	s.t.Helper()
	if s.Running() {
		s.t.Fatalf("%s: ForgetData while running", s.name)
	}
	dir := filepath.Dir(s.conf)
	entries, err := os.ReadDir(dir)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == filepath.Base(s.conf) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			s.t.Fatal(err)
		}
	}
}

// Running reports whether the process is alive.
func (s *RedisServer) Running() bool { return s.proc.Running() }

// Client returns a client of the server, closed when the test ends.
func (s *RedisServer) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { c.Close() })
	return c
}
