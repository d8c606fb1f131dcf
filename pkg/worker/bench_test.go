package worker_test

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/benchpair"
	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/worker"
)

// Run with: make bench, or
//
//	go test -run '^$' -bench . -benchtime 2000x ./pkg/worker
//
// make bench runs BenchmarkPoolThroughput/redis/func with -benchtime 10000x:
// 2,000 runs were over in a third of a second, too short for a stable ratio
// on a shared 2-core machine.
//
//	BenchmarkPoolThroughput  task runs per second of a worker pool in loop
//	                         mode at concurrency 8 (runs/s), and the ratio
//	                         to a baseline measured in the same run (ratio):
//	                         func task: the bare lease cycle every run needs
//	                         (TryAcquire + Release, 8 goroutines), goal
//	                         ratio >= 0.9 on Redis; there the Redis round
//	                         trips of the steady state are counted too
//	                         (round-trips/run, goal 1; the bare cycle's
//	                         baseline-round-trips/op is 2);
//	                         exec true: running "true" with os/exec from
//	                         8 goroutines, without leases ("-wrapped":
//	                         through the exec supervisor, as the runner
//	                         does).
//	BenchmarkLeaseKeeping    the cost of keeping a lease: Lease.Refresh
//	                         against a raw go-redis PEXPIRE, alternately in
//	                         the same run (throughput-ratio). A held item
//	                         costs one such call per refresh interval
//	                         (lease_ttl/3 by default).

const benchConcurrency = 8

// benchBackend is a fresh pool of n items with its allocator and store, on
// the backend called name; the client is set for "redis".
func benchBackend(b *testing.B, name string, n int) (*allocator.Allocator, worker.Store, *redis.Client) {
	its := make([]string, n)
	for i := range its {
		its[i] = fmt.Sprintf("item-%d", i)
	}
	f := backendNamed(b, name).new(b, its)
	return f.alloc, f.store, f.redis
}

// benchFuncBackend is benchBackend with the Redis round trips of the pool
// counted: for "redis", a client of its own to the shared server, with a
// hook counting every command and pipeline (the allocator's, the store's
// and the keep-alives' alike). The counter stays at 0 for "memory".
func benchFuncBackend(b *testing.B, name string, n int) (*allocator.Allocator, worker.Store, *benchpair.RoundTrips) {
	// Only the runs' calls and the baseline's count: the allocator's
	// background sync steps and the keep-alive refresher are no part of a
	// run (the refresher sends one script per interval for every lease).
	trips := &benchpair.RoundTrips{Counted: func(ctx context.Context) bool { return ctx.Value(benchRunKey{}) != nil }}
	if name != "redis" {
		a, st, _ := benchBackend(b, name, n)
		return a, st, trips
	}
	its := make([]string, n)
	for i := range its {
		its[i] = fmt.Sprintf("item-%d", i)
	}
	c := redis.NewClient(&redis.Options{Addr: redistest.Addr(b), PoolSize: 64, ContextTimeoutEnabled: true})
	c.AddHook(trips)
	b.Cleanup(func() { _ = c.Close() })
	f := newRedisFixture(b, c, redistest.Prefix(b), allocator.Config{}, its)
	return f.alloc, f.store, trips
}

// runsPerSecond runs a loop-mode pool until n task runs have finished
// and returns their rate.
func runsPerSecond(b *testing.B, a *allocator.Allocator, st worker.Store, n int, task func(ctx context.Context, job worker.Job) error) float64 {
	return runsPerSecondWith(b, a, st, n, worker.Config{}, task)
}

// runsPerSecondWith is runsPerSecond with cfg (Concurrency and LeaseTTL
// are set here).
func runsPerSecondWith(b *testing.B, a *allocator.Allocator, st worker.Store, n int, cfg worker.Config, task func(ctx context.Context, job worker.Job) error) float64 {
	ctx, cancel := context.WithCancel(benchRunContext())
	defer cancel()
	var runs atomic.Int64
	var end time.Time
	var once sync.Once
	cfg.Concurrency, cfg.LeaseTTL = benchConcurrency, time.Minute
	p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
		err := task(ctx, job)
		if runs.Add(1) == int64(n) {
			once.Do(func() { end = time.Now(); cancel() })
		}
		return err
	}), cfg)
	must(b, err)
	start := time.Now()
	must(b, p.Run(ctx))
	once.Do(func() { end = time.Now() })
	return float64(n) / end.Sub(start).Seconds()
}

// parallelRate runs op n times from benchConcurrency goroutines and
// returns its rate.
func parallelRate(b *testing.B, n int, op func() error) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range benchConcurrency {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// benchRunKey marks the contexts of the calls a benchmark counts as round
// trips of its runs (see benchFuncBackend).
type benchRunKey struct{}

// benchRunContext is a context whose Redis calls count as the runs'.
func benchRunContext() context.Context {
	return context.WithValue(context.Background(), benchRunKey{}, true)
}

func BenchmarkPoolThroughput(b *testing.B) {
	for _, backend := range []string{"redis", "memory"} {
		b.Run(backend+"/func", func(b *testing.B) {
			a, st, trips := benchFuncBackend(b, backend, 64)
			ctx := benchRunContext()
			b.ResetTimer()
			cycle := func() error {
				l, err := a.TryAcquire(ctx, "baseline", allocator.AcquireOptions{TTL: time.Minute})
				if err != nil {
					return err
				}
				return l.Release(ctx)
			}
			// The baseline in two halves, before and after the pool's
			// runs, so a load that changes during the benchmark weighs
			// on both sides alike.
			n := int64(b.N)
			first := b.N / 2
			trips0 := trips.N()
			var baseSecs float64
			if first > 0 {
				baseSecs += float64(first) / parallelRate(b, first, cycle)
			}
			baseTrips := trips.N() - trips0
			// The steady state: the round trips between the end of the
			// run n/4 and of the run 3n/4, every worker busy, start and
			// shutdown left out.
			var done, from, to atomic.Int64
			rate := runsPerSecond(b, a, st, b.N, func(context.Context, worker.Job) error {
				switch done.Add(1) {
				case n / 4:
					from.Store(trips.N())
				case 3 * n / 4:
					to.Store(trips.N())
				}
				return nil
			})
			trips1 := trips.N()
			baseSecs += float64(b.N-first) / parallelRate(b, b.N-first, cycle)
			baseTrips += trips.N() - trips1
			base := float64(b.N) / baseSecs
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(rate, "runs/s")
			b.ReportMetric(base, "baseline-runs/s")
			b.ReportMetric(rate/base, "ratio")
			if backend == "redis" && n >= 4 {
				b.ReportMetric(float64(to.Load()-from.Load())/float64(3*n/4-n/4), "round-trips/run")
				b.ReportMetric(float64(baseTrips)/float64(n), "baseline-round-trips/op")
			}
		})
		for _, wrapper := range []bool{false, true} {
			name := backend + "/exec-true"
			if wrapper {
				name += "-wrapped" // as the runner starts tasks
			}
			b.Run(name, func(b *testing.B) {
				a, st, _ := benchBackend(b, backend, 64)
				task := &worker.ExecTask{Command: []string{"true"}, Wrapper: wrapper}
				b.ResetTimer()
				base := parallelRate(b, b.N, func() error { return exec.Command("true").Run() })
				rate := runsPerSecond(b, a, st, b.N, task.Run)
				b.ReportMetric(0, "ns/op")
				b.ReportMetric(rate, "runs/s")
				b.ReportMetric(base, "baseline-runs/s")
				b.ReportMetric(rate/base, "ratio")
			})
		}
	}
}

func BenchmarkLeaseKeeping(b *testing.B) {
	const held = 64
	a, _, c := benchBackend(b, "redis", held)
	ctx := context.Background()
	leases := make([]*allocator.Lease, held)
	keys := make([]string, held)
	for i := range leases {
		l, err := a.TryAcquire(ctx, "keeper", allocator.AcquireOptions{TTL: time.Minute})
		must(b, err)
		leases[i] = l
		keys[i] = redistest.Prefix(b) + "|raw:" + l.Item()
		must(b, c.Set(ctx, keys[i], "x", time.Minute).Err())
	}
	benchpair.Compare(b, benchConcurrency,
		func(i int) error { return c.PExpire(ctx, keys[i%held], time.Minute).Err() },
		func(i int) error { return leases[i%held].Refresh(ctx) })
}
