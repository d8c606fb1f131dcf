package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// backend builds, for one test, a lock pool of its own with an allocator
// and a run-state store over it. The store and pool conformance suites run
// every behaviour against every backend: the shared Redis server, a
// 3-master Redis Cluster (the pool's prefix carries a hash tag; clients are
// cluster clients seeded with one node, so redirects are followed from the
// start), and memory.
type backend struct {
	name string
	// start, when set, prepares what every test of the backend shares
	// (the cluster), for the lifetime of t.
	start func(t *testing.T)
	// new builds a fixture over a fresh pool holding items, synced into
	// the allocator's index when there are any.
	new func(t testing.TB, items []string) *fixture
}

// fixture is one test's lock pool, allocator and store.
type fixture struct {
	alloc *allocator.Allocator
	store worker.Store
	pool  lock.Pool
	// again builds a second store over the same pool (another process,
	// for Redis).
	again func() worker.Store
	// clock is the backend's clock: the Redis server's TIME, or the
	// process clock.
	clock func() time.Time
	// redis and prefix are set for Redis reached through a plain client:
	// the client, for raw-key checks, and the pool's lock.Config prefix.
	redis  *redis.Client
	prefix string
}

// backends returns the backends of a suite. Each call has a cluster of its
// own, started by the "redis-cluster" backend's start.
func backends() []backend {
	var out []backend
	for _, rb := range redistest.Backends() {
		out = append(out, backend{
			name:  rb.Name,
			start: func(t *testing.T) { rb.Start(t) },
			new: func(t testing.TB, items []string) *fixture {
				return newRedisFixture(t, rb.Client(t), rb.Prefix(t), allocator.Config{}, items)
			},
		})
	}
	return append(out, backend{name: "memory", new: func(t testing.TB, items []string) *fixture {
		pool, err := lock.NewMemoryLockPool(lock.MemoryConfig{})
		must(t, err)
		a := newAllocator(t, pool, items, func() (*allocator.Allocator, error) { return allocator.NewMemory(pool, allocator.Config{}) })
		return &fixture{alloc: a, store: worker.NewMemoryStore(pool), pool: pool,
			again: func() worker.Store { return worker.NewMemoryStore(pool) },
			clock: time.Now}
	}})
}

// backendNamed returns the backend called name.
func backendNamed(t testing.TB, name string) backend {
	for _, b := range backends() {
		if b.name == name {
			return b
		}
	}
	t.Fatalf("no backend %q", name)
	return backend{}
}

// newRedisFixture builds a fixture over a Redis pool with prefix, reached
// through c, holding items, with an allocator configured by cfg.
func newRedisFixture(t testing.TB, c redis.UniversalClient, prefix string, cfg allocator.Config, items []string) *fixture {
	lcfg := lock.Config{Prefix: prefix}
	pool, err := lock.NewRedisLockPool(c, lcfg)
	must(t, err)
	a := newAllocator(t, pool, items, func() (*allocator.Allocator, error) { return allocator.NewRedis(pool, cfg) })
	st, err := worker.NewRedisStore(pool)
	must(t, err)
	f := &fixture{alloc: a, store: st, pool: pool,
		again: func() worker.Store {
			other, err := lock.NewRedisLockPool(c, lcfg)
			must(t, err)
			st, err := worker.NewRedisStore(other)
			must(t, err)
			return st
		},
		clock: func() time.Time { return redistest.ServerTime(t, c) }}
	if plain, ok := c.(*redis.Client); ok {
		f.redis, f.prefix = plain, prefix
	}
	return f
}

// newAllocator adds items to pool, then builds its allocator with
// construct, closed when the test ends, and syncs it when there are items.
func newAllocator(t testing.TB, pool lock.Pool, items []string, construct func() (*allocator.Allocator, error)) *allocator.Allocator {
	ctx := context.Background()
	if len(items) > 0 {
		must(t, pool.Extend(ctx, items))
	}
	a, err := construct()
	must(t, err)
	t.Cleanup(func() { a.Close() })
	if len(items) > 0 {
		must(t, a.Sync(ctx))
	}
	return a
}

// forEachBackend runs suite against every backend, each in a parallel
// subtest of t, after the backend's start.
func forEachBackend(t *testing.T, suite func(t *testing.T, b backend)) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			if b.start != nil {
				b.start(t)
			}
			suite(t, b)
		})
	}
}

var must = redistest.Must

// waitErr waits for a Run's error, at most within.
func waitErr(t *testing.T, what string, ch <-chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(within):
		t.Fatalf("%s: Run still running after %v (%s)", what, within, redistest.SchedDelay())
		return nil
	}
}
