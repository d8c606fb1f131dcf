package allocator_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// poolBehaviours: the allocator and plain pkg/lock users of the same pool.
var poolBehaviours = []behaviour{
	{"extend-then-sync-is-allocatable", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a")
		e.mustTry("w", allocator.AcquireOptions{})
		e.wantNoFree("w", allocator.AcquireOptions{})
		must(t, e.pool.Extend(e.ctx, []string{"b", "c"}))
		must(t, e.a.Sync(e.ctx))
		got := items(e.drain("w"))
		slices.Sort(got)
		if !slices.Equal(got, []string{"b", "c"}) {
			t.Fatalf("after Extend and Sync got %v, want b, c", got)
		}
	}},
	{"extend-is-allocatable-within-1s", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a")
		peer := e.peer(allocator.Config{LeaseTTL: long})
		e.mustTry("w", allocator.AcquireOptions{})
		// TryAcquire.
		must(t, e.pool.Extend(e.ctx, []string{"b"}))
		l, took := tryEventually(t, e.ctx, e.a, "w", "extended item allocatable by TryAcquire", syncBound)
		if l.Item() != "b" {
			t.Fatalf("got %q", l.Item())
		}
		t.Logf("extended item allocatable by TryAcquire after %v", took)
		// A blocked Acquire, on either allocator, is woken by it.
		for i, a := range []*allocator.Allocator{e.a, peer} {
			ch := acquireAsync(t, e.ctx, a, "w", allocator.AcquireOptions{})
			e.waitWaiters(1)
			wantBlocked(t, "Acquire", ch)
			start := time.Now()
			item := []string{"c", "d"}[i]
			must(t, e.pool.Extend(e.ctx, []string{item}))
			r := waitResult(t, "Acquire behind Extend", ch, syncBound)
			must(t, r.err)
			if r.l.Item() != item {
				t.Fatalf("got %q, want %q", r.l.Item(), item)
			}
			t.Logf("blocked Acquire got the extended item after %v", r.at.Sub(start))
		}
	}},
	{"shrunk-items-are-never-handed-out", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b", "c", "d")
		ctx := e.ctx
		ld := e.mustTry("w", allocator.AcquireOptions{Prefer: "d"})
		must(t, e.pool.Shrink(ctx, []string{"b", "d"}))
		// At once, without Sync.
		var got []string
		for {
			l, err := e.try("w", allocator.AcquireOptions{Prefer: "b"})
			if errors.Is(err, allocator.ErrNoFreeItem) {
				break
			}
			must(t, err)
			got = append(got, l.Item())
		}
		slices.Sort(got)
		if !slices.Equal(got, []string{"a", "c"}) {
			t.Fatalf("after Shrink got %v, want a, c", got)
		}
		// Releasing a lease on a removed item does not bring it back.
		must(t, ld.Release(ctx))
		e.wantNoFree("w", allocator.AcquireOptions{})
		e.wantNoFree("w", allocator.AcquireOptions{Prefer: "d"})
		e.wantNoFree("w", allocator.AcquireOptions{Binding: "never-bound"})
		must(t, e.a.Sync(ctx))
		e.wantNoFree("w", allocator.AcquireOptions{})
		e.wantValue("b", "", false)
		e.wantValue("d", "", false)
		// Extended again, it is back.
		must(t, e.pool.Extend(ctx, []string{"d"}))
		must(t, e.a.Sync(ctx))
		if l := e.mustTry("w", allocator.AcquireOptions{}); l.Item() != "d" {
			t.Fatalf("got %q", l.Item())
		}
		// Clear: nothing is handed out.
		must(t, e.pool.Clear(ctx))
		for range 3 {
			e.wantNoFree("w", allocator.AcquireOptions{})
		}
	}},
	{"replaced-members-are-allocatable-within-1s", func(t *testing.T, b backend) {
		// Shrink one member and Extend another: the member count does not
		// change. The removed item is held, so no acquire visits it.
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		e.drain("w")
		must(t, e.pool.Shrink(e.ctx, []string{"b"}))
		must(t, e.pool.Extend(e.ctx, []string{"c"}))
		got, took := tryEventually(t, e.ctx, e.a, "w", "c (added while b was removed) allocatable", syncBound)
		if got.Item() != "c" {
			t.Fatalf("got %q", got.Item())
		}
		t.Logf("replacement member allocatable after %v", took)
	}},
	{"directly-locked-items-are-never-handed-out", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b", "c", "d")
		ctx := e.ctx
		wantBool(t, "pool.Lock(a)", true)(e.pool.Lock(ctx, "a", "python-1", long))
		wantBool(t, "pool.Lock(b)", true)(e.pool.Lock(ctx, "b", "python-2", lock.NoExpiry))
		wantBool(t, "pool.Lock(d)", true)(e.pool.Lock(ctx, "d", "python-3", 150*time.Millisecond))
		start := time.Now()
		if l := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"}); l.Item() != "c" {
			t.Fatalf("got %q, want c", l.Item())
		}
		e.wantNoFree("w", allocator.AcquireOptions{Prefer: "b"})
		e.wantValue("a", "python-1", true)
		e.wantValue("b", "python-2", true)
		ctx2, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_, err := acquireOn(t, ctx2, e.a, "w", allocator.AcquireOptions{})
		wantErr(t, "Acquire", err, allocator.ErrNoFreeItem, context.DeadlineExceeded)
		// A direct lock that expires frees its item like a lease does.
		r := waitResult(t, "Acquire behind a direct lock", acquireAsync(t, ctx, e.a, "w", allocator.AcquireOptions{}), 2*time.Second)
		must(t, r.err)
		if r.l.Item() != "d" {
			t.Fatalf("got %q, want d", r.l.Item())
		}
		if late := r.at.Sub(start) - 150*time.Millisecond; late > deadlineBound() {
			t.Fatalf("Acquire returned %v after the direct lock expired, want <= %v (%s)", late, deadlineBound(), redistest.SchedDelay())
		}
		e.wantNoFree("w", allocator.AcquireOptions{})
		e.wantValue("a", "python-1", true)
		e.wantValue("b", "python-2", true)
	}},
	{"direct-lock-removed-early-frees-its-item", func(t *testing.T, b backend) {
		// A pkg/lock (or Python) user locks an item for a long time and then
		// unlocks it early: the allocator cannot be told, but it must not
		// keep the item out until the old TTL would have ended.
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a")
		ctx := e.ctx
		wantBool(t, "pool.Lock(a)", true)(e.pool.Lock(ctx, "a", "python-1", time.Hour))
		e.wantNoFree("w", allocator.AcquireOptions{}) // the allocator now knows a is held
		wantBool(t, "pool.Unlock(a)", true)(e.pool.Unlock(ctx, "a"))
		if l := e.mustTry("w", allocator.AcquireOptions{}); l.Item() != "a" {
			t.Fatalf("TryAcquire after the direct unlock got %q, want a", l.Item())
		}

		// A blocked Acquire notices a direct unlock too, within a second
		// (direct unlocks publish no wake-up).
		e2 := setup(t, b, allocator.Config{LeaseTTL: long, MaxWait: time.Minute}, "b")
		wantBool(t, "pool.Lock(b)", true)(e2.pool.Lock(ctx, "b", "python-2", time.Hour))
		e2.wantNoFree("w", allocator.AcquireOptions{})
		ch := acquireAsync(t, ctx, e2.a, "w", allocator.AcquireOptions{})
		e2.waitWaiters(1)
		wantBool(t, "pool.Unlock(b)", true)(e2.pool.Unlock(ctx, "b"))
		unlocked := time.Now()
		r := waitResult(t, "Acquire behind a direct lock removed early", ch, 3*time.Second)
		if r.l.Item() != "b" {
			t.Fatalf("got %q, want b", r.l.Item())
		}
		if took := r.at.Sub(unlocked); took > time.Second+deadlineBound() {
			t.Fatalf("blocked Acquire took %v after the direct unlock; want within 1s (%s)", took, redistest.SchedDelay())
		}
	}},
}
