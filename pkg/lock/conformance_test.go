package lock_test

import (
	"testing"

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

func backends() []backend {
	var out []backend
	// Locks and pools on the shared server, and on a 3-master Redis
	// Cluster, where the prefix carries a hash tag so every key of a pool
	// lives in one slot.
	for _, rb := range redistest.Backends() {
		out = append(out, redisBackend(rb))
	}
	return append(out, backend{
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
	})
}

// redisBackend builds locks and pools over Redis reached through rb.
func redisBackend(rb *redistest.Backend) backend {
	return backend{
		name:  rb.Name,
		start: func(t *testing.T) { rb.Start(t) },
		newLock: func(t *testing.T, o options) lock.Locker {
			l, err := lock.NewRedisLock(rb.Client(t), lock.Config{Prefix: rb.Prefix(t), Epsilon: o.epsilon})
			must(t, err)
			return l
		},
		newPool: func(t *testing.T, o options) lock.Pool {
			p, err := lock.NewRedisLockPool(rb.Client(t), lock.Config{Prefix: rb.Prefix(t), Epsilon: o.epsilon})
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
					tc.fn(t, func(o options) lock.Ops { return lock.Ops{Locker: b.newLock(t, o)} })
				})
				t.Run("pool-as-lock/"+tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, func(o options) lock.Ops { return lock.Ops{Locker: b.newPool(t, o)} })
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

var must = redistest.Must
