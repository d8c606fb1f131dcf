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
//	BenchmarkPoolThroughput  task runs per second of a worker pool at
//	                         concurrency 8 (runs/s), and the ratio to a
//	                         baseline measured in the same run (ratio):
//	                         func task: the bare lease cycle every run needs
//	                         (TryAcquire + Release, 8 goroutines);
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

// runsPerSecond runs a loop-mode pool until n task runs have finished
// and returns their rate.
func runsPerSecond(b *testing.B, a *allocator.Allocator, st worker.Store, n int, task func(ctx context.Context, job worker.Job) error) float64 {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var runs atomic.Int64
	var end time.Time
	var once sync.Once
	p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
		err := task(ctx, job)
		if runs.Add(1) == int64(n) {
			once.Do(func() { end = time.Now(); cancel() })
		}
		return err
	}), worker.Config{Concurrency: benchConcurrency, LeaseTTL: time.Minute})
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

func BenchmarkPoolThroughput(b *testing.B) {
	for _, backend := range []string{"redis", "memory"} {
		b.Run(backend+"/func", func(b *testing.B) {
			a, st, _ := benchBackend(b, backend, 64)
			ctx := context.Background()
			b.ResetTimer()
			base := parallelRate(b, b.N, func() error {
				l, err := a.TryAcquire(ctx, "baseline", allocator.AcquireOptions{TTL: time.Minute})
				if err != nil {
					return err
				}
				return l.Release(ctx)
			})
			rate := runsPerSecond(b, a, st, b.N, func(context.Context, worker.Job) error { return nil })
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(rate, "runs/s")
			b.ReportMetric(base, "baseline-runs/s")
			b.ReportMetric(rate/base, "ratio")
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
