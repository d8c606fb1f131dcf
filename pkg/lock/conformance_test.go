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
	t.Cleanup(func() { c.Close() })
	return c
}

func backends() []backend {
	return []backend{
		{
			name: "redis",
			newLock: func(t *testing.T, o options) lock.Locker {
				l, err := lock.NewRedisLock(redistest.Client(t), lock.Config{Prefix: redistest.Prefix(t), Epsilon: o.epsilon})
				must(t, err)
				return l
			},
			newPool: func(t *testing.T, o options) lock.Pool {
				p, err := lock.NewRedisLockPool(redistest.Client(t), lock.Config{Prefix: redistest.Prefix(t), Epsilon: o.epsilon})
				must(t, err)
				return p
			},
		},
		{
			// Pools on a 3-master Redis Cluster: the prefix carries a hash
			// tag, so every key of a pool lives in one slot.
			name:  "redis-cluster",
			start: func(t *testing.T) { cluster.c = redistest.StartCluster(t, redistest.ClusterOptions{}) },
			newLock: func(t *testing.T, o options) lock.Locker {
				l, err := lock.NewRedisLock(clusterClient(t), lock.Config{Prefix: "{" + redistest.Prefix(t) + "}", Epsilon: o.epsilon})
				must(t, err)
				return l
			},
			newPool: func(t *testing.T, o options) lock.Pool {
				p, err := lock.NewRedisLockPool(clusterClient(t), lock.Config{Prefix: "{" + redistest.Prefix(t) + "}", Epsilon: o.epsilon})
				must(t, err)
				return p
			},
		},
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
