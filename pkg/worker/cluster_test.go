package worker_test

import (
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
)

// The store and pool conformance suites also run on a 3-master Redis
// Cluster (backends "redis-cluster" in store_test.go and pool_test.go):
// the pool's prefix carries a hash tag, clients are cluster clients seeded
// with one node, so redirects are followed from the start.

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
	redistest.CheckScripts(c)
	t.Cleanup(func() { c.Close() })
	return c
}
