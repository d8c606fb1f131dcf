package lock_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/lock"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// options are what a conformance test may ask of a backend's constructor.
type options struct {
	epsilon float64
}

// backend builds a fresh, empty store for one test. The conformance suite
// runs every behaviour against every backend through these constructors;
// the Redis ones get a unique key prefix per test, so tests run in parallel.
type backend struct {
	name    string
	newLock func(t *testing.T, o options) lock.Locker
	newPool func(t *testing.T, o options) lock.Pool
	// start, when set, prepares what every test of the backend shares
	// (the cluster), for the lifetime of t.
	start func(t *testing.T)
}

// cluster is the Redis Cluster the "redis-cluster" backend shares.
var cluster struct{ c *redistest.Cluster }

// clusterClient is a cluster client seeded with one node only, so
// redirects are followed from the start.
func clusterClient(t *testing.T) *redis.ClusterClient {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.c.Addrs()[:1], ContextTimeoutEnabled: true})
	redistest.CheckScripts(c)
	t.Cleanup(func() { c.Close() })
	return c
}

func backends() []backend {
	return []backend{
		redisBackend("redis", nil, func(t *testing.T) redis.UniversalClient { return redistest.Client(t) }, redistest.Prefix),
		// Pools on a 3-master Redis Cluster: the prefix carries a hash
		// tag, so every key of a pool lives in one slot.
		redisBackend("redis-cluster", func(t *testing.T) { cluster.c = redistest.StartCluster(t, redistest.ClusterOptions{}) },
			func(t *testing.T) redis.UniversalClient { return clusterClient(t) },
			func(t testing.TB) string { return "{" + redistest.Prefix(t) + "}" }),
		{
			name: "memory",
			newLock: func(t *testing.T, o options) lock.Locker {
				l, err := lock.NewMemoryLock(lock.MemoryConfig{Epsilon: o.epsilon})
				must(t, err)
				return l
			},
			newPool: func(t *testing.T, o options) lock.Pool {
				p, err := lock.NewMemoryLockPool(lock.MemoryConfig{Epsilon: o.epsilon})
				must(t, err)
				return p
			},
		},
	}
}

// redisBackend builds locks and pools over Redis reached through client,
// with prefixes from prefix; start, when set, runs once per suite.
func redisBackend(name string, start func(*testing.T), client func(*testing.T) redis.UniversalClient, prefix func(testing.TB) string) backend {
	return backend{
		name:  name,
		start: start,
		newLock: func(t *testing.T, o options) lock.Locker {
			l, err := lock.NewRedisLock(client(t), lock.Config{Prefix: prefix(t), Epsilon: o.epsilon})
			must(t, err)
			return l
		},
		newPool: func(t *testing.T, o options) lock.Pool {
			p, err := lock.NewRedisLockPool(client(t), lock.Config{Prefix: prefix(t), Epsilon: o.epsilon})
			must(t, err)
			return p
		},
	}
}

// TestConformance runs every lock behaviour against a plain lock and a pool
// of each backend, and every pool behaviour against each backend's pool.
func TestConformance(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			if b.start != nil {
				b.start(t)
			}
			for _, tc := range lockBehaviours {
				t.Run("lock/"+tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, func(o options) lock.Locker { return b.newLock(t, o) })
				})
				t.Run("pool-as-lock/"+tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, func(o options) lock.Locker { return b.newPool(t, o) })
				})
			}
			for _, tc := range poolBehaviours {
				t.Run("pool/"+tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, func(o options) lock.Pool { return b.newPool(t, o) })
				})
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}
