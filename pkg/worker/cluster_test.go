package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// The store and pool conformance suites also run on a 3-master Redis
// Cluster: the pool's prefix carries a hash tag, clients are cluster
// clients seeded with one node, so redirects are followed from the start.

// cluster is the Redis Cluster the "redis-cluster" backends use, started by
// their start for the lifetime of the suite's backend test. The two suites
// run one after the other's start; each sets it before its tests run.
var cluster struct {
	mu sync.Mutex
	c  map[string]*redistest.Cluster // by suite
}

func startCluster(suite string) func(t *testing.T) {
	return func(t *testing.T) {
		c := redistest.StartCluster(t, redistest.ClusterOptions{})
		cluster.mu.Lock()
		defer cluster.mu.Unlock()
		if cluster.c == nil {
			cluster.c = map[string]*redistest.Cluster{}
		}
		cluster.c[suite] = c
	}
}

func clusterClient(t *testing.T, suite string) *redis.ClusterClient {
	cluster.mu.Lock()
	cl := cluster.c[suite]
	cluster.mu.Unlock()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()[:1], ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

func clusterStoreBackend() storeBackend {
	return storeBackend{name: "redis-cluster", start: startCluster("store"), new: func(t *testing.T) *storeEnv {
		c := clusterClient(t, "store")
		lcfg := lock.Config{Prefix: "{" + redistest.Prefix(t) + "}"}
		pool, err := lock.NewRedisLockPool(c, lcfg)
		stMust(t, err)
		a, err := allocator.NewRedis(c, lcfg, allocator.Config{})
		stMust(t, err)
		t.Cleanup(func() { a.Close() })
		st, err := worker.NewRedisStore(c, lcfg)
		stMust(t, err)
		e := newStoreEnv(t, st, pool, a)
		e.again = func() worker.Store {
			st, err := worker.NewRedisStore(clusterClient(t, "store"), lcfg)
			stMust(t, err)
			return st
		}
		e.clock = func() time.Time { return redistest.ServerTime(t, c) }
		return e
	}}
}

func clusterPoolBackend() poolBackend {
	return poolBackend{name: "redis-cluster", start: startCluster("pool"), new: func(t *testing.T, items []string) (*allocator.Allocator, worker.Store, lock.Pool) {
		c := clusterClient(t, "pool")
		lcfg := lock.Config{Prefix: "{" + redistest.Prefix(t) + "}"}
		pool, err := lock.NewRedisLockPool(c, lcfg)
		mustOK(t, err)
		mustOK(t, pool.Extend(context.Background(), items))
		a, err := allocator.NewRedis(c, lcfg, allocator.Config{})
		mustOK(t, err)
		t.Cleanup(func() { a.Close() })
		mustOK(t, a.Sync(context.Background()))
		st, err := worker.NewRedisStore(c, lcfg)
		mustOK(t, err)
		return a, st, pool
	}}
}
