package allocator_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// featureBehaviours: affinity, quarantine, fairness, mutual exclusion.
var featureBehaviours = []behaviour{
	{"prefer-gets-the-item-or-falls-back", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b", "c", "d", "e")
		ctx := e.ctx
		c := e.mustTry("w", allocator.AcquireOptions{Prefer: "c"})
		if c.Item() != "c" {
			t.Fatalf("Prefer c got %q", c.Item())
		}
		x2 := e.mustTry("w", allocator.AcquireOptions{Prefer: "c"}) // held: falls back
		if x2.Item() == "c" {
			t.Fatal("Prefer c handed out c twice")
		}
		x3 := e.mustTry("w", allocator.AcquireOptions{Prefer: "ghost"}) // not a member
		if x3.Item() == "ghost" || x3.Item() == "c" || x3.Item() == x2.Item() {
			t.Fatalf("Prefer ghost got %q", x3.Item())
		}
		e.wantValue("ghost", "", false)
		var free []string
		for _, it := range []string{"a", "b", "d", "e"} {
			if it != x2.Item() && it != x3.Item() {
				free = append(free, it)
			}
		}
		gone, direct := free[0], free[1]
		must(t, e.pool.Shrink(ctx, []string{gone}))
		wantBool(t, "pool.Lock", true)(e.pool.Lock(ctx, direct, "direct", long))
		e.wantNoFree("w", allocator.AcquireOptions{Prefer: gone})
		e.wantNoFree("w", allocator.AcquireOptions{Prefer: direct})
		e.wantValue(gone, "", false)
		e.wantValue(direct, "direct", true)
		// Prefer beats fairness: c is the most recently freed.
		must(t, x2.Release(ctx))
		time.Sleep(5 * time.Millisecond)
		must(t, c.Release(ctx))
		if l := e.mustTry("w", allocator.AcquireOptions{Prefer: "c"}); l.Item() != "c" {
			t.Fatalf("Prefer c (free) got %q", l.Item())
		}
		if l := e.mustTry("w", allocator.AcquireOptions{}); l.Item() != x2.Item() {
			t.Fatalf("got %q, want %q", l.Item(), x2.Item())
		}
	}},
	{"exact-leases-only-the-named-item", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long, MaxWait: 100 * time.Millisecond}, "a", "b", "c")
		ctx := e.ctx
		exact := func(item string) allocator.AcquireOptions {
			return allocator.AcquireOptions{Prefer: item, Exact: true}
		}
		b1 := e.mustTry("w", exact("b"))
		if b1.Item() != "b" {
			t.Fatalf("Exact b got %q", b1.Item())
		}
		e.wantNoFree("w", exact("b")) // held: no fallback to a or c
		e.wantNoFree("w", exact("ghost"))
		e.wantValue("a", "", false)
		e.wantValue("c", "", false)
		_, err := e.try("w", allocator.AcquireOptions{Exact: true})
		wantErr(t, "Exact without Prefer", err, allocator.ErrInvalidConfig)
		// Acquire waits for exactly that item and gets it when it is released.
		ch := acquireAsync(t, ctx, e.a, "w2", exact("b"))
		wantBlocked(t, "Acquire Exact b while held", ch)
		must(t, b1.Release(ctx))
		r := waitResult(t, "Acquire Exact b after release", ch, 2*time.Second)
		must(t, r.err)
		if r.l.Item() != "b" || r.l.Token() <= b1.Token() {
			t.Fatalf("Acquire Exact b got %q token %d (previous %d)", r.l.Item(), r.l.Token(), b1.Token())
		}
	}},
	{"binding-gets-its-previous-item-back", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b", "c", "d")
		peer := e.peer(allocator.Config{LeaseTTL: long})
		ctx := e.ctx
		job := allocator.AcquireOptions{Binding: "job"}
		l := e.mustTry("w", job)
		x := l.Item()
		must(t, l.Release(ctx)) // x is now the most recently freed item
		l = e.mustTry("w", job)
		if l.Item() != x {
			t.Fatalf("binding got %q, want its previous %q", l.Item(), x)
		}
		must(t, l.Release(ctx))
		// Another allocator over the same pool knows the binding too.
		l = mustTryOn(t, ctx, peer, "w", job)
		if l.Item() != x {
			t.Fatalf("binding via another allocator got %q, want %q", l.Item(), x)
		}
		must(t, l.Release(ctx))
		// x taken by someone else: fall back, and remember the new item.
		other := e.mustTry("other", allocator.AcquireOptions{Prefer: x})
		if other.Item() != x {
			t.Fatalf("Prefer %s got %q", x, other.Item())
		}
		l = e.mustTry("w", job)
		y := l.Item()
		if y == x {
			t.Fatal("binding handed out a held item")
		}
		must(t, l.Release(ctx))
		time.Sleep(5 * time.Millisecond)
		must(t, other.Release(ctx))
		if l = e.mustTry("w", job); l.Item() != y {
			t.Fatalf("binding got %q, want its latest item %q", l.Item(), y)
		}
		// A different binding is independent.
		l2 := e.mustTry("w", allocator.AcquireOptions{Binding: "job2"})
		if l2.Item() == y {
			t.Fatal("job2 got job's held item")
		}
		// The bound item held: fall back; nothing free: ErrNoFreeItem.
		e.drain("filler")
		e.wantNoFree("w", job)
	}},
	{"allocator-quarantine-holds-a-free-item", func(t *testing.T, b backend) {
		// Long enough for the checks below to run inside it on a loaded
		// machine (400ms was not, under a load average of 26).
		const d = time.Second
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		qBefore := e.now()
		must(t, e.a.Quarantine(e.ctx, "a", d))
		qLocal := time.Now()
		e.wantStatus("a", long, lock.Locked)
		e.wantStatus("a", 100*time.Millisecond, lock.Unavailable)
		if l := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"}); l.Item() != "b" {
			t.Fatalf("Prefer a during quarantine got %q", l.Item())
		}
		e.wantNoFree("w", allocator.AcquireOptions{Prefer: "a"})
		locked, free, err := e.pool.HealthCheck(e.ctx)
		must(t, err)
		if took := time.Since(qLocal); took > d-100*time.Millisecond {
			t.Fatalf("test too slow (%v) to check the quarantine (%s)", took, redistest.SchedDelay())
		}
		if locked != 2 || free != 0 {
			t.Fatalf("HealthCheck = %d, %d; want 2 locked", locked, free)
		}
		// A blocked Acquire gets it when the quarantine ends.
		r := waitResult(t, "Acquire behind a quarantine", acquireAsync(t, e.ctx, e.a, "w", allocator.AcquireOptions{}), d+2*time.Second)
		must(t, r.err)
		if r.l.Item() != "a" {
			t.Fatalf("got %q", r.l.Item())
		}
		if grant := r.l.Deadline().Add(-r.l.TTL()); grant.Before(qBefore.Truncate(time.Millisecond).Add(d)) {
			t.Fatalf("granted at %v, before the quarantine ended (%v + %v)", grant, qBefore, d)
		}
		late := r.at.Sub(qLocal.Add(d))
		t.Logf("Acquire returned %v after the quarantine ended", late)
		if late > deadlineBound() {
			t.Fatalf("Acquire returned %v after the quarantine ended, want <= %v (%s)", late, deadlineBound(), redistest.SchedDelay())
		}
	}},
	{"allocator-quarantine-takes-a-held-item", func(t *testing.T, b backend) {
		// Long enough for the six checks below to run inside it on a
		// loaded machine: with 300ms a Cluster run under make test saw
		// the quarantine end before the first KeyStatus.
		const d = 2 * time.Second
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		la := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		lb := e.mustTry("w", allocator.AcquireOptions{Prefer: "b"})
		start := time.Now()
		must(t, e.a.Quarantine(e.ctx, "a", d))
		must(t, e.a.Quarantine(e.ctx, "b", d))
		wantErr(t, "Refresh of a quarantined lease", la.Refresh(e.ctx), allocator.ErrLeaseLost)
		// Release is checked by the store: it must not lift the quarantine.
		wantErr(t, "Release of a quarantined lease", lb.Release(e.ctx), allocator.ErrLeaseLost)
		e.wantStatus("a", long, lock.Locked)
		e.wantStatus("b", long, lock.Locked)
		e.wantNoFree("w", allocator.AcquireOptions{})
		e.wantNoFree("w", allocator.AcquireOptions{Prefer: "b"})
		if took := time.Since(start); took > d {
			t.Fatalf("test too slow (%v) to check the quarantine (%s)", took, redistest.SchedDelay())
		}
		var got []string
		redistest.Eventually(t, "quarantined items back", d+recoveryBound()+100*time.Millisecond, func() bool {
			for _, l := range e.drain("w") {
				got = append(got, l.Item())
			}
			return len(got) == 2
		})
		took := time.Since(start)
		t.Logf("quarantined items allocatable %v after quarantine", took)
		if took < d-50*time.Millisecond {
			t.Fatalf("quarantine of %v lasted %v only", d, took)
		}
	}},
	{"lease-quarantine", func(t *testing.T, b backend) {
		// Long enough that the hold still has more than the 100ms
		// KeyStatus timeout below left after four calls on a loaded
		// machine (300ms had not, under make test).
		const d = time.Second
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		ctx := e.ctx
		l := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		qBefore := e.now()
		must(t, l.Quarantine(ctx, d))
		wantErr(t, "Release after Quarantine", l.Release(ctx), allocator.ErrLeaseReleased)
		wantErr(t, "Refresh after Quarantine", l.Refresh(ctx), allocator.ErrLeaseReleased)
		wantErr(t, "Quarantine twice", l.Quarantine(ctx, d), allocator.ErrLeaseReleased)
		e.wantStatus("a", long, lock.Locked)
		e.wantStatus("a", 100*time.Millisecond, lock.Unavailable)
		if v, _, err := e.pool.LockValue(ctx, "a"); err != nil || v == l.Value() {
			t.Fatalf("quarantined item holds %q, %v: still the lease's value", v, err)
		}
		if got := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"}); got.Item() != "b" {
			t.Fatalf("got %q", got.Item())
		}
		var back *allocator.Lease
		redistest.Eventually(t, "quarantined item back", d+recoveryBound()+100*time.Millisecond, func() bool {
			ls := e.drain("w")
			if len(ls) > 0 {
				back = ls[0]
			}
			return back != nil
		})
		if back.Item() != "a" {
			t.Fatalf("got %q", back.Item())
		}
		grant := back.Deadline().Add(-back.TTL())
		// -1ms: grants are stamped in whole milliseconds of one clock and
		// the memory backend's locks expire on the monotonic clock.
		if delay := grant.Sub(qBefore.Truncate(time.Millisecond).Add(d)); delay < -time.Millisecond || delay > recoveryBound()+20*time.Millisecond {
			t.Fatalf("quarantine of %v ended %v after it should (%s)", d, delay, redistest.SchedDelay())
		}
	}},
	{"fairness-longest-free-first", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, numbered("i", 6)...)
		ls := e.drain("w")
		if len(ls) != 6 {
			t.Fatalf("drained %d", len(ls))
		}
		var want []string
		for _, i := range []int{3, 1, 5, 0, 4, 2} {
			must(t, ls[i].Release(e.ctx))
			want = append(want, ls[i].Item())
			time.Sleep(5 * time.Millisecond)
		}
		again := e.drain("w")
		if got := items(again); !slices.Equal(got, want) {
			t.Fatalf("TryAcquire order %v, want release order %v", got, want)
		}
		must(t, again[0].Release(e.ctx))
		must(t, again[1].Release(e.ctx))
		// An expired lease's item has been free since its deadline, so it
		// goes before an item released after that.
		x := e.mustTry("w", allocator.AcquireOptions{Prefer: again[0].Item(), TTL: 100 * time.Millisecond})
		y := e.mustTry("w", allocator.AcquireOptions{Prefer: again[1].Item()})
		time.Sleep(150 * time.Millisecond)
		must(t, y.Release(e.ctx))
		if got := items(e.drain("w")); !slices.Equal(got, []string{x.Item(), y.Item()}) {
			t.Fatalf("TryAcquire order %v, want the expired %s before the released %s", got, x.Item(), y.Item())
		}
	}},
	{"round-robin-uses-every-item", func(t *testing.T, b backend) {
		const n, rounds = 6, 10
		e := setup(t, b, allocator.Config{LeaseTTL: long}, numbered("i", n)...)
		var seq []string
		for range n * rounds {
			l := e.mustTry("w", allocator.AcquireOptions{})
			seq = append(seq, l.Item())
			must(t, l.Release(e.ctx))
			time.Sleep(2 * time.Millisecond)
		}
		for i := n; i < len(seq); i++ {
			if seq[i] != seq[i-n] {
				t.Fatalf("sequential use is not round robin: %v", seq)
			}
		}
		if slices.Sort(seq[:n]); !slices.Equal(seq[:n], numbered("i", n)) {
			t.Fatalf("first round used %v", seq[:n])
		}
		// Concurrent workers: every item gets a fair share.
		const workers, cycles, m = 4, 60, 8
		e2 := setup(t, b, allocator.Config{LeaseTTL: long}, numbered("j", m)...)
		var mu sync.Mutex
		count := map[string]int{}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for range cycles {
					l, err := acquireOn(t, e2.ctx, e2.a, "w"+strconv.Itoa(w), allocator.AcquireOptions{})
					if err != nil {
						t.Errorf("Acquire: %v", err)
						return
					}
					mu.Lock()
					count[l.Item()]++
					mu.Unlock()
					time.Sleep(time.Millisecond)
					if err := l.Release(e2.ctx); err != nil {
						t.Errorf("Release: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		fair := workers * cycles / m
		for _, it := range numbered("j", m) {
			if count[it] < fair/3 {
				t.Fatalf("item %s used %d times of a fair %d: %v", it, count[it], fair, count)
			}
		}
		t.Logf("concurrent round robin use counts (fair %d): %v", fair, count)
	}},
	{"mutual-exclusion-in-process", func(t *testing.T, b backend) {
		const ttl = 2 * time.Second // never outlived: holds are short
		e := setup(t, b, allocator.Config{LeaseTTL: ttl}, "a", "b", "c", "d")
		peer := e.peer(allocator.Config{LeaseTTL: ttl})
		var inside [4]atomic.Int32
		var mu sync.Mutex
		last := map[string]int64{}
		var grants atomic.Int64
		stop := time.Now().Add(time.Second)
		var wg sync.WaitGroup
		for g := range 16 {
			a := e.a
			if g%2 == 1 {
				a = peer
			}
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(g), 7))
				for time.Now().Before(stop) {
					ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
					l, err := a.Acquire(ctx, "g"+strconv.Itoa(g), allocator.AcquireOptions{Binding: "b" + strconv.Itoa(g%3)})
					cancel()
					if err != nil {
						t.Errorf("Acquire: %v", err)
						return
					}
					grants.Add(1)
					slot := &inside[l.Item()[0]-'a']
					if slot.Add(1) != 1 {
						t.Errorf("item %s held twice at once", l.Item())
					}
					mu.Lock()
					if l.Token() <= last[l.Item()] {
						t.Errorf("item %s: token %d after %d", l.Item(), l.Token(), last[l.Item()])
					}
					last[l.Item()] = l.Token()
					mu.Unlock()
					if rng.IntN(3) == 0 {
						if err := l.Refresh(e.ctx); err != nil {
							t.Errorf("Refresh: %v", err)
						}
					}
					time.Sleep(time.Duration(rng.IntN(1500)) * time.Microsecond)
					slot.Add(-1)
					var end error
					if rng.IntN(4) == 0 {
						end = l.Quarantine(e.ctx, time.Millisecond)
					} else {
						end = l.Release(e.ctx)
					}
					if end != nil {
						t.Errorf("end lease: %v", end)
						return
					}
				}
			})
		}
		wg.Wait()
		t.Logf("%d grants by 16 goroutines over 2 allocators in 1s", grants.Load())
	}},
}
