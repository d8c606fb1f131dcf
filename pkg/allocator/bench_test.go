package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/benchpair"
	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// Run with: make bench (the goals of bench/README.md, summarised), or
//
//	go test -run '^$' -bench . -benchtime 2s ./pkg/allocator
//
// Every benchmark runs against its own redis-server (redistest.StartServer),
// so a large pool left by one benchmark never weighs on another. The goals
// are ratios against a baseline measured in the same run, or counts,
// reported as metrics:
//
//	BenchmarkAcquireRelease          throughput-ratio >= 0.8 at 8 and 64
//	                                 goroutines (1 reported) against raw
//	                                 go-redis SET NX PX + DEL, measured
//	                                 alternately in the same run (benchpair)
//	BenchmarkRedisCPUPerCycle        the server's CPU per cycle against
//	                                 raw's, in separate phases: cpu-us-ratio
//	                                 <= 1.6 (bench_server_test.go)
//	BenchmarkRedisMemoryPerItem      server memory per pool item at 100,000
//	                                 items against the Python package's
//	                                 layout: python-ratio <= 1.3
//	                                 (bench_server_test.go)
//	BenchmarkAcquireReleasePoolSize  the same pair per pool size; its
//	                                 1M-vs-100 sub-benchmark pairs the
//	                                 1,000,000-item pool against the 100-item
//	                                 one: time-ratio <= 1.2
//	BenchmarkHandoff                 release-to-waiter p50-ms <= 2 (p99-ms
//	                                 reported too)
//	BenchmarkRefreshAll              round-trips/op <= 10 for 10,000 leases
//	                                 (one per <= 1,000), and ms/op
//	BenchmarkKeepAliveScripts        refresh-scripts/interval <= 10 for a
//	                                 process keeping 10,000 leases alive
//	                                 (keepalive_bench_internal_test.go)

// benchTTL is long enough that no lease expires during a benchmark.
const benchTTL = time.Minute

// benchCountedKey marks the calls whose round trips a benchmark counts
// (benchEnv.trips), so background traffic of the allocator (its sync loop)
// is not counted.
type benchCountedKey struct{}

func benchCounted(ctx context.Context) context.Context {
	return context.WithValue(ctx, benchCountedKey{}, true)
}

// benchEnv is one benchmark's private redis-server and client, with pools
// set up once and reused by every run of its sub-benchmarks (b.N probes
// included), so a 1,000,000-item pool is built once.
type benchEnv struct {
	parent *testing.B
	client *redis.Client
	trips  *benchpair.RoundTrips

	mu    sync.Mutex
	pools map[string]*benchPool
}

type benchPool struct {
	alloc *allocator.Allocator
	pool  *lock.RedisLockPool
	items int
	setup time.Duration // Assign + Sync
	// leases, when set, hold every item (BenchmarkRefreshAll).
	leases []*allocator.Lease
}

// newBenchEnv starts a redis-server for b and its sub-benchmarks. Call it
// from a benchmark function that only calls b.Run (it runs once), or accept
// a fresh server per run.
func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	srv := redistest.StartServer(b)
	// Enough connections for 64 goroutines plus the allocators' own.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 128, ContextTimeoutEnabled: true})
	trips := &benchpair.RoundTrips{Counted: func(ctx context.Context) bool { return ctx.Value(benchCountedKey{}) != nil }}
	c.AddHook(trips)
	b.Cleanup(func() { _ = c.Close() })
	return &benchEnv{parent: b, client: c, trips: trips, pools: map[string]*benchPool{}}
}

// pool returns the pool named name with n items and its allocator,
// creating it on first use: Assign of n items, then Sync so the
// allocator's index holds them all before any timing starts. The allocator
// lives until the parent benchmark ends.
func (e *benchEnv) pool(b *testing.B, name string, n int) *benchPool {
	b.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.pools[name]; ok {
		return p
	}
	ctx := context.Background()
	cfg := lock.Config{Prefix: redistest.Prefix(b)}
	lp, err := lock.NewRedisLockPool(e.client, cfg)
	must(b, err)
	start := time.Now()
	must(b, lp.Assign(ctx, benchItems(n)))
	a, err := allocator.NewRedis(lp, allocator.Config{LeaseTTL: benchTTL})
	must(b, err)
	e.parent.Cleanup(func() { _ = a.Close() })
	must(b, a.Sync(ctx))
	p := &benchPool{alloc: a, pool: lp, items: n, setup: time.Since(start)}
	e.pools[name] = p
	return p
}

func benchItems(n int) []string {
	items := make([]string, n)
	for i := range items {
		items[i] = "item-" + strconv.Itoa(i)
	}
	return items
}

// benchRawCycle is the baseline: what a hand-written Redis lock costs, two
// native commands (SET NX PX, then DEL) on keys beside the pool's.
func benchRawCycle(ctx context.Context, c *redis.Client, prefix string) func(i int) error {
	return func(i int) error {
		key := prefix + "|raw:" + strconv.Itoa(i)
		ok, err := c.SetNX(ctx, key, "owner", benchTTL).Result()
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("raw SET NX %s: key exists", key)
		}
		return c.Del(ctx, key).Err()
	}
}

// benchAllocCycle is the subject: TryAcquire any free item, then Release it. A
// failed TryAcquire (ErrNoFreeItem included) is an error: pools are sized
// so that the goroutines never starve.
func benchAllocCycle(ctx context.Context, a *allocator.Allocator) func(i int) error {
	return func(int) error {
		l, err := a.TryAcquire(ctx, "owner", allocator.AcquireOptions{TTL: benchTTL})
		if err != nil {
			return fmt.Errorf("TryAcquire: %w", err)
		}
		if err := l.Release(ctx); err != nil {
			return fmt.Errorf("Release %q: %w", l.Item(), err)
		}
		return nil
	}
}

// BenchmarkAcquireRelease compares a TryAcquire+Release cycle on a pool of
// 128 items (so 64 goroutines never starve) with the raw SET NX PX + DEL
// cycle, at 1, 8 and 64 goroutines. Goal: throughput-ratio >= 0.8 at 8 and
// 64 goroutines, where a server shared by many clients is what counts; at
// 1 goroutine the ratio is the latency of one script against two native
// commands, reported for scale.
func BenchmarkAcquireRelease(b *testing.B) {
	env := newBenchEnv(b)
	for _, goroutines := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
			ctx := context.Background()
			p := env.pool(b, fmt.Sprintf("g%d", goroutines), 128)
			benchpair.Compare(b, goroutines, benchRawCycle(ctx, env.client, p.pool.PoolKey()), benchAllocCycle(ctx, p.alloc))
		})
	}
}

// BenchmarkAcquireReleasePoolSize runs the same pair on pools of 100,
// 10,000 and 1,000,000 items (setting up the large pool takes seconds,
// outside the timing; setup-s reports it). The goal, the 1M figure within
// 1.2x of the 100-item one, is measured directly by the 1M-vs-100
// sub-benchmarks: they alternate a cycle on the 100-item pool (baseline)
// with one on the 1,000,000-item pool (subject) in the same run, on the
// same server, and report time-ratio = 1M ns/op ÷ 100 ns/op (goal <= 1.2;
// their throughput-ratio is its inverse, goal >= 0.83).
//
// The allocators run with the default Config, background sync included: a
// full index sweep of the 1M pool every FullSyncInterval (30s) is part of
// what a large pool costs, and may land in the timed window.
func BenchmarkAcquireReleasePoolSize(b *testing.B) {
	env := newBenchEnv(b)
	sizes := []int{100, 10_000, 1_000_000}
	goroutineCounts := []int{1, 8}
	for _, items := range sizes {
		b.Run(fmt.Sprintf("items=%d", items), func(b *testing.B) {
			for _, goroutines := range goroutineCounts {
				b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
					ctx := context.Background()
					p := env.pool(b, strconv.Itoa(items), items)
					benchpair.Compare(b, goroutines, benchRawCycle(ctx, env.client, p.pool.PoolKey()), benchAllocCycle(ctx, p.alloc))
					b.ReportMetric(p.setup.Seconds(), "setup-s")
				})
			}
		})
	}
	b.Run("1M-vs-100", func(b *testing.B) {
		for _, goroutines := range goroutineCounts {
			b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
				ctx := context.Background()
				small := env.pool(b, "100", 100)
				large := env.pool(b, "1000000", 1_000_000)
				var smallNs, largeNs atomic.Int64
				timed := func(sum *atomic.Int64, f func(int) error) func(int) error {
					return func(i int) error {
						t0 := time.Now()
						err := f(i)
						sum.Add(int64(time.Since(t0)))
						return err
					}
				}
				benchpair.Compare(b, goroutines,
					timed(&smallNs, benchAllocCycle(ctx, small.alloc)),
					timed(&largeNs, benchAllocCycle(ctx, large.alloc)))
				if s := smallNs.Load(); s > 0 {
					b.ReportMetric(float64(largeNs.Load())/float64(s), "time-ratio")
				}
			})
		}
	})
}

// BenchmarkHandoff measures release-to-waiter handoff on a 1-item pool: a
// waiter blocks in Acquire (it is registered as a waiter on the server),
// the holder releases, and the time from just before Release to Acquire
// returning is one sample. The waiter's lease is the next holder's. Goal:
// p50-ms <= 2 on loopback; p99-ms is reported, and baseline-cycle-ms, the
// median raw SET NX PX + DEL cycle timed once per handoff in the same run,
// gives the scale of one round trip pair.
func BenchmarkHandoff(b *testing.B) {
	env := newBenchEnv(b)
	ctx := context.Background()
	p := env.pool(b, "handoff", 1)
	waitersKey := p.pool.Keys().Waiters()
	raw := benchRawCycle(ctx, env.client, p.pool.PoolKey())
	opts := allocator.AcquireOptions{TTL: benchTTL}

	held, err := p.alloc.TryAcquire(ctx, "holder", opts)
	must(b, err)

	type result struct {
		lease *allocator.Lease
		err   error
		at    time.Time
	}
	wctx, cancel := context.WithCancel(ctx)
	start := make(chan struct{})
	out := make(chan result, 1)
	go func() {
		for range start {
			actx, acancel := context.WithTimeout(wctx, 10*time.Second)
			l, err := p.alloc.Acquire(actx, "waiter", opts)
			at := time.Now()
			acancel()
			out <- result{l, err, at}
		}
	}()
	defer func() { close(start); cancel() }()

	// waitBlocked waits until the waiter is registered on the server, i.e.
	// its Acquire found nothing free and now waits for a wake-up.
	waitBlocked := func() {
		redistest.Eventually(b, fmt.Sprintf("a waiter registered at %q (did the waiter key move?)", waitersKey), 5*time.Second, func() bool {
			select {
			case r := <-out:
				b.Fatalf("Acquire returned before the release: %v, %v", r.lease, r.err)
			default:
			}
			n, err := env.client.ZCard(ctx, waitersKey).Result()
			must(b, err)
			return n > 0
		})
	}

	var handoffs, cycles []time.Duration
	i := 0
	for b.Loop() {
		t := time.Now()
		must(b, raw(i))
		cycles = append(cycles, time.Since(t))
		i++

		start <- struct{}{}
		waitBlocked()
		t0 := time.Now()
		if err := held.Release(ctx); err != nil {
			b.Fatalf("Release: %v", err)
		}
		r := <-out
		if r.err != nil {
			b.Fatalf("Acquire: %v", r.err)
		}
		handoffs = append(handoffs, r.at.Sub(t0))
		held = r.lease
	}
	b.StopTimer()
	_ = held.Release(ctx)
	b.ReportMetric(0, "ns/op") // the iteration includes the set-up of each handoff; the percentiles are the result
	b.ReportMetric(benchMs(benchPercentile(handoffs, 0.50)), "p50-ms")
	b.ReportMetric(benchMs(benchPercentile(handoffs, 0.99)), "p99-ms")
	b.ReportMetric(benchMs(benchPercentile(cycles, 0.50)), "baseline-cycle-ms")
}

// benchPercentile returns the nearest-rank p-quantile of d (sorted in place).
func benchPercentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	idx := int(math.Ceil(p*float64(len(d)))) - 1
	return d[max(0, min(idx, len(d)-1))]
}

func benchMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkRefreshAll times RefreshAll of 10,000 leases (a 10,000-item
// pool, every item leased with a long TTL) and counts its round trips with
// a client hook. Goal: one round trip per <= 1,000 leases, so
// round-trips/op <= 10. For scale, baseline-ms/op is a raw extension of
// 10,000 other keys, pipelined PEXPIREs in 10 pipelines of 1,000 (no
// compare, no index update), alternated with RefreshAll in the same run.
func BenchmarkRefreshAll(b *testing.B) {
	env := newBenchEnv(b)
	for _, n := range []int{10_000} {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			ctx := context.Background()
			p := env.pool(b, "refresh", n)
			leases := benchLeaseAll(b, p, n)
			rawKeys := benchRawKeys(b, env.client, p.pool.PoolKey()+"|raw:", n)

			baseline := func() error {
				for start := 0; start < n; start += 1000 {
					pipe := env.client.Pipeline()
					for _, k := range rawKeys[start:min(start+1000, n)] {
						pipe.PExpire(ctx, k, benchTTL)
					}
					if _, err := pipe.Exec(ctx); err != nil {
						return err
					}
				}
				return nil
			}
			cctx := benchCounted(ctx)
			var subjNs, baseNs time.Duration
			trips0 := env.trips.N()
			for b.Loop() {
				t := time.Now()
				must(b, baseline())
				t1 := time.Now()
				lost, err := p.alloc.RefreshAll(cctx, leases)
				t2 := time.Now()
				if err != nil || len(lost) != 0 {
					b.Fatalf("RefreshAll = %d lost, %v", len(lost), err)
				}
				baseNs += t1.Sub(t)
				subjNs += t2.Sub(t1)
			}
			b.StopTimer()
			trips := env.trips.N() - trips0
			nf := float64(b.N)
			b.ReportMetric(0, "ns/op") // the pair's wall time is not a goal
			b.ReportMetric(benchMs(subjNs)/nf, "ms/op")
			b.ReportMetric(float64(trips)/nf, "round-trips/op")
			b.ReportMetric(benchMs(baseNs)/nf, "baseline-ms/op")
		})
	}
}

// benchLeaseAll leases every one of the pool's n items, once per parent
// benchmark (the leases are reused by every run), with 64 goroutines, and
// warms RefreshAll up once (loading its script) outside the timing.
func benchLeaseAll(b *testing.B, p *benchPool, n int) []*allocator.Lease {
	b.Helper()
	if p.leases != nil {
		return p.leases
	}
	ctx := context.Background()
	leases := make([]*allocator.Lease, n)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				l, err := p.alloc.TryAcquire(ctx, "owner", allocator.AcquireOptions{TTL: 10 * time.Minute})
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("lease %d of %d: %w", i, n, err) })
					return
				}
				leases[i] = l
			}
		})
	}
	wg.Wait()
	must(b, firstErr)
	if _, err := p.alloc.TryAcquire(ctx, "owner", allocator.AcquireOptions{}); !errors.Is(err, allocator.ErrNoFreeItem) {
		b.Fatalf("TryAcquire on a fully leased pool = %v; want ErrNoFreeItem", err)
	}
	lost, err := p.alloc.RefreshAll(ctx, leases)
	if err != nil || len(lost) != 0 {
		b.Fatalf("warm-up RefreshAll = %d lost, %v", len(lost), err)
	}
	p.leases = leases
	return leases
}

// benchRawKeys sets n plain keys with a TTL for the RefreshAll baseline.
func benchRawKeys(b *testing.B, c *redis.Client, prefix string, n int) []string {
	b.Helper()
	ctx := context.Background()
	keys := make([]string, n)
	pipe := c.Pipeline()
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(i)
		pipe.Set(ctx, keys[i], "owner", benchTTL)
	}
	_, err := pipe.Exec(ctx)
	must(b, err)
	return keys
}

// BenchmarkReplicaAcked measures what Config.MinReplicasAcked costs: on a
// primary with one local replica, a TryAcquire+Release cycle and a
// Lease.Refresh of an allocator that waits for the replica (WAIT 1 after
// every grant and refresh) against the same without the wait, alternately
// in the same run. throughput-ratio = plain ÷ acked time (below 1: the
// wait's cost); subject-ns/op - baseline-ns/op is the added latency per
// operation.
func BenchmarkReplicaAcked(b *testing.B) {
	primary := redistest.StartServer(b)
	primary.StartReplica(b)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: primary.Addr, PoolSize: 128, ContextTimeoutEnabled: true})
	b.Cleanup(func() { _ = c.Close() })
	alloc := func(acks int) *allocator.Allocator {
		cfg := lock.Config{Prefix: redistest.Prefix(b)}
		lp, err := lock.NewRedisLockPool(c, cfg)
		must(b, err)
		must(b, lp.Assign(ctx, benchItems(128)))
		a, err := allocator.NewRedis(lp, allocator.Config{LeaseTTL: benchTTL, MinReplicasAcked: acks})
		must(b, err)
		b.Cleanup(func() { _ = a.Close() })
		must(b, a.Sync(ctx))
		return a
	}
	plain, acked := alloc(0), alloc(1)
	for _, goroutines := range []int{1, 64} {
		b.Run(fmt.Sprintf("cycle/goroutines=%d", goroutines), func(b *testing.B) {
			benchpair.Compare(b, goroutines, benchAllocCycle(ctx, plain), benchAllocCycle(ctx, acked))
		})
	}
	b.Run("refresh", func(b *testing.B) {
		lp, err := plain.TryAcquire(ctx, "owner", allocator.AcquireOptions{TTL: benchTTL})
		must(b, err)
		la, err := acked.TryAcquire(ctx, "owner", allocator.AcquireOptions{TTL: benchTTL})
		must(b, err)
		benchpair.Compare(b, 1, func(int) error { return lp.Refresh(ctx) }, func(int) error { return la.Refresh(ctx) })
		must(b, lp.Release(ctx))
		must(b, la.Release(ctx))
	})
}
