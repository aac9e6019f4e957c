package testenv

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ory/dockertest/v3"
	dc "github.com/ory/dockertest/v3/docker"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// The dockertest path: PostgreSQL, Redis and stripe-mock in containers, for machines without
// the local services (or with TEST_DOCKER=1).
//
// A test binary has no hook that runs after its last test, and a TestMain in every package
// that uses testenv would be one more thing to forget. So the containers are tied to the
// process that starts them, their owner, instead of to a hook:
//   - each carries the owner's identity in a label (owner.go), runs with AutoRemove and no
//     restart policy, publishes its port on 127.0.0.1 only and keeps its data on tmpfs, so
//     that no anonymous volume outlives it;
//   - a watcher process, started before the first container, removes the owner's containers
//     as soon as the owner exits, however it exits: end of the tests, panic, timeout, SIGKILL
//     (watcher.go);
//   - before starting any, a test process removes the containers whose owner is gone, should a
//     watcher have been killed as well.
type containers struct {
	pool  *dockertest.Pool
	owner string
}

var (
	dockerOnce sync.Once
	dockerPool *containers
	dockerErr  error
)

// docker connects to the Docker engine once per test process.
func docker() (*containers, error) {
	dockerOnce.Do(func() {
		dockerPool, dockerErr = connectDocker()
	})
	return dockerPool, dockerErr
}

func connectDocker() (*containers, error) {
	pool, err := dockertest.NewPool("")
	if err != nil {
		return nil, err
	}
	if err := pool.Client.Ping(); err != nil {
		return nil, err
	}
	pool.MaxWait = 2 * time.Minute
	c := &containers{pool: pool, owner: self()}
	reapOrphans(pool)
	if err := startWatcher(c.owner); err != nil {
		return nil, fmt.Errorf("testenv: start the container watcher: %w", err)
	}
	return c, nil
}

// service is a container to start and how to tell that it serves.
type service struct {
	repo, tag string
	env, cmd  []string
	port      string   // the one port to publish, as "5432/tcp"
	tmpfs     []string // directories kept in memory instead of volumes
	ready     func(addr string) error
}

// start runs s and waits until it is ready, returning its published host:port. A container
// that never gets ready is removed at once.
//
// The host port is chosen here, not by Docker: Docker's allocator knows only its own bindings,
// so it may hand out a 127.0.0.1 port that another process (or another container's 0.0.0.0
// binding) holds. A port taken between the choice and the binding is retried.
func (c *containers) start(s service) (string, error) {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var addr string
		if addr, err = c.startOnce(s); err == nil || !portTaken(err) {
			return addr, err
		}
	}
	return "", err
}

func (c *containers) startOnce(s service) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	tmpfs := map[string]string{}
	for _, dir := range s.tmpfs {
		tmpfs[dir] = "rw"
	}
	// A name of its own, to remove a container that was created but could not start.
	name := "dispatch-test-" + strings.ReplaceAll(s.repo, "/", "-") + "-" + randomSuffix()
	r, err := c.pool.RunWithOptions(&dockertest.RunOptions{
		Name: name, Repository: s.repo, Tag: s.tag, Env: s.env, Cmd: s.cmd,
		Labels:       map[string]string{ownerLabel: c.owner},
		ExposedPorts: []string{s.port},
		PortBindings: map[dc.Port][]dc.PortBinding{dc.Port(s.port): {{HostIP: "127.0.0.1", HostPort: strconv.Itoa(port)}}},
	}, func(hc *dc.HostConfig) {
		hc.AutoRemove = true
		hc.RestartPolicy = dc.NeverRestart()
		hc.PublishAllPorts = false
		hc.Tmpfs = tmpfs
	})
	if err != nil {
		_ = c.pool.RemoveContainerByName(name)
		return "", fmt.Errorf("start %s:%s: %w", s.repo, s.tag, err)
	}
	addr := r.GetHostPort(s.port)
	if err := c.pool.Retry(func() error { return s.ready(addr) }); err != nil {
		removeContainer(c.pool, r.Container.ID)
		return "", fmt.Errorf("%s:%s on %s never got ready: %w", s.repo, s.tag, addr, err)
	}
	return addr, nil
}

// portTaken reports Docker's failure to bind a published port that something else holds.
func portTaken(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "address already in use") || strings.Contains(msg, "port is already allocated")
}

func (c *containers) postgres() (string, error) {
	url := func(addr string) string { return fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", addr) }
	addr, err := c.start(service{
		repo: "postgres", tag: "16-alpine", env: []string{"POSTGRES_HOST_AUTH_METHOD=trust"},
		// The data goes with the container: durability would only cost time.
		cmd:  []string{"postgres", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"},
		port: "5432/tcp", tmpfs: []string{"/var/lib/postgresql/data"},
		ready: func(addr string) error {
			db, err := postgres.Open(context.Background(), url(addr), 1)
			if err == nil {
				db.Close()
			}
			return err
		},
	})
	return url(addr), err
}

func (c *containers) redis() (string, error) {
	addr, err := c.start(service{
		repo: "redis", tag: "7-alpine",
		cmd:  []string{"redis-server", "--save", "", "--appendonly", "no"},
		port: "6379/tcp", tmpfs: []string{"/data"},
		ready: func(addr string) error {
			cl := redis.NewClient(&redis.Options{Addr: addr})
			defer cl.Close()
			return cl.Ping(context.Background()).Err()
		},
	})
	return "redis://" + addr + "/0", err
}

func (c *containers) stripeMock() (string, error) {
	addr, err := c.start(service{
		repo: "stripe/stripe-mock", tag: "v0.203.0", port: "12111/tcp",
		ready: func(addr string) error { return probeStripe("http://" + addr) },
	})
	return "http://" + addr, err
}

// removeContainer removes a container and its anonymous volumes, at once (SIGKILL). Best
// effort: AutoRemove may be at it already, and the next test process reaps what is left.
func removeContainer(pool *dockertest.Pool, id string) {
	_ = pool.Client.RemoveContainer(dc.RemoveContainerOptions{ID: id, Force: true, RemoveVolumes: true})
}
