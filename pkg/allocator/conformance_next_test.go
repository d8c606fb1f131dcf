package allocator_test

import (
	"testing"
	"time"

	"github.com/lockpool/lockpool/pkg/allocator"
)

// nextBehaviours: Lease.Next, which ends a lease and grants the next item
// in one step.
var nextBehaviours = []behaviour{
	{"next-ends-and-grants", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		la := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		next, ended, err := la.Next(e.ctx, allocator.EndOptions{}, "w2", allocator.AcquireOptions{})
		must(t, err)
		must(t, ended)
		// b has been available longer than a, freed just now.
		if next.Item() != "b" || next.Owner() != "w2" || next.Token() <= la.Token() {
			t.Fatalf("Next granted %s to %s with token %d; want b to w2 above %d", next.Item(), next.Owner(), next.Token(), la.Token())
		}
		e.wantHeld(next)
		wantErr(t, "Release after Next", la.Release(e.ctx), allocator.ErrLeaseReleased)
		e.wantValue("a", "", false)
		// a is free: the next Next takes it.
		again, ended, err := next.Next(e.ctx, allocator.EndOptions{}, "w2", allocator.AcquireOptions{})
		must(t, err)
		must(t, ended)
		if again.Item() != "a" {
			t.Fatalf("second Next granted %s; want a", again.Item())
		}
	}},
	{"next-counts-failures", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a")
		l := e.mustTry("w", allocator.AcquireOptions{})
		if l.Failures() != -1 {
			t.Fatalf("TryAcquire's lease says %d failures; want -1 (unknown)", l.Failures())
		}
		for i, c := range []struct {
			op   allocator.CountOp
			want int
		}{{allocator.CountAdd, 1}, {allocator.CountAdd, 2}, {allocator.CountKeep, 2}, {allocator.CountClear, 0}, {allocator.CountAdd, 1}} {
			next, ended, err := l.Next(e.ctx, allocator.EndOptions{Count: c.op}, "w", allocator.AcquireOptions{})
			must(t, err)
			must(t, ended)
			if next.Item() != "a" || next.Failures() != c.want {
				t.Fatalf("step %d: Next granted %s with %d failures; want a with %d", i, next.Item(), next.Failures(), c.want)
			}
			l = next
		}
	}},
	{"next-holds-back", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		la := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		lb, ended, err := la.Next(e.ctx, allocator.EndOptions{Hold: long}, "w", allocator.AcquireOptions{})
		must(t, err)
		must(t, ended)
		e.wantValue("a", allocator.CooldownValue, true)
		// Only b is left, quarantined: nothing is free.
		next, ended, err := lb.Next(e.ctx, allocator.EndOptions{Hold: long, Quarantine: true}, "w", allocator.AcquireOptions{})
		must(t, ended)
		wantErr(t, "Next with every item held back", err, allocator.ErrNoFreeItem)
		if next != nil {
			t.Fatalf("Next granted %s; want nothing", next.Item())
		}
		e.wantValue("b", allocator.QuarantineValue, true)
	}},
	{"next-after-a-lost-lease-grants-and-counts-nothing", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		la := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		must(t, e.pool.Update(e.ctx, "a", "thief", time.Minute))
		next, ended, err := la.Next(e.ctx, allocator.EndOptions{Count: allocator.CountAdd}, "w", allocator.AcquireOptions{})
		must(t, err)
		wantErr(t, "ended", ended, allocator.ErrLeaseLost)
		if next.Item() != "b" {
			t.Fatalf("Next granted %s; want b", next.Item())
		}
		e.wantValue("a", "thief", true)
		// The thief's item got no failure: take it back and look.
		_, err = e.pool.Unlock(e.ctx, "a")
		must(t, err)
		again, _, err := next.Next(e.ctx, allocator.EndOptions{}, "w", allocator.AcquireOptions{Prefer: "a"})
		must(t, err)
		if again.Item() != "a" || again.Failures() != 0 {
			t.Fatalf("Next granted %s with %d failures; want a with 0", again.Item(), again.Failures())
		}
	}},
	{"next-of-an-ended-lease-only-grants", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		la := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		must(t, la.Release(e.ctx))
		next, ended, err := la.Next(e.ctx, allocator.EndOptions{Count: allocator.CountAdd}, "w", allocator.AcquireOptions{Prefer: "a"})
		wantErr(t, "ended", ended, allocator.ErrLeaseReleased)
		must(t, err)
		if next.Item() != "a" || next.Failures() != -1 {
			t.Fatalf("Next granted %s with %d failures; want a with -1 (TryAcquire's lease: unknown)", next.Item(), next.Failures())
		}
	}},
	{"next-exact-grants-only-the-preferred-item", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b", "c")
		la := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		lc := e.mustTry("other", allocator.AcquireOptions{Prefer: "c"})
		next, ended, err := la.Next(e.ctx, allocator.EndOptions{}, "w", allocator.AcquireOptions{Prefer: "c", Exact: true})
		must(t, ended)
		wantErr(t, "Next exact on a held item", err, allocator.ErrNoFreeItem)
		if next != nil {
			t.Fatalf("Next granted %s; want nothing (c is held, and only c would do)", next.Item())
		}
		e.wantValue("a", "", false)
		must(t, lc.Release(e.ctx))
		lb := e.mustTry("w", allocator.AcquireOptions{Prefer: "b"})
		next, ended, err = lb.Next(e.ctx, allocator.EndOptions{}, "w", allocator.AcquireOptions{Prefer: "c", Exact: true})
		must(t, err)
		must(t, ended)
		if next.Item() != "c" {
			t.Fatalf("Next granted %s; want c", next.Item())
		}
	}},
	{"next-bad-input-changes-nothing", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		la := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		for _, c := range []struct {
			what  string
			end   allocator.EndOptions
			owner string
			opts  allocator.AcquireOptions
			want  error
		}{
			{"negative hold", allocator.EndOptions{Hold: -time.Second}, "w", allocator.AcquireOptions{}, allocator.ErrInvalidConfig},
			{"sub-ms hold", allocator.EndOptions{Hold: time.Microsecond}, "w", allocator.AcquireOptions{}, allocator.ErrInvalidConfig},
			{"unknown count op", allocator.EndOptions{Count: 7}, "w", allocator.AcquireOptions{}, allocator.ErrInvalidConfig},
			{"exact without prefer", allocator.EndOptions{}, "w", allocator.AcquireOptions{Exact: true}, allocator.ErrInvalidConfig},
			{"empty owner", allocator.EndOptions{}, "", allocator.AcquireOptions{}, allocator.ErrInvalidOwner},
		} {
			next, ended, err := la.Next(e.ctx, c.end, c.owner, c.opts)
			wantErr(t, c.what, err, c.want)
			wantErr(t, c.what+" (ended)", ended, c.want)
			if next != nil {
				t.Fatalf("%s: Next granted %s", c.what, next.Item())
			}
		}
		e.wantHeld(la)
		e.wantValue("b", "", false)
	}},
}
