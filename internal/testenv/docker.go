package testenv

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ory/dockertest/v3"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// containers are started at most once per test process and expire on their own, since a test
// binary has no hook that runs after its last test.
type containers struct{ pool *dockertest.Pool }

const containerLifetime = 30 * 60 // seconds

var (
	dockerOnce sync.Once
	dockerPool *containers
	dockerErr  error
)

func docker() (*containers, error) {
	dockerOnce.Do(func() {
		pool, err := dockertest.NewPool("")
		if err != nil {
			dockerErr = err
			return
		}
		if err := pool.Client.Ping(); err != nil {
			dockerErr = err
			return
		}
		pool.MaxWait = 2 * time.Minute
		dockerPool = &containers{pool: pool}
	})
	return dockerPool, dockerErr
}

func (c *containers) postgres() (string, error) {
	r, err := c.pool.Run("postgres", "16-alpine", []string{"POSTGRES_HOST_AUTH_METHOD=trust"})
	if err != nil {
		return "", fmt.Errorf("start postgres: %w", err)
	}
	_ = r.Expire(containerLifetime)
	url := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", r.GetHostPort("5432/tcp"))
	err = c.pool.Retry(func() error {
		db, err := postgres.Open(context.Background(), url, 1)
		if err == nil {
			db.Close()
		}
		return err
	})
	return url, err
}

func (c *containers) redis() (string, error) {
	r, err := c.pool.Run("redis", "7-alpine", nil)
	if err != nil {
		return "", fmt.Errorf("start redis: %w", err)
	}
	_ = r.Expire(containerLifetime)
	url := fmt.Sprintf("redis://%s/0", r.GetHostPort("6379/tcp"))
	err = c.pool.Retry(func() error {
		opts, _ := redis.ParseURL(url)
		cl := redis.NewClient(opts)
		defer cl.Close()
		return cl.Ping(context.Background()).Err()
	})
	return url, err
}

func (c *containers) stripeMock() (string, error) {
	r, err := c.pool.Run("stripe/stripe-mock", "v0.203.0", nil)
	if err != nil {
		return "", fmt.Errorf("start stripe-mock: %w", err)
	}
	_ = r.Expire(containerLifetime)
	url := "http://" + r.GetHostPort("12111/tcp")
	return url, c.pool.Retry(func() error { return probeStripe(url) })
}
