package allocator

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/lock"
)

// timedStore records when each refresh script (one call of the store's
// refresh) was sent, and how many leases it carried.
type timedStore struct {
	store
	mu     sync.Mutex
	sent   []time.Time
	leases []int
}

func (s *timedStore) refresh(ctx context.Context, leases []*Lease, ttl time.Duration) (time.Time, []verdict, report, error) {
	s.mu.Lock()
	s.sent = append(s.sent, time.Now())
	s.leases = append(s.leases, len(leases))
	s.mu.Unlock()
	return s.store.refresh(ctx, leases, ttl)
}

func (s *timedStore) close() error { return nil } // the allocator that made the store closes it

// BenchmarkKeepAliveScripts measures the refresh traffic of a process
// keeping 10,000 leases alive on Redis (one KeepAlive each, default
// interval TTL/3): refresh-scripts/interval, the refresh scripts sent in
// k intervals ÷ k. Goal: <= 10, one script per 1,000 leases
// (TestKeepAlivesAreBatched checks the same bound as a test). Each b.Loop
// iteration watches one interval, after a first interval in which every
// keep-alive is already running; run it with -benchtime 3x.
// leases/script and rounds/interval (keeper rounds) are reported too.
func BenchmarkKeepAliveScripts(b *testing.B) {
	const (
		n   = 10_000
		ttl = 6 * time.Second // interval 2s: room for a loaded machine
	)
	interval := ttl / 3
	srv := redistest.StartServer(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 64, ContextTimeoutEnabled: true})
	b.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	pool, err := lock.NewRedisLockPool(c, lock.Config{Prefix: redistest.Prefix(b)})
	redistest.Must(b, err)
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf("item-%05d", i)
	}
	redistest.Must(b, pool.Extend(ctx, items))
	base, err := NewRedis(pool, Config{LeaseTTL: ttl})
	redistest.Must(b, err)
	b.Cleanup(func() { base.Close() })
	redistest.Must(b, base.Sync(ctx))
	ts := &timedStore{store: base.store}
	a := newAllocator(base.cfg, ts, base.epochs)
	b.Cleanup(func() { a.Close() })

	// Each lease kept alive from its grant on, as a holder does.
	kas := make([]*KeepAlive, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				l, err := a.TryAcquire(ctx, "w", AcquireOptions{})
				if err == nil {
					kas[i], err = l.KeepAlive(ctx, KeepAliveOptions{})
				}
				if err != nil {
					errs <- fmt.Errorf("lease %d of %d: %w", i, n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	redistest.Must(b, <-errs)
	b.Cleanup(func() {
		for _, ka := range kas {
			ka.Stop()
		}
	})
	time.Sleep(interval) // every keep-alive has had its first round

	var from time.Time
	k := 0
	for b.Loop() {
		if k == 0 {
			from = time.Now()
		}
		k++
		time.Sleep(interval)
	}
	time.Sleep(interval) // the rounds the window below may hold have ended
	for i, ka := range kas {
		if err := ka.Err(); err != nil {
			b.Fatalf("keep-alive %d ended: %v (%s)", i, err, redistest.SchedDelay())
		}
	}

	// A round is a burst of scripts, apart from the previous one by more
	// than half an interval. The window spans k intervals centred on the
	// rounds from the first one after from: k rounds when the keeper
	// sends one round per interval, whatever their jitter (< interval/2).
	ts.mu.Lock()
	sent, leases := slices.Clone(ts.sent), slices.Clone(ts.leases)
	ts.mu.Unlock()
	var starts []time.Time
	for i, at := range sent {
		if i == 0 || at.Sub(sent[i-1]) > interval/2 {
			starts = append(starts, at)
		}
	}
	first := slices.IndexFunc(starts, func(t time.Time) bool { return !t.Before(from) })
	if first < 0 {
		b.Fatalf("no refresh round started after %v (%s)", from, redistest.SchedDelay())
	}
	lo := starts[first].Add(-interval / 2)
	hi := lo.Add(time.Duration(k) * interval)
	rounds, scripts, carried := 0, 0, 0
	inWindow := false
	for i, at := range sent {
		if i == 0 || at.Sub(sent[i-1]) > interval/2 {
			inWindow = !at.Before(lo) && at.Before(hi)
			if inWindow {
				rounds++
			}
		}
		if inWindow {
			scripts++
			carried += leases[i]
		}
	}
	b.ReportMetric(0, "ns/op") // the iterations are waits; the counts are the result
	b.ReportMetric(float64(scripts)/float64(k), "refresh-scripts/interval")
	b.ReportMetric(float64(carried)/float64(scripts), "leases/script")
	b.ReportMetric(float64(rounds)/float64(k), "rounds/interval")
	b.ReportMetric(n, "leases")
}
