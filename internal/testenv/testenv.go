// Package testenv gives tests real PostgreSQL, Redis and stripe-mock.
//
// It uses TEST_DATABASE_URL, TEST_REDIS_URL and TEST_STRIPE_URL when set (CI and the local
// services), otherwise starts containers with dockertest when a Docker engine answers (see
// docker.go: they are removed when the test process ends), and otherwise fails the test saying
// how to provide them. stripe-mock may also come from its binary on PATH or in GOPATH/bin,
// except with TEST_DOCKER=1, which puts every service not given by URL in a container (make
// test-docker).
//
// Isolation: every test gets its own database, created from a template migrated once per
// migration set, and its own Redis key prefix, so tests run in parallel without sharing state
// and nobody flushes a shared Redis.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq" // the postgres driver
)

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

const howTo = `testenv: no %s available.
Set %s (e.g. %s), or run a Docker engine so that dockertest can start one.
On the development machines: make test (it exports the URLs of the local services).`

var (
	urlsOnce sync.Once
	urls     struct {
		pg, redis string
		err       error
	}
)

// serviceURLs resolves the Postgres and Redis URLs once per test process.
func serviceURLs() (pg, redis string, err error) {
	urlsOnce.Do(func() {
		urls.pg, urls.redis = os.Getenv("TEST_DATABASE_URL"), os.Getenv("TEST_REDIS_URL")
		if urls.pg != "" && urls.redis != "" {
			return
		}
		d, derr := docker()
		if derr != nil {
			switch {
			case urls.pg == "":
				urls.err = fmt.Errorf(howTo+"\n(docker: %v)", "PostgreSQL", "TEST_DATABASE_URL",
					"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", derr)
			default:
				urls.err = fmt.Errorf(howTo+"\n(docker: %v)", "Redis", "TEST_REDIS_URL", "redis://127.0.0.1:6379/0", derr)
			}
			return
		}
		if urls.pg == "" {
			if urls.pg, urls.err = d.postgres(); urls.err != nil {
				return
			}
		}
		if urls.redis == "" {
			urls.redis, urls.err = d.redis()
		}
	})
	return urls.pg, urls.redis, urls.err
}

// dockerWanted reports TEST_DOCKER=1.
func dockerWanted() bool { return os.Getenv("TEST_DOCKER") == "1" }

// Context returns a context cancelled when the test ends.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// Eventually polls cond every 20 ms until it holds or timeout passes, then fails with msg.
// It waits on asynchronous work; it asserts nothing about speed.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached within %s: %s", timeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Watchdog ends the whole run with every goroutine's stack when t is still running after d:
// a test whose failure is a deadlock would otherwise hang until the package's timeout and
// show nothing of where it was stuck. what says what was stuck.
func Watchdog(t testing.TB, d time.Duration, what string) {
	timer := time.AfterFunc(d, func() {
		debug.SetTraceback("all")
		panic(fmt.Sprintf("%s is stuck after %s", what, d))
	})
	t.Cleanup(func() { timer.Stop() })
}
