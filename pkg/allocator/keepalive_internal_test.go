package allocator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/lock"
)

// countingStore counts the refresh scripts (or their in-memory twins) an
// allocator sends, and the leases they carry.
type countingStore struct {
	store
	mu            sync.Mutex
	calls, leases int
	largest       int
}

func (c *countingStore) refresh(ctx context.Context, leases []*Lease, ttl time.Duration) (time.Time, []verdict, report, error) {
	c.mu.Lock()
	c.calls++
	c.leases += len(leases)
	c.largest = max(c.largest, len(leases))
	c.mu.Unlock()
	return c.store.refresh(ctx, leases, ttl)
}

func (c *countingStore) close() error { return nil } // the allocator that made the store closes it

func (c *countingStore) counts() (calls, leases, largest int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls, c.leases, c.largest
}

// TestKeepAlivesAreBatched: a process keeping 10,000 leases alive sends at
// most 10 refresh scripts per interval (one per 1,000 leases), every lease
// stays held, and each still has its own guard: one lease lost is
// cancelled alone.
func TestKeepAlivesAreBatched(t *testing.T) {
	// Refreshes every second; the TTL leaves the guard 9s, so that a
	// loaded machine slowing a round of 10 scripts (-race, 10,000 leases)
	// does not make the guard give leases up: what is counted is scripts
	// per interval.
	const ttl, interval = 9 * time.Second, time.Second
	itemNames := func(n int) []string {
		items := make([]string, n)
		for i := range items {
			items[i] = fmt.Sprintf("item-%05d", i)
		}
		return items
	}
	// 10,000 leases in memory; 2,000 on Redis, where granting each is a
	// script of a -race client and 10,000 of them load a make test run
	// enough to starve its other timing tests. The batching is the
	// allocator's, the same for both.
	for _, b := range []struct {
		name string
		n    int
		new  func(t *testing.T, items []string) (*Allocator, lock.Pool)
	}{
		{"memory", 10_000, func(t *testing.T, items []string) (*Allocator, lock.Pool) {
			pool := newTestPool(t, items...)
			a, err := NewMemory(pool, Config{LeaseTTL: ttl})
			redistest.Must(t, err)
			t.Cleanup(func() { a.Close() })
			return a, pool
		}},
		{"redis", 2_000, func(t *testing.T, items []string) (*Allocator, lock.Pool) {
			// A client without redistest's script check: holding 30,000
			// arguments a second to their templates under -race is not
			// what this test measures.
			c := redis.NewClient(&redis.Options{Addr: redistest.Addr(t), ContextTimeoutEnabled: true})
			t.Cleanup(func() { c.Close() })
			pool, err := lock.NewRedisLockPool(c, lock.Config{Prefix: redistest.Prefix(t)})
			redistest.Must(t, err)
			redistest.Must(t, pool.Extend(context.Background(), items))
			a, err := NewRedis(pool, Config{LeaseTTL: ttl})
			redistest.Must(t, err)
			t.Cleanup(func() { a.Close() })
			return a, pool
		}},
	} {
		t.Run(b.name, func(t *testing.T) {
			n := b.n
			ctx := context.Background()
			base, pool := b.new(t, itemNames(n))
			redistest.Must(t, base.Sync(ctx))
			// An allocator over base's store whose refreshes are counted.
			cs := &countingStore{store: base.store}
			a := newAllocator(base.cfg, cs, base.epochs)
			defer a.Close()

			// Each lease kept alive from its grant on, as a holder does:
			// granting 10,000 takes longer than their TTL here.
			var leases []*Lease
			var kas []*KeepAlive
			for range n {
				l, err := a.TryAcquire(ctx, "w", AcquireOptions{})
				redistest.Must(t, err)
				ka, err := l.KeepAlive(ctx, KeepAliveOptions{Interval: interval})
				redistest.Must(t, err)
				leases, kas = append(leases, l), append(kas, ka)
			}
			defer func() {
				for _, ka := range kas {
					ka.Stop()
				}
			}()
			// Three intervals after every keep-alive started.
			calls0, _, _ := cs.counts()
			start := time.Now()
			time.Sleep(3 * interval) // the scenario: the keep-alives at work for three intervals
			calls, refreshed, largest := cs.counts()
			intervals := int(time.Since(start)/interval) + 1 // a tick may fall on either edge
			t.Logf("%d leases kept alive: %d refresh scripts in %v (%d intervals of %v), at most %d leases each",
				n, calls-calls0, time.Since(start).Round(time.Millisecond), intervals-1, interval, largest)
			perInterval := (n + refreshChunk - 1) / refreshChunk
			if got, most := calls-calls0, perInterval*intervals; got > most {
				t.Errorf("%d refresh scripts for %d leases over %d intervals; want at most %d (%d per interval)", got, n, intervals, most, perInterval)
			}
			if largest != refreshChunk || refreshed < n {
				t.Errorf("largest refresh carried %d leases (want %d), %d refreshed in all (want >= %d)", largest, refreshChunk, refreshed, n)
			}
			for _, ka := range kas {
				if err := ka.Err(); err != nil {
					t.Fatalf("a keep-alive ended: %v (%s)", err, redistest.SchedDelay())
				}
			}
			for _, l := range leases[:10] {
				if left := time.Until(l.Deadline()); left < ttl-3*interval {
					t.Errorf("lease %s expires in %v; a refresh within the last interval should leave at least %v (%s)", l.item, left, ttl-3*interval, redistest.SchedDelay())
				}
			}

			// One lease taken from under its holder: its keep-alive alone
			// ends, with ErrLeaseLost.
			victim := leases[7]
			_, err := pool.Unlock(ctx, victim.Item())
			redistest.Must(t, err)
			select {
			case <-kas[7].Done():
			case <-time.After(ttl):
				t.Fatalf("the keep-alive of a lease whose lock was removed still runs after %v (%s)", ttl, redistest.SchedDelay())
			}
			if err := kas[7].Err(); !errors.Is(err, ErrLeaseLost) {
				t.Fatalf("the keep-alive ended with %v; want ErrLeaseLost", err)
			}
			for i, ka := range kas {
				if i != 7 && ka.Err() != nil {
					t.Fatalf("keep-alive %d ended with the victim's: %v", i, ka.Err())
				}
			}
		})
	}
}
