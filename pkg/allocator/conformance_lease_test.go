package allocator_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// leaseBehaviours: TryAcquire, the lease's fields, Refresh, Release,
// KeepAlive, RefreshAll and bad input.
var leaseBehaviours = []behaviour{
	{"lost-lease-says-why", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		la := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		lb := e.mustTry("w", allocator.AcquireOptions{Prefer: "b"})
		must(t, e.pool.Update(e.ctx, "a", "thief", time.Minute))
		_, err := e.pool.Unlock(e.ctx, "b")
		must(t, err)
		for _, c := range []struct {
			l    *allocator.Lease
			want allocator.LostReason
			call func(*allocator.Lease) error
		}{
			{la, allocator.LostTaken, func(l *allocator.Lease) error { return l.Refresh(e.ctx) }},
			{lb, allocator.LostGone, func(l *allocator.Lease) error { return l.Release(e.ctx) }},
		} {
			err := c.call(c.l)
			var lost *allocator.LostError
			if !errors.Is(err, allocator.ErrLeaseLost) || !errors.As(err, &lost) || lost.Reason != c.want || lost.Item != c.l.Item() {
				t.Fatalf("lease on %s: got %v (%+v); want a LostError, reason %q", c.l.Item(), err, lost, c.want)
			}
			// Later calls report the same loss.
			err = c.l.Refresh(e.ctx)
			if !errors.As(err, &lost) || lost.Reason != c.want {
				t.Fatalf("lease on %s, again: got %v; want reason %q", c.l.Item(), err, c.want)
			}
		}
		if v, _, _ := e.pool.LockValue(e.ctx, "a"); v != "thief" {
			t.Fatalf("a holds %q; want the thief's lock untouched", v)
		}
	}},
	{"try-acquire-hands-out-each-item-once", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b", "c")
		var got []*allocator.Lease
		for range 3 {
			l := e.mustTry("w", allocator.AcquireOptions{})
			e.wantHeld(l)
			got = append(got, l)
		}
		names := items(got)
		slices.Sort(names)
		if !slices.Equal(names, []string{"a", "b", "c"}) {
			t.Fatalf("items handed out = %v, want a, b, c once each", names)
		}
		e.wantNoFree("w", allocator.AcquireOptions{})
		e.wantNoFree("other", allocator.AcquireOptions{})
		locked, free, err := e.pool.HealthCheck(e.ctx)
		must(t, err)
		if locked != 3 || free != 0 {
			t.Fatalf("HealthCheck = %d locked, %d free; want 3, 0", locked, free)
		}
	}},
	{"empty-pool-try-acquire-is-no-free-item", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{})
		for range 3 {
			e.wantNoFree("w", allocator.AcquireOptions{})
		}
		e.wantNoFree("w", allocator.AcquireOptions{Prefer: "ghost", Binding: "job"})
		e.wantValue("ghost", "", false)
	}},
	{"64-goroutines-race-for-4-items", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b", "c", "d")
		peer := e.peer(allocator.Config{LeaseTTL: long})
		var mu sync.Mutex
		var won []*allocator.Lease
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 64 {
			a := e.a
			if i%2 == 1 {
				a = peer
			}
			wg.Go(func() {
				<-start
				l, err := a.TryAcquire(e.ctx, "w"+strconv.Itoa(i), allocator.AcquireOptions{})
				switch {
				case l == nil && err == nil, l != nil && err != nil:
					t.Errorf("TryAcquire = %v, %v", leaseItem(l), err)
				case errors.Is(err, allocator.ErrNoFreeItem):
				case err != nil:
					t.Errorf("TryAcquire: %v", err)
				default:
					mu.Lock()
					won = append(won, l)
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
		names := items(won)
		slices.Sort(names)
		if !slices.Equal(names, []string{"a", "b", "c", "d"}) {
			t.Fatalf("winners got %v, want a, b, c, d once each", names)
		}
		for _, l := range won {
			e.wantHeld(l)
		}
	}},
	{"lease-fields", func(t *testing.T, b backend) {
		const ttl = 2 * time.Second
		e := setup(t, b, allocator.Config{LeaseTTL: ttl}, "a", "b")
		before := e.now()
		l := e.mustTry("worker-1", allocator.AcquireOptions{Prefer: "a"})
		after := e.now()
		if l.Item() != "a" || l.Owner() != "worker-1" {
			t.Fatalf("lease Item %q Owner %q, want a, worker-1", l.Item(), l.Owner())
		}
		if l.Token() <= 0 {
			t.Fatalf("Token = %d, want > 0", l.Token())
		}
		if want := "worker-1#" + strconv.FormatInt(l.Token(), 10); l.Value() != want {
			t.Fatalf("Value = %q, want %q", l.Value(), want)
		}
		if l.TTL() != ttl {
			t.Fatalf("TTL() = %v, want the configured %v", l.TTL(), ttl)
		}
		wantDeadline(t, "Deadline after TryAcquire", l.Deadline(), before, after, ttl)
		e.wantHeld(l)
		left, found, err := e.pool.TTL(e.ctx, "a")
		must(t, err)
		if !found || left > ttl || left < ttl-time.Second {
			t.Fatalf("pool.TTL(a) = %v, %v; want about %v", left, found, ttl)
		}

		// AcquireOptions.TTL overrides the configured one.
		before = e.now()
		l2 := e.mustTry("worker-2", allocator.AcquireOptions{TTL: 5 * time.Second})
		after = e.now()
		if l2.TTL() != 5*time.Second {
			t.Fatalf("TTL() = %v, want 5s", l2.TTL())
		}
		wantDeadline(t, "Deadline with TTL 5s", l2.Deadline(), before, after, 5*time.Second)
		if l2.Value() == l.Value() || l2.Token() == l.Token() {
			t.Fatalf("two leases share a value or token: %q, %q", l.Value(), l2.Value())
		}
	}},
	{"tokens-strictly-increase", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		peer := e.peer(allocator.Config{LeaseTTL: long})
		var last int64
		for i := range 200 {
			a := e.a
			if i%3 == 0 {
				a = peer
			}
			l := mustTryOn(t, e.ctx, a, "w", allocator.AcquireOptions{})
			if l.Token() <= last {
				t.Fatalf("acquire %d: token %d after %d", i, l.Token(), last)
			}
			last = l.Token()
			must(t, l.Release(e.ctx))
		}

		// Concurrently, over two allocators: tokens are unique, and on
		// each item they increase in the order the item was held.
		type grant struct {
			item  string
			token int64
			seq   int64
		}
		var mu sync.Mutex
		var seq int64
		var grants []grant
		var wg sync.WaitGroup
		for g := range 16 {
			a := e.a
			if g%2 == 1 {
				a = peer
			}
			wg.Go(func() {
				var mine int64
				for range 15 {
					l, err := a.Acquire(e.ctx, "g"+strconv.Itoa(g), allocator.AcquireOptions{})
					if err != nil {
						t.Errorf("Acquire: %v", err)
						return
					}
					if l.Token() <= mine {
						t.Errorf("goroutine %d: token %d after its own %d", g, l.Token(), mine)
					}
					mine = l.Token()
					mu.Lock() // the item is held: grants of one item are serial
					seq++
					grants = append(grants, grant{l.Item(), l.Token(), seq})
					mu.Unlock()
					if err := l.Release(e.ctx); err != nil {
						t.Errorf("Release: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		seen := map[int64]bool{}
		lastOn := map[string]int64{}
		for _, g := range grants {
			if seen[g.token] {
				t.Fatalf("token %d handed out twice", g.token)
			}
			seen[g.token] = true
			if g.token <= lastOn[g.item] || g.token <= last {
				t.Fatalf("item %s: token %d after %d (sequential phase ended at %d)", g.item, g.token, lastOn[g.item], last)
			}
			lastOn[g.item] = g.token
		}
		if len(grants) != 16*15 {
			t.Fatalf("%d grants, want %d", len(grants), 16*15)
		}
	}},
	{"refresh-extends", func(t *testing.T, b backend) {
		// The lease must outlive the 100ms pause and a loaded machine's
		// scheduling delay (325ms seen under make test: 400ms was short).
		const ttl = 2 * time.Second
		e := setup(t, b, allocator.Config{LeaseTTL: ttl}, "a")
		l := e.mustTry("w", allocator.AcquireOptions{})
		d0 := l.Deadline()
		time.Sleep(100 * time.Millisecond)
		before := e.now()
		must(t, l.Refresh(e.ctx))
		after := e.now()
		d1 := l.Deadline()
		wantDeadline(t, "Deadline after Refresh", d1, before, after, ttl)
		if d1.Sub(d0) < 80*time.Millisecond {
			t.Fatalf("Refresh moved the deadline by %v only (from %v to %v)", d1.Sub(d0), d0, d1)
		}
		// Refreshing keeps it held across several TTLs.
		for range 10 {
			time.Sleep(ttl / 4)
			must(t, l.Refresh(e.ctx))
		}
		e.wantHeld(l)
		left, found, err := e.pool.TTL(e.ctx, "a")
		must(t, err)
		if !found || left < ttl/2 || left > ttl {
			t.Fatalf("pool.TTL after Refresh = %v, %v; want about %v", left, found, ttl)
		}
		e.wantNoFree("other", allocator.AcquireOptions{})
		must(t, l.Release(e.ctx))
	}},
	{"refresh-after-expiry-is-lease-lost", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{}, "a")
		l := e.mustTry("w", allocator.AcquireOptions{TTL: 50 * time.Millisecond})
		time.Sleep(150 * time.Millisecond)
		wantErr(t, "Refresh after expiry", l.Refresh(e.ctx), allocator.ErrLeaseLost)
		e.wantValue("a", "", false) // a failed refresh does not recreate the lock
		wantErr(t, "Refresh again", l.Refresh(e.ctx), allocator.ErrLeaseLost)
		wantErr(t, "Release of a lost lease", l.Release(e.ctx), allocator.ErrLeaseLost)
		wantErr(t, "Quarantine of a lost lease", l.Quarantine(e.ctx, time.Minute), allocator.ErrLeaseLost)
		_, err := l.KeepAlive(e.ctx, allocator.KeepAliveOptions{})
		wantErr(t, "KeepAlive of a lost lease", err, allocator.ErrLeaseLost)
		e.wantValue("a", "", false)
		l2 := e.mustTry("w2", allocator.AcquireOptions{})
		if l2.Item() != "a" {
			t.Fatalf("got %q, want a", l2.Item())
		}
	}},
	{"refresh-after-someone-else-took-it-is-lease-lost", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b", "c")
		ctx := e.ctx
		// (1) Expired and re-granted by the allocator.
		old := e.mustTry("w", allocator.AcquireOptions{Prefer: "a", TTL: 50 * time.Millisecond})
		time.Sleep(150 * time.Millisecond)
		taker := e.mustTry("taker", allocator.AcquireOptions{Prefer: "a"})
		if taker.Item() != "a" {
			t.Fatalf("taker got %q, want a", taker.Item())
		}
		wantErr(t, "Refresh after re-grant", old.Refresh(ctx), allocator.ErrLeaseLost)
		e.wantHeld(taker)
		// (2) Taken forcefully by a pkg/lock user while live.
		l := e.mustTry("w", allocator.AcquireOptions{Prefer: "b"})
		wantBool(t, "pool.Unlock", true)(e.pool.Unlock(ctx, "b"))
		wantBool(t, "pool.Lock", true)(e.pool.Lock(ctx, "b", "intruder", long))
		wantErr(t, "Refresh after pool.Unlock+Lock", l.Refresh(ctx), allocator.ErrLeaseLost)
		wantErr(t, "Release after it", l.Release(ctx), allocator.ErrLeaseLost)
		e.wantValue("b", "intruder", true)
		// (3) Overwritten by pool.Update; Release (checked by the store,
		// not locally) must leave the new value alone.
		l3 := e.mustTry("w", allocator.AcquireOptions{Prefer: "c"})
		must(t, e.pool.Update(ctx, "c", "admin", long))
		wantErr(t, "Release after pool.Update", l3.Release(ctx), allocator.ErrLeaseLost)
		e.wantValue("c", "admin", true)
		wantErr(t, "Refresh after it", l3.Refresh(ctx), allocator.ErrLeaseLost)
		e.wantValue("c", "admin", true)
	}},
	{"release-frees-at-once-and-is-checked", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a")
		ctx := e.ctx
		l := e.mustTry("w", allocator.AcquireOptions{})
		e.wantNoFree("w2", allocator.AcquireOptions{})
		must(t, l.Release(ctx))
		e.wantValue("a", "", false)
		e.wantStatus("a", long, lock.Free)
		l2 := e.mustTry("w2", allocator.AcquireOptions{}) // at once, no waiting
		if l2.Item() != "a" || l2.Token() <= l.Token() {
			t.Fatalf("after Release got %q token %d (old token %d)", l2.Item(), l2.Token(), l.Token())
		}
		wantErr(t, "Release twice", l.Release(ctx), allocator.ErrLeaseReleased)
		wantErr(t, "Refresh after Release", l.Refresh(ctx), allocator.ErrLeaseReleased)
		wantErr(t, "Quarantine after Release", l.Quarantine(ctx, time.Minute), allocator.ErrLeaseReleased)
		_, err := l.KeepAlive(ctx, allocator.KeepAliveOptions{})
		wantErr(t, "KeepAlive after Release", err, allocator.ErrLeaseReleased)
		lost, err := e.a.RefreshAll(ctx, []*allocator.Lease{l})
		must(t, err)
		if len(lost) != 0 {
			t.Fatalf("RefreshAll of a released lease reported it lost")
		}
		// None of that touched the new holder's lock.
		e.wantHeld(l2)
		wantErr(t, "Release thrice", l.Release(ctx), allocator.ErrLeaseReleased)
	}},
	{"concurrent-release-is-idempotent", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a")
		for round := range 5 {
			l := e.mustTry("w", allocator.AcquireOptions{})
			errs := make([]error, 16)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range errs {
				wg.Go(func() { <-start; errs[i] = l.Release(e.ctx) })
			}
			close(start)
			wg.Wait()
			ok := 0
			for _, err := range errs {
				switch {
				case err == nil:
					ok++
				case !errors.Is(err, allocator.ErrLeaseReleased):
					t.Errorf("round %d: concurrent Release = %v, want nil or ErrLeaseReleased", round, err)
				}
			}
			if ok != 1 {
				t.Errorf("round %d: %d of 16 concurrent Releases succeeded, want 1", round, ok)
			}
			wantErr(t, "Release afterwards", l.Release(e.ctx), allocator.ErrLeaseReleased)
			wantErr(t, "Refresh afterwards", l.Refresh(e.ctx), allocator.ErrLeaseReleased)
		}
	}},
	{"stale-lease-of-same-owner-cannot-touch-new-lease", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a")
		ctx := e.ctx
		stale := func() (old, cur *allocator.Lease) {
			t.Helper()
			old = e.mustTry("same-owner", allocator.AcquireOptions{TTL: 50 * time.Millisecond})
			time.Sleep(150 * time.Millisecond)
			cur = e.mustTry("same-owner", allocator.AcquireOptions{})
			if cur.Item() != old.Item() || cur.Value() == old.Value() || cur.Token() <= old.Token() {
				t.Fatalf("re-acquire: item %q value %q token %d; old item %q value %q token %d",
					cur.Item(), cur.Value(), cur.Token(), old.Item(), old.Value(), old.Token())
			}
			return old, cur
		}
		// Release first (checked by the store).
		old, cur := stale()
		wantErr(t, "stale Release", old.Release(ctx), allocator.ErrLeaseLost)
		e.wantHeld(cur)
		must(t, cur.Release(ctx))
		// Quarantine first.
		old, cur = stale()
		wantErr(t, "stale Quarantine", old.Quarantine(ctx, long), allocator.ErrLeaseLost)
		e.wantHeld(cur)
		must(t, cur.Release(ctx))
		// RefreshAll first: reports it lost, does not extend the new one.
		old, cur = stale()
		must(t, cur.Refresh(ctx))
		lost, err := e.a.RefreshAll(ctx, []*allocator.Lease{old})
		must(t, err)
		if len(lost) != 1 || lost[0] != old {
			t.Fatalf("RefreshAll(stale) lost = %v, want the stale lease", items(lost))
		}
		e.wantHeld(cur)
		// Refresh first.
		wantErr(t, "stale Refresh", old.Refresh(ctx), allocator.ErrLeaseLost)
		e.wantHeld(cur)
		must(t, cur.Refresh(ctx))
		must(t, cur.Release(ctx))
	}},
	{"keepalive-keeps-a-short-lease", func(t *testing.T, b backend) {
		// Short, and still sized for a loaded 2-core machine: the guard
		// (TTL - TTL/5 without a confirmed refresh) tolerates a ~1s stall
		// between two refreshes; a 1s TTL (450ms) was lost once under a
		// load average of 15, 300ms tolerated 140ms, and make test saw
		// 340ms.
		const ttl = 2 * time.Second
		e := setup(t, b, allocator.Config{}, "a")
		l := e.mustTry("w", allocator.AcquireOptions{TTL: ttl})
		var refreshed, failed atomic.Int64
		k, err := l.KeepAlive(e.ctx, allocator.KeepAliveOptions{OnRefresh: func(err error) {
			if err != nil {
				failed.Add(1)
			} else {
				refreshed.Add(1)
			}
		}})
		must(t, err)
		time.Sleep(2 * ttl)
		select {
		case <-k.Done():
			t.Fatalf("keep-alive ended after %v: %v (%s)", 2*ttl, k.Err(), redistest.SchedDelay())
		default:
		}
		if k.Err() != nil || k.Context().Err() != nil {
			t.Fatalf("keep-alive running but Err = %v, Context().Err() = %v", k.Err(), k.Context().Err())
		}
		e.wantHeld(l)
		e.wantNoFree("other", allocator.AcquireOptions{})
		k.Stop()
		// Every TTL/3 for 2 TTLs: about 6; scheduling may cost a few,
		// and under load a refresh may miss its deadline (reported as a
		// failure) without the lease being lost.
		if n, f := refreshed.Load(), failed.Load(); n < 3 || n+f > 8 {
			t.Fatalf("OnRefresh saw %d refreshes and %d failures; want >= 3 successes of about 6 calls (%s)", n, f, redistest.SchedDelay())
		}
		select {
		case <-k.Done():
		default:
			t.Fatal("Done not closed after Stop")
		}
		if errors.Is(context.Cause(k.Context()), allocator.ErrLeaseLost) {
			t.Fatalf("Stop reported the lease lost: %v", context.Cause(k.Context()))
		}
		e.wantHeld(l) // Stop does not release
		must(t, l.Release(e.ctx))
	}},
	{"keepalive-reports-loss-to-pool-unlock", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{}, "a")
		l := e.mustTry("w", allocator.AcquireOptions{TTL: lossTTL})
		k := keepAliveRunning(t, e.ctx, l)
		defer k.Stop()
		start := time.Now()
		wantBool(t, "pool.Unlock", true)(e.pool.Unlock(e.ctx, "a"))
		wantBool(t, "pool.Lock", true)(e.pool.Lock(e.ctx, "a", "intruder", long))
		wantLoss(t, k, start, lossBound())
		wantErr(t, "Refresh", l.Refresh(e.ctx), allocator.ErrLeaseLost)
		e.wantValue("a", "intruder", true)
	}},
	{"keepalive-reports-loss-to-quarantine", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{}, "a", "b")
		peer := e.peer(allocator.Config{})
		for _, q := range []struct {
			item string
			a    *allocator.Allocator
		}{{"a", e.a}, {"b", peer}} {
			l := e.mustTry("w", allocator.AcquireOptions{TTL: lossTTL, Prefer: q.item})
			k := keepAliveRunning(t, e.ctx, l)
			start := time.Now()
			must(t, q.a.Quarantine(e.ctx, q.item, long))
			wantLoss(t, k, start, lossBound())
			e.wantStatus(q.item, 2*long, lock.Locked)
			wantErr(t, "Release after quarantine", l.Release(e.ctx), allocator.ErrLeaseLost)
			e.wantStatus(q.item, 2*long, lock.Locked)
			k.Stop()
		}
	}},
	{"keepalive-ends-with-its-context", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{}, "a")
		l := e.mustTry("w", allocator.AcquireOptions{TTL: 300 * time.Millisecond})
		ctx, cancel := context.WithCancel(e.ctx)
		k, err := l.KeepAlive(ctx, allocator.KeepAliveOptions{})
		must(t, err)
		cancel()
		select {
		case <-k.Done():
		case <-time.After(time.Second):
			t.Fatal("keep-alive did not end with its context")
		}
		if cause := context.Cause(k.Context()); !errors.Is(cause, context.Canceled) || errors.Is(cause, allocator.ErrLeaseLost) {
			t.Fatalf("cause = %v, want context.Canceled", cause)
		}
		e.wantHeld(l)
		// Bad options.
		for _, o := range []allocator.KeepAliveOptions{
			{Interval: 300 * time.Millisecond},
			{Interval: 250 * time.Millisecond, Margin: 100 * time.Millisecond},
			{Margin: 300 * time.Millisecond},
			{Interval: -time.Millisecond},
		} {
			_, err := l.KeepAlive(e.ctx, o)
			wantErr(t, "KeepAlive with bad options", err, allocator.ErrInvalidConfig)
		}
		e.wantHeld(l)
	}},
	{"refresh-all-returns-exactly-the-lost", func(t *testing.T, b backend) {
		const n = 1100 // more than one round trip's 1,000
		e := setup(t, b, allocator.Config{LeaseTTL: 20 * time.Second}, numbered("it", n)...)
		leases := e.drain("w")
		if len(leases) != n {
			t.Fatalf("drained %d leases, want %d", len(leases), n)
		}
		slices.SortFunc(leases, func(x, y *allocator.Lease) int { return strings.Compare(x.Item(), y.Item()) })
		wantLost := map[*allocator.Lease]bool{}
		for i, l := range leases {
			switch {
			case i%14 == 0: // taken by someone else
				wantBool(t, "pool.Unlock", true)(e.pool.Unlock(e.ctx, l.Item()))
				wantBool(t, "pool.Lock", true)(e.pool.Lock(e.ctx, l.Item(), "intruder", long))
				wantLost[l] = true
			case i%7 == 0: // gone
				wantBool(t, "pool.Unlock", true)(e.pool.Unlock(e.ctx, l.Item()))
				wantLost[l] = true
			}
		}
		must(t, leases[1].Release(e.ctx)) // released leases are skipped
		before := e.now()
		time.Sleep(20 * time.Millisecond)
		deadlines := map[*allocator.Lease]time.Time{}
		for _, l := range leases {
			deadlines[l] = l.Deadline()
		}
		lost, err := e.a.RefreshAll(e.ctx, append(slices.Clone(leases), nil))
		must(t, err)
		got := map[*allocator.Lease]bool{}
		for _, l := range lost {
			if got[l] {
				t.Fatalf("lease %s reported lost twice", l.Item())
			}
			got[l] = true
			if !wantLost[l] {
				t.Fatalf("lease %s reported lost, but it is held", l.Item())
			}
		}
		if len(got) != len(wantLost) {
			t.Fatalf("RefreshAll reported %d lost, want %d", len(got), len(wantLost))
		}
		for i, l := range leases {
			switch {
			case wantLost[l]:
				wantErr(t, "Refresh of a lost lease", l.Refresh(e.ctx), allocator.ErrLeaseLost)
				if i%14 == 0 {
					e.wantValue(l.Item(), "intruder", true)
				}
			case i == 1:
			default:
				if !l.Deadline().After(deadlines[l]) || l.Deadline().Before(before.Add(l.TTL())) {
					t.Fatalf("lease %s: deadline %v not extended (was %v)", l.Item(), l.Deadline(), deadlines[l])
				}
			}
		}
		locked, free, err := e.pool.HealthCheck(e.ctx)
		must(t, err)
		wantLocked := int64(n - 1 - len(wantLost)/2) // the "gone" ones and the released one are free
		if locked != wantLocked || free != n-wantLocked {
			t.Fatalf("HealthCheck = %d locked, %d free; want %d, %d", locked, free, wantLocked, n-wantLocked)
		}
	}},
	{"refresh-all-keeps-each-lease-ttl", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{}, "a", "b", "c", "d")
		short := e.mustTry("w", allocator.AcquireOptions{TTL: 3 * time.Second, Prefer: "a"})
		longer := e.mustTry("w", allocator.AcquireOptions{TTL: 40 * time.Second, Prefer: "b"})
		short2 := e.mustTry("w", allocator.AcquireOptions{TTL: 3 * time.Second, Prefer: "c"})
		time.Sleep(20 * time.Millisecond)
		lost, err := e.a.RefreshAll(e.ctx, []*allocator.Lease{short, longer, short2})
		must(t, err)
		if len(lost) != 0 {
			t.Fatalf("lost %v", items(lost))
		}
		for _, c := range []struct {
			item   string
			lo, hi time.Duration
		}{{"a", 2 * time.Second, 3 * time.Second}, {"b", 35 * time.Second, 40 * time.Second}, {"c", 2 * time.Second, 3 * time.Second}} {
			left, found, err := e.pool.TTL(e.ctx, c.item)
			must(t, err)
			if !found || left < c.lo || left > c.hi {
				t.Fatalf("pool.TTL(%s) after RefreshAll = %v, %v; want in [%v, %v]", c.item, left, found, c.lo, c.hi)
			}
		}
	}},
	{"bad-input-is-rejected-and-changes-nothing", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		ctx := e.ctx
		held := e.mustTry("holder", allocator.AcquireOptions{Prefer: "a"})
		before := e.snapshot()
		for _, owner := range []string{"", strings.Repeat("o", allocator.MaxOwnerLen+1), "a\x00b", "\x00"} {
			_, err := e.try(owner, allocator.AcquireOptions{})
			wantErr(t, "TryAcquire(bad owner)", err, allocator.ErrInvalidOwner)
			_, err = acquireOn(t, ctx, e.a, owner, allocator.AcquireOptions{})
			wantErr(t, "Acquire(bad owner)", err, allocator.ErrInvalidOwner)
		}
		for _, ttl := range []time.Duration{500 * time.Microsecond, time.Nanosecond, -time.Second} {
			_, err := e.try("w", allocator.AcquireOptions{TTL: ttl})
			wantErr(t, "TryAcquire(TTL "+ttl.String()+")", err, allocator.ErrInvalidConfig)
			_, err = acquireOn(t, ctx, e.a, "w", allocator.AcquireOptions{TTL: ttl})
			wantErr(t, "Acquire(TTL "+ttl.String()+")", err, allocator.ErrInvalidConfig)
		}
		for _, opts := range []allocator.AcquireOptions{
			{Prefer: "b\x00"},
			{Prefer: strings.Repeat("k", lock.MaxKeyLen+1)},
			{Binding: "job\x00"},
		} {
			_, err := e.try("w", opts)
			wantErr(t, "TryAcquire(bad name)", err, lock.ErrInvalidKey)
		}
		wantErr(t, "Quarantine(empty item)", e.a.Quarantine(ctx, "", time.Second), lock.ErrInvalidKey)
		wantErr(t, "Quarantine(NUL item)", e.a.Quarantine(ctx, "b\x00", time.Second), lock.ErrInvalidKey)
		for _, d := range []time.Duration{0, 500 * time.Microsecond, -time.Second} {
			wantErr(t, "Allocator.Quarantine("+d.String()+")", e.a.Quarantine(ctx, "b", d), allocator.ErrInvalidConfig)
			wantErr(t, "Lease.Quarantine("+d.String()+")", held.Quarantine(ctx, d), allocator.ErrInvalidConfig)
		}
		_, err := held.KeepAlive(ctx, allocator.KeepAliveOptions{Interval: 2 * long})
		wantErr(t, "KeepAlive(interval > TTL)", err, allocator.ErrInvalidConfig)
		// A done context is an error, never nil, nil, and writes nothing.
		done, cancel := context.WithCancel(ctx)
		cancel()
		_, err = tryOn(t, done, e.a, "w", allocator.AcquireOptions{})
		wantErr(t, "TryAcquire(cancelled ctx)", err, context.Canceled)
		_, err = acquireOn(t, done, e.a, "w", allocator.AcquireOptions{})
		wantErr(t, "Acquire(cancelled ctx)", err, context.Canceled)
		if after := e.snapshot(); after != before {
			t.Fatalf("bad input changed the pool:\nbefore %s\nafter  %s", before, after)
		}
		e.wantHeld(held)
		// Bad configs are refused by the constructor.
		for _, cfg := range []allocator.Config{
			{LeaseTTL: 500 * time.Microsecond},
			{LeaseTTL: -time.Second},
			{WakeWaiters: -1},
			{WakeWaiters: 1001},
			{SyncInterval: 500 * time.Microsecond},
			{SyncInterval: time.Second, FullSyncInterval: 500 * time.Millisecond},
			{MaxWait: 500 * time.Microsecond},
		} {
			a, err := e.b.attach(t, e.pool, cfg)
			if a != nil {
				t.Fatalf("constructor with %+v returned an allocator", cfg)
			}
			wantErr(t, "constructor", err, allocator.ErrInvalidConfig)
		}
		if after := e.snapshot(); after != before {
			t.Fatalf("bad config changed the pool:\nbefore %s\nafter  %s", before, after)
		}
		// The limits themselves are fine.
		l := e.mustTry(strings.Repeat("o", allocator.MaxOwnerLen), allocator.AcquireOptions{TTL: time.Millisecond})
		if l.Item() != "b" || l.Owner() != strings.Repeat("o", allocator.MaxOwnerLen) {
			t.Fatalf("1 KiB owner got %q", l.Item())
		}
	}},
}

// wantDeadline asserts that a deadline is ttl after some instant between
// before and after, by the backend's clock, to the millisecond.
func wantDeadline(t *testing.T, what string, d, before, after time.Time, ttl time.Duration) {
	t.Helper()
	lo := before.Truncate(time.Millisecond).Add(ttl)
	hi := after.Add(ttl)
	if d.Before(lo) || d.After(hi) {
		t.Fatalf("%s = %v, want within [%v, %v] (TTL %v after the call; %s)", what, d, lo, hi, ttl, redistest.SchedDelay())
	}
}

// keepAliveRunning starts a keep-alive of l with the default options and
// returns once it has refreshed l.
// lossTTL is the lease TTL of the loss-reporting cases: the keep-alive
// refreshes every TTL/3 and gives up TTL/5 before the TTL, so its first
// refresh may be TTL*7/15 late. 300ms let a keep-alive give up before its
// first refresh when timers ran 370ms late under make test on a loaded
// machine, and 1.5s when they ran 873ms late (load average 30).
const lossTTL = 3 * time.Second

// lossBound: a loss is reported this soon after it happened: by the next
// refresh, one interval (TTL/3) away, plus the scheduling margin.
func lossBound() time.Duration { return lossTTL/3 + 500*time.Millisecond + redistest.Slack() }

func keepAliveRunning(t *testing.T, ctx context.Context, l *allocator.Lease) *allocator.KeepAlive {
	t.Helper()
	var refreshed atomic.Int64
	k, err := l.KeepAlive(ctx, allocator.KeepAliveOptions{OnRefresh: func(err error) {
		if err == nil {
			refreshed.Add(1)
		}
	}})
	must(t, err)
	redistest.Eventually(t, "the keep-alive's first refresh", 5*time.Second, func() bool {
		if err := k.Err(); err != nil {
			t.Fatalf("keep-alive ended before its first refresh: %v (%s)", err, redistest.SchedDelay())
		}
		return refreshed.Load() > 0
	})
	return k
}

// wantLoss waits for a keep-alive to report its lease lost.
func wantLoss(t *testing.T, k *allocator.KeepAlive, since time.Time, within time.Duration) {
	t.Helper()
	select {
	case <-k.Done():
	case <-time.After(within):
		t.Fatalf("keep-alive did not report the loss within %v (%s)", within, redistest.SchedDelay())
	}
	t.Logf("keep-alive reported the loss after %v", time.Since(since).Round(time.Millisecond))
	if cause := context.Cause(k.Context()); !errors.Is(cause, allocator.ErrLeaseLost) {
		t.Fatalf("context.Cause = %v, want ErrLeaseLost", cause)
	}
	if !errors.Is(k.Err(), allocator.ErrLeaseLost) {
		t.Fatalf("Err = %v, want ErrLeaseLost", k.Err())
	}
	if k.Context().Err() == nil {
		t.Fatal("Context not cancelled")
	}
}

func wantBool(t testing.TB, what string, want bool) func(bool, error) {
	t.Helper()
	return func(got bool, err error) {
		t.Helper()
		must(t, err)
		if got != want {
			t.Fatalf("%s = %v, want %v", what, got, want)
		}
	}
}
