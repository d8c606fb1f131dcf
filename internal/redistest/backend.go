package redistest

import (
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Backend is one way of reaching Redis that a conformance suite runs every
// behaviour against: the shared server ("redis"), or a 3-master Redis
// Cluster of the backend's own ("redis-cluster"). A suite calls Start once
// for the backend, before its tests, and gives each test a client and a key
// prefix of its own, so the tests run in parallel.
type Backend struct {
	// Name is "redis" or "redis-cluster".
	Name    string
	cluster bool
	c       atomic.Pointer[Cluster] // set by Start
}

// Backends returns the Redis backends of a conformance suite: "redis" and
// "redis-cluster". Each call returns backends of their own: two suites
// that call it do not share a cluster.
func Backends() []*Backend {
	return []*Backend{{Name: "redis"}, {Name: "redis-cluster", cluster: true}}
}

// Start prepares what the tests of the backend share, for the lifetime of
// t: for "redis-cluster" it starts the cluster ([StartCluster] with the
// default options); for "redis" it does nothing. Call it from the test
// that holds the backend's tests, before they start.
func (b *Backend) Start(t testing.TB) {
	t.Helper()
	if b.cluster {
		b.c.Store(StartCluster(t, ClusterOptions{}))
	}
}

// Client returns a client for one test, closed when the test finishes: a
// [Client] of the shared server, or a cluster client seeded with one node
// only, so that redirects are followed from the start.
func (b *Backend) Client(t testing.TB) redis.UniversalClient {
	t.Helper()
	if !b.cluster {
		return Client(t)
	}
	cl := b.c.Load()
	if cl == nil {
		t.Fatalf("redistest: %s backend used before its Start", b.Name)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()[:1], ContextTimeoutEnabled: true})
	CheckScripts(c)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Prefix returns a key prefix unique to the test ([Prefix]); on the cluster
// it is a hash tag, so that every key of a pool built on it lives in one
// slot.
func (b *Backend) Prefix(t testing.TB) string {
	t.Helper()
	if b.cluster {
		return "{" + Prefix(t) + "}"
	}
	return Prefix(t)
}
