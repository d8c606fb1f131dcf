package allocator_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
)

// waitBehaviours: blocking Acquire, wake-ups, deadlines and expiry
// recovery.
var waitBehaviours = []behaviour{
	{"acquire-with-deadline-on-empty-or-full-pool", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long})
		check := func(what string) {
			t.Helper()
			ctx, cancel := context.WithTimeout(e.ctx, 150*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := acquireOn(t, ctx, e.a, "w", allocator.AcquireOptions{})
			took := time.Since(start)
			wantErr(t, what, err, allocator.ErrNoFreeItem, context.DeadlineExceeded)
			if took < 140*time.Millisecond || took > 150*time.Millisecond+deadlineBound() {
				t.Fatalf("%s returned after %v, want about 150ms (%s)", what, took, redistest.SchedDelay())
			}
		}
		check("Acquire on an empty pool")
		must(t, e.pool.Extend(e.ctx, []string{"a"}))
		l := e.mustTry("holder", allocator.AcquireOptions{})
		before := e.snapshot()
		check("Acquire on a full pool")
		if after := e.snapshot(); after != before {
			t.Fatalf("a failed Acquire changed the pool:\nbefore %s\nafter  %s", before, after)
		}
		// Cancellation ends the wait at once.
		ctx, cancel := context.WithCancel(e.ctx)
		ch := acquireAsync(t, ctx, e.a, "w", allocator.AcquireOptions{})
		e.waitWaiters(1)
		wantBlocked(t, "Acquire", ch)
		start := time.Now()
		cancel()
		r := waitResult(t, "cancelled Acquire", ch, time.Second)
		wantErr(t, "cancelled Acquire", r.err, allocator.ErrNoFreeItem, context.Canceled)
		if took := r.at.Sub(start); took > handoffBound() {
			t.Fatalf("cancelled Acquire returned %v after the cancel, want <= %v (%s)", took, handoffBound(), redistest.SchedDelay())
		}
		e.wantHeld(l)
	}},
	{"acquire-returns-within-50ms-of-a-release", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a")
		peer := e.peer(allocator.Config{LeaseTTL: long})
		var lat []time.Duration
		for i := range 20 {
			// Alternate which allocator holds and which waits.
			holdA, waitA := e.a, peer
			if i%2 == 1 {
				holdA, waitA = peer, e.a
			}
			if i%4 >= 2 {
				waitA = holdA // same allocator, too
			}
			holder := mustTryOn(t, e.ctx, holdA, "holder", allocator.AcquireOptions{})
			ch := acquireAsync(t, e.ctx, waitA, "waiter", allocator.AcquireOptions{})
			e.waitWaiters(1)
			wantBlocked(t, "Acquire", ch)
			start := time.Now()
			must(t, holder.Release(e.ctx))
			r := waitResult(t, "Acquire after a release", ch, 2*time.Second)
			must(t, r.err)
			lat = append(lat, r.at.Sub(start))
			if r.l.Item() != "a" || r.l.Token() <= holder.Token() {
				t.Fatalf("waiter got %q token %d after holder's %d", r.l.Item(), r.l.Token(), holder.Token())
			}
			must(t, r.l.Release(e.ctx))
		}
		p50, p99, maxd := quantiles(lat)
		t.Logf("release-to-waiter handoff over %d samples: p50 %v, p99 %v, max %v", len(lat), p50, p99, maxd)
		for i, d := range lat {
			if d > handoffBound() {
				t.Errorf("handoff %d took %v, want <= %v (%s)", i, d, handoffBound(), redistest.SchedDelay())
			}
		}
	}},
	{"acquire-returns-within-100ms-of-the-deadline", func(t *testing.T, b backend) {
		const ttl = 200 * time.Millisecond
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a")
		var late []time.Duration
		for range 5 {
			holder := e.mustTry("crashed", allocator.AcquireOptions{TTL: ttl})
			granted := time.Now() // the deadline is at most ttl from here
			ch := acquireAsync(t, e.ctx, e.a, "waiter", allocator.AcquireOptions{})
			r := waitResult(t, "Acquire behind an expiring lease", ch, ttl+2*time.Second)
			must(t, r.err)
			d := r.at.Sub(granted.Add(ttl))
			late = append(late, d)
			if d > deadlineBound() {
				t.Errorf("Acquire returned %v after the blocking lease's deadline, want <= %v (%s)", d, deadlineBound(), redistest.SchedDelay())
			}
			// Never before the deadline, by the backend's clock.
			if grant := r.l.Deadline().Add(-r.l.TTL()); grant.Before(holder.Deadline()) {
				t.Fatalf("waiter granted at %v, before the holder's deadline %v", grant, holder.Deadline())
			}
			wantErr(t, "holder's Refresh", holder.Refresh(e.ctx), allocator.ErrLeaseLost)
			must(t, r.l.Release(e.ctx))
		}
		p50, _, maxd := quantiles(late)
		t.Logf("Acquire behind a %v lease returned after its deadline: p50 %v, max %v", ttl, p50, maxd)
	}},
	{"waiters-are-served-one-at-a-time", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a")
		peer := e.peer(allocator.Config{LeaseTTL: long})
		holder := e.mustTry("holder", allocator.AcquireOptions{})
		const n = 8
		var inside atomic.Int32
		var served atomic.Int32
		var wg sync.WaitGroup
		var lat stats
		var released atomic.Int64 // UnixNano of the latest release
		for i := range n {
			a := e.a
			if i%2 == 1 {
				a = peer
			}
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
				defer cancel()
				l, err := a.Acquire(ctx, "waiter"+strconv.Itoa(i), allocator.AcquireOptions{})
				if err != nil {
					t.Errorf("waiter %d: %v", i, err)
					return
				}
				lat.add(time.Since(time.Unix(0, released.Load())))
				if inside.Add(1) != 1 {
					t.Errorf("two waiters hold the item at once")
				}
				v, _, err := e.pool.LockValue(ctx, "a")
				if err != nil || v != l.Value() {
					t.Errorf("waiter %d: lock holds %q, %v; want its value %q", i, v, err, l.Value())
				}
				time.Sleep(5 * time.Millisecond)
				inside.Add(-1)
				served.Add(1)
				released.Store(time.Now().UnixNano())
				if err := l.Release(ctx); err != nil {
					t.Errorf("waiter %d: Release: %v", i, err)
				}
			})
		}
		e.waitWaiters(n)
		released.Store(time.Now().UnixNano())
		must(t, holder.Release(e.ctx))
		wg.Wait()
		if served.Load() != n {
			t.Fatalf("%d of %d waiters served", served.Load(), n)
		}
		p50, _, maxd := quantiles(lat.ds)
		t.Logf("chain of %d waiters over two allocators: handoff p50 %v, max %v", n, p50, maxd)
		if maxd > handoffBound() {
			t.Errorf("a waiter got the item %v after the previous release, want <= %v (%s)", maxd, handoffBound(), redistest.SchedDelay())
		}
	}},
	{"release-hands-the-item-to-the-waiter-it-wakes", func(t *testing.T, b backend) {
		// A holder that loops straight back (Release, then TryAcquire at
		// once) must not take the item from the waiter its release woke;
		// once the waiter has gone, the item is free for anyone after at
		// most HandoffWindow.
		e := setup(t, b, allocator.Config{LeaseTTL: long, HandoffWindow: 300 * time.Millisecond}, "a")
		for round := range 5 {
			l := e.mustTry("holder", allocator.AcquireOptions{})
			ch := acquireAsync(t, e.ctx, e.a, "waiter", allocator.AcquireOptions{})
			e.waitWaiters(1)
			wantBlocked(t, "Acquire", ch)
			must(t, l.Release(e.ctx))
			if l2, err := e.try("barger", allocator.AcquireOptions{}); !errors.Is(err, allocator.ErrNoFreeItem) {
				t.Fatalf("round %d: a TryAcquire right after the release got %v, %v; the item was the woken waiter's", round, leaseItem(l2), err)
			}
			r := waitResult(t, "woken waiter", ch, time.Second)
			if r.l.Item() != "a" {
				t.Fatalf("round %d: waiter got %q, want a", round, r.l.Item())
			}
			must(t, r.l.Release(e.ctx))
		}
		// No waiter: a release frees the item for anyone at once.
		l := e.mustTry("holder", allocator.AcquireOptions{})
		must(t, l.Release(e.ctx))
		e.mustTry("next", allocator.AcquireOptions{})
	}},
	{"close-ends-blocked-acquire", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a")
		e.mustTry("holder", allocator.AcquireOptions{})
		other := e.peer(allocator.Config{})
		ch := acquireAsync(t, e.ctx, other, "w", allocator.AcquireOptions{})
		e.waitWaiters(1)
		wantBlocked(t, "Acquire", ch)
		start := time.Now()
		must(t, other.Close())
		r := waitResult(t, "Acquire on a closed allocator", ch, time.Second)
		wantErr(t, "Acquire after Close", r.err, allocator.ErrClosed)
		if took := r.at.Sub(start); took > handoffBound() {
			t.Fatalf("blocked Acquire returned %v after Close, want <= %v (%s)", took, handoffBound(), redistest.SchedDelay())
		}
		_, err := tryOn(t, e.ctx, other, "w", allocator.AcquireOptions{})
		wantErr(t, "TryAcquire after Close", err, allocator.ErrClosed)
		_, err = acquireOn(t, e.ctx, other, "w", allocator.AcquireOptions{})
		wantErr(t, "Acquire after Close", err, allocator.ErrClosed)
		must(t, other.Close()) // twice is fine
	}},
	{"abandoned-lease-is-recovered-at-its-deadline", func(t *testing.T, b backend) {
		const ttl = 200 * time.Millisecond
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a")
		var delays []time.Duration
		for range 3 {
			crashed := e.mustTry("crashed", allocator.AcquireOptions{TTL: ttl}) // never released
			e.wantNoFree("rescuer", allocator.AcquireOptions{})
			got, _ := tryEventually(t, e.ctx, e.a, "rescuer", "abandoned item allocatable", ttl+recoveryBound()+100*time.Millisecond)
			grant := got.Deadline().Add(-got.TTL())
			delay := grant.Sub(crashed.Deadline())
			delays = append(delays, delay)
			if delay < 0 || delay > recoveryBound() {
				t.Fatalf("granted %v after the abandoned lease's deadline, want within [0, %v] (%s)", delay, recoveryBound(), redistest.SchedDelay())
			}
			if got.Token() <= crashed.Token() {
				t.Fatalf("token %d after the abandoned %d", got.Token(), crashed.Token())
			}
			wantErr(t, "Refresh of the abandoned lease", crashed.Refresh(e.ctx), allocator.ErrLeaseLost)
			e.wantHeld(got)
			must(t, got.Release(e.ctx))
		}
		t.Logf("abandoned %v leases re-granted (polling TryAcquire) %v after their deadlines", ttl, delays)

	}},
	{"many-abandoned-leases-are-all-recovered", func(t *testing.T, b backend) {
		const ttl = 150 * time.Millisecond
		all := numbered("m", 40)
		e := setup(t, b, allocator.Config{LeaseTTL: ttl}, all...)
		// Distinct items: on a loaded machine a drain can outlast the short
		// TTL, and then its own first leases come back to it.
		distinct := func(ls []*allocator.Lease) int {
			seen := map[string]bool{}
			for _, l := range ls {
				seen[l.Item()] = true
			}
			return len(seen)
		}
		crashed := e.drain("crashed")
		if distinct(crashed) != len(all) {
			t.Fatalf("drained %d distinct items, want %d", distinct(crashed), len(all))
		}
		time.Sleep(ttl + recoveryBound())
		back := e.drain("rescuer")
		if distinct(back) != len(all) {
			t.Fatalf("%d of %d abandoned items allocatable %v after they were granted (%s)", distinct(back), len(all), ttl+recoveryBound(), redistest.SchedDelay())
		}
	}},
}
