package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// backend builds a fresh allocator for one test, over an empty pool of its
// own, and returns the plain pkg/lock pool it draws from. The conformance
// suite runs every behaviour against every backend through these
// constructors; the Redis ones get a unique key prefix per test, so tests
// run in parallel. Allocators are closed when the test ends.
type backend struct {
	name string
	new  func(t *testing.T, cfg allocator.Config) (*allocator.Allocator, lock.Pool)
	// attach builds another allocator over the pool new returned (another
	// process, for Redis); it returns the constructor's error.
	attach func(t *testing.T, pool lock.Pool, cfg allocator.Config) (*allocator.Allocator, error)
	// clock returns the clock lease deadlines are measured by: the Redis
	// server's TIME, or the process clock for the memory backend.
	clock func(t *testing.T) func() time.Time
	// waiters returns a function counting the Acquire calls that wait on
	// the pool: their attempt found nothing free, and they are registered
	// for a wake-up (the waiter ZSET, or the memory store's twin of it).
	waiters func(t *testing.T, pool lock.Pool) func() int64
	// start, when set, prepares what every test of the backend shares
	// (the cluster), for the lifetime of t.
	start func(t *testing.T)
}

func backends() []backend {
	var out []backend
	// Every behaviour on the shared server, and on a 3-master Redis
	// Cluster, the pool's prefix carrying a hash tag, through a cluster
	// client seeded with one node that owns none of the slots of most
	// prefixes, so redirects are followed from the start.
	for _, rb := range redistest.Backends() {
		out = append(out, redisBackend(rb))
	}
	return append(out, backend{
		name: "memory",
		new: func(t *testing.T, cfg allocator.Config) (*allocator.Allocator, lock.Pool) {
			pool, err := lock.NewMemoryLockPool(lock.MemoryConfig{})
			must(t, err)
			a, err := allocator.NewMemory(pool, cfg)
			must(t, err)
			closeOnCleanup(t, a)
			return a, pool
		},
		attach: func(t *testing.T, pool lock.Pool, cfg allocator.Config) (*allocator.Allocator, error) {
			a, err := allocator.NewMemory(pool.(*lock.MemoryLockPool), cfg)
			if err == nil {
				closeOnCleanup(t, a)
			}
			return a, err
		},
		clock: func(*testing.T) func() time.Time { return time.Now },
		waiters: func(_ *testing.T, pool lock.Pool) func() int64 {
			return func() int64 { return int64(allocator.QueuedWaiters(pool.(*lock.MemoryLockPool))) }
		},
	})
}

// redisBackend builds allocators over Redis pools reached through rb.
func redisBackend(rb *redistest.Backend) backend {
	attach := func(t *testing.T, pool lock.Pool, cfg allocator.Config) (*allocator.Allocator, error) {
		a, err := allocator.NewRedis(poolOn(t, rb.Client(t), lock.Config{Prefix: pool.(*lock.RedisLockPool).Keys().Prefix()}), cfg)
		if err == nil {
			closeOnCleanup(t, a)
		}
		return a, err
	}
	return backend{
		name:  rb.Name,
		start: func(t *testing.T) { rb.Start(t) },
		new: func(t *testing.T, cfg allocator.Config) (*allocator.Allocator, lock.Pool) {
			pool, err := lock.NewRedisLockPool(rb.Client(t), lock.Config{Prefix: rb.Prefix(t)})
			must(t, err)
			a, err := attach(t, pool, cfg)
			must(t, err)
			return a, pool
		},
		attach: attach,
		clock: func(t *testing.T) func() time.Time {
			c := rb.Client(t)
			return func() time.Time { return redistest.ServerTime(t, c) }
		},
		waiters: func(t *testing.T, pool lock.Pool) func() int64 {
			c, key := rb.Client(t), pool.(*lock.RedisLockPool).Keys().Waiters()
			return func() int64 {
				n, err := c.ZCard(context.Background(), key).Result()
				must(t, err)
				return n
			}
		},
	}
}

func closeOnCleanup(t *testing.T, a *allocator.Allocator) {
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

type behaviour struct {
	name string
	fn   func(t *testing.T, b backend)
}

// behaviourGroups are the suite, by file.
var behaviourGroups = [][]behaviour{
	leaseBehaviours,
	nextBehaviours,
	fromBehaviours,
	waitBehaviours,
	featureBehaviours,
	poolBehaviours,
	controlBehaviours,
}

// TestConformance runs every allocator behaviour against every backend.
func TestConformance(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			if b.start != nil {
				b.start(t)
			}
			seen := map[string]bool{}
			for _, group := range behaviourGroups {
				for _, tc := range group {
					if seen[tc.name] {
						t.Fatalf("duplicate behaviour %q", tc.name)
					}
					seen[tc.name] = true
					t.Run(tc.name, func(t *testing.T) {
						t.Parallel()
						tc.fn(t, b)
					})
				}
			}
		})
	}
}

// Bounds on how soon something happens, each its margin on an idle machine
// plus the scheduling delay the test process saw in the last 10 seconds
// (redistest.Slack): they hold the allocator to its margin, not the
// machine; a failure reports the delay (redistest.SchedDelay).

// handoffBound: a blocked Acquire returns this soon after a release.
func handoffBound() time.Duration { return 250*time.Millisecond + redistest.Slack() }

// deadlineBound: ... and this soon after the blocking lease's deadline.
func deadlineBound() time.Duration { return 400*time.Millisecond + redistest.Slack() }

// recoveryBound: an abandoned item is allocatable this soon after its
// lease's deadline.
func recoveryBound() time.Duration { return 300*time.Millisecond + redistest.Slack() }

// Durations the tests use. short TTLs are waited out for real.
const (
	long = time.Minute
	// syncBound: items added by plain pool calls become allocatable this
	// soon.
	syncBound = time.Second
)

// env is one test's allocator and pool.
type env struct {
	t    *testing.T
	b    backend
	a    *allocator.Allocator
	pool lock.Pool
	ctx  context.Context
	now  func() time.Time // the backend's clock
	// waiters counts the Acquire calls waiting on the pool (see
	// backend.waiters).
	waiters func() int64
}

// setup builds an allocator over a fresh pool holding items, already
// synced into the allocator's index.
func setup(t *testing.T, b backend, cfg allocator.Config, items ...string) *env {
	t.Helper()
	a, pool := b.new(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	e := &env{t: t, b: b, a: a, pool: pool, ctx: ctx, now: b.clock(t), waiters: b.waiters(t, pool)}
	if len(items) > 0 {
		must(t, pool.Extend(ctx, items))
		must(t, a.Sync(ctx))
	}
	return e
}

// peer is another allocator over the same pool.
func (e *env) peer(cfg allocator.Config) *allocator.Allocator {
	e.t.Helper()
	a, err := e.b.attach(e.t, e.pool, cfg)
	must(e.t, err)
	return a
}

// checkResult fails the test unless exactly one of l and err is nil.
func checkResult(t testing.TB, what string, l *allocator.Lease, err error) {
	t.Helper()
	switch {
	case l == nil && err == nil:
		t.Fatalf("%s returned nil, nil", what)
	case l != nil && err != nil:
		t.Fatalf("%s returned a lease (%s) and an error: %v", what, l.Item(), err)
	}
}

func (e *env) try(owner string, opts allocator.AcquireOptions) (*allocator.Lease, error) {
	e.t.Helper()
	return tryOn(e.t, e.ctx, e.a, owner, opts)
}

func tryOn(t testing.TB, ctx context.Context, a *allocator.Allocator, owner string, opts allocator.AcquireOptions) (*allocator.Lease, error) {
	t.Helper()
	l, err := a.TryAcquire(ctx, owner, opts)
	checkResult(t, "TryAcquire", l, err)
	return l, err
}

func acquireOn(t testing.TB, ctx context.Context, a *allocator.Allocator, owner string, opts allocator.AcquireOptions) (*allocator.Lease, error) {
	t.Helper()
	l, err := a.Acquire(ctx, owner, opts)
	checkResult(t, "Acquire", l, err)
	return l, err
}

// mustTry takes a free item, failing the test if none is free.
func (e *env) mustTry(owner string, opts allocator.AcquireOptions) *allocator.Lease {
	e.t.Helper()
	return mustTryOn(e.t, e.ctx, e.a, owner, opts)
}

// mustTryOn takes a free item from a, failing the test if none is free.
func mustTryOn(t testing.TB, ctx context.Context, a *allocator.Allocator, owner string, opts allocator.AcquireOptions) *allocator.Lease {
	t.Helper()
	l, err := tryOn(t, ctx, a, owner, opts)
	if err != nil {
		t.Fatalf("TryAcquire(%q, %+v): %v", owner, opts, err)
	}
	return l
}

// wantNoFree asserts that TryAcquire finds nothing free.
func (e *env) wantNoFree(owner string, opts allocator.AcquireOptions) {
	e.t.Helper()
	l, err := e.try(owner, opts)
	if !errors.Is(err, allocator.ErrNoFreeItem) {
		e.t.Fatalf("TryAcquire(%q, %+v) = %v, %v; want ErrNoFreeItem", owner, opts, leaseItem(l), err)
	}
}

// drain takes every free item and returns the leases.
func (e *env) drain(owner string) []*allocator.Lease {
	e.t.Helper()
	var out []*allocator.Lease
	for {
		l, err := e.try(owner, allocator.AcquireOptions{})
		if errors.Is(err, allocator.ErrNoFreeItem) {
			return out
		}
		must(e.t, err)
		out = append(out, l)
		if len(out) > 10_000 {
			e.t.Fatal("drain: runaway")
		}
	}
}

func leaseItem(l *allocator.Lease) string {
	if l == nil {
		return "<nil>"
	}
	return l.Item()
}

func items(ls []*allocator.Lease) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Item()
	}
	return out
}

// wantValue asserts what the pool holds at item's lock.
func (e *env) wantValue(item, want string, wantFound bool) {
	e.t.Helper()
	got, found, err := e.pool.LockValue(e.ctx, item)
	must(e.t, err)
	if got != want || found != wantFound {
		e.t.Fatalf("pool.LockValue(%q) = %q, %v; want %q, %v", item, got, found, want, wantFound)
	}
}

// wantHeld asserts that item's lock holds the lease's value.
func (e *env) wantHeld(l *allocator.Lease) {
	e.t.Helper()
	e.wantValue(l.Item(), l.Value(), true)
}

func (e *env) wantStatus(item string, timeout time.Duration, want lock.Status) {
	e.t.Helper()
	got, err := lock.Ops{Locker: e.pool}.KeyStatus(e.ctx, item, timeout)
	must(e.t, err)
	if got != want {
		e.t.Fatalf("pool.KeyStatus(%q, %v) = %v, want %v", item, timeout, got, want)
	}
}

// snapshot is everything a pool user can see: each member's lock value.
func (e *env) snapshot() string {
	e.t.Helper()
	var lines []string
	for it, err := range e.pool.Items(e.ctx) {
		must(e.t, err)
		v, found, err := e.pool.LockValue(e.ctx, it)
		must(e.t, err)
		lines = append(lines, fmt.Sprintf("%s=%q/%v", it, v, found))
	}
	slices.Sort(lines)
	locked, free, err := e.pool.HealthCheck(e.ctx)
	must(e.t, err)
	return fmt.Sprintf("health %d locked %d free; %s", locked, free, strings.Join(lines, " "))
}

var must = redistest.Must

// wantErr asserts that err matches every target.
func wantErr(t testing.TB, what string, err error, targets ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error, want %v", what, targets)
	}
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Fatalf("%s: got %v, want errors.Is %v", what, err, target)
		}
	}
}

// numbered returns prefix0 .. prefix<n-1>, zero-padded so they sort.
func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%04d", prefix, i)
	}
	return out
}

// waitWaiters waits until n Acquire calls wait on the pool: each found
// nothing free and is registered for a wake-up, so a release or a
// deadline from now on is what ends its wait.
func (e *env) waitWaiters(n int64) {
	e.t.Helper()
	redistest.Eventually(e.t, fmt.Sprintf("%d blocked Acquire calls registered as waiters", n), 10*time.Second, func() bool {
		return e.waiters() == n
	})
}

// tryEventually calls TryAcquire on a until it grants a lease, for at most
// within, and returns the lease and how long that took. Any error but
// ErrNoFreeItem fails the test.
func tryEventually(t testing.TB, ctx context.Context, a *allocator.Allocator, owner, what string, within time.Duration) (*allocator.Lease, time.Duration) {
	t.Helper()
	var got *allocator.Lease
	took := redistest.Eventually(t, what, within, func() bool {
		l, err := tryOn(t, ctx, a, owner, allocator.AcquireOptions{})
		if errors.Is(err, allocator.ErrNoFreeItem) {
			return false
		}
		must(t, err)
		got = l
		return true
	})
	return got, took
}

// result is what a background Acquire returns.
type result struct {
	l   *allocator.Lease
	err error
	at  time.Time // when Acquire returned
}

// acquireAsync runs Acquire in the background.
func acquireAsync(t testing.TB, ctx context.Context, a *allocator.Allocator, owner string, opts allocator.AcquireOptions) <-chan result {
	ch := make(chan result, 1)
	go func() {
		l, err := a.Acquire(ctx, owner, opts)
		ch <- result{l, err, time.Now()}
	}()
	return ch
}

// waitResult waits for a background Acquire, at most within.
func waitResult(t testing.TB, what string, ch <-chan result, within time.Duration) result {
	t.Helper()
	select {
	case r := <-ch:
		checkResult(t, what, r.l, r.err)
		return r
	case <-time.After(within):
		t.Fatalf("%s: still blocked after %v (%s)", what, within, redistest.SchedDelay())
		return result{}
	}
}

// wantBlocked asserts that a background Acquire has not returned yet.
func wantBlocked(t testing.TB, what string, ch <-chan result) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s returned early: %v, %v", what, leaseItem(r.l), r.err)
	default:
	}
}

// quantiles returns p50, p99 and max of ds.
func quantiles(ds []time.Duration) (p50, p99, maxd time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0, 0, 0
	}
	return s[len(s)/2], s[min(len(s)-1, len(s)*99/100)], s[len(s)-1]
}

// stats is a thread-safe list of durations.
type stats struct {
	mu sync.Mutex
	ds []time.Duration
}

func (s *stats) add(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ds = append(s.ds, d)
}
