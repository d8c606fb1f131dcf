package allocator_test

import (
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/failcount"
	"github.com/lockpool/lockpool/internal/memberset"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// fromBehaviours: Lease.Next with AcquireOptions.From and Failures, the
// step pkg/worker's batch mode goes from item to item with.
var fromBehaviours = []behaviour{
	{"next-from-limits-candidates", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b", "c", "d")
		todo := e.a.Keys().Batch("x").Todo
		// "gone" is no member of the pool: never granted.
		e.addTo(todo, "c", "d", "gone")
		from := allocator.AcquireOptions{From: todo}
		got := map[string]bool{}
		var held []*allocator.Lease
		for _, prefer := range []string{"a", "b"} {
			l := e.mustTry("w", allocator.AcquireOptions{Prefer: prefer})
			next, ended, err := l.Next(e.ctx, allocator.EndOptions{}, "w", from)
			must(t, err)
			must(t, ended)
			if next.Item() != "c" && next.Item() != "d" {
				t.Fatalf("Next from {c, d, gone} granted %s", next.Item())
			}
			got[next.Item()] = true
			held = append(held, next)
		}
		if !got["c"] || !got["d"] {
			t.Fatalf("two Nexts from {c, d, gone} granted %v; want c and d", got)
		}
		// c and d are held: a miss, though a and b are free, and not an
		// empty From.
		la := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		next, ended, err := la.Next(e.ctx, allocator.EndOptions{}, "w", from)
		must(t, ended)
		wantErr(t, "Next from a set whose members are all held", err, allocator.ErrNoFreeItem)
		if errors.Is(err, allocator.ErrFromEmpty) {
			t.Fatalf("Next from {c, d, gone} with c and d held: %v; want no ErrFromEmpty", err)
		}
		if next != nil {
			t.Fatalf("Next granted %s; want nothing", next.Item())
		}
		e.wantValue("a", "", false)
		for _, l := range held {
			e.wantHeld(l)
		}
	}},
	{"next-from-an-empty-set", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		la := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		next, ended, err := la.Next(e.ctx, allocator.EndOptions{}, "w", allocator.AcquireOptions{From: e.a.Keys().Batch("none").Todo})
		must(t, ended)
		wantErr(t, "Next from an empty set", err, allocator.ErrNoFreeItem)
		wantErr(t, "Next from an empty set", err, allocator.ErrFromEmpty)
		if next != nil {
			t.Fatalf("Next granted %s; want nothing", next.Item())
		}
		e.wantValue("a", "", false)
	}},
	{"next-from-prefers-first", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b", "c")
		todo := e.a.Keys().Batch("x").Todo
		e.addTo(todo, "c")
		la := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		next, _, err := la.Next(e.ctx, allocator.EndOptions{}, "w", allocator.AcquireOptions{From: todo, Prefer: "b"})
		must(t, err)
		if next.Item() != "b" {
			t.Fatalf("Next with Prefer b from {c} granted %s; want b", next.Item())
		}
	}},
	{"next-failures-key-selects-the-counts", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a")
		batch := e.a.Keys().Batch("x")
		opts := allocator.AcquireOptions{Failures: batch.Failures}
		l := e.mustTry("w", allocator.AcquireOptions{})
		for i, want := range []int{1, 2} {
			next, ended, err := l.Next(e.ctx, allocator.EndOptions{Count: allocator.CountAdd}, "w", opts)
			must(t, err)
			must(t, ended)
			if next.Failures() != want {
				t.Fatalf("step %d: Next counting in %s granted a with %d failures; want %d", i, batch.Failures, next.Failures(), want)
			}
			l = next
		}
		// Loop mode's counts saw none of it.
		next, _, err := l.Next(e.ctx, allocator.EndOptions{}, "w", allocator.AcquireOptions{})
		must(t, err)
		if next.Failures() != 0 {
			t.Fatalf("Next counting in the default HASH found %d failures; want 0", next.Failures())
		}
		if n := e.countIn(batch.Failures, "a"); n != 2 {
			t.Fatalf("%s holds %d for a; want 2", batch.Failures, n)
		}
		if n := e.countIn(e.a.Keys().Failures(), "a"); n != 0 {
			t.Fatalf("%s holds %d for a; want 0", e.a.Keys().Failures(), n)
		}
	}},
	{"next-from-and-failures-not-the-pools-keys", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		la := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		base := e.a.Keys().Base()
		for _, opts := range []allocator.AcquireOptions{
			{From: "other|pool|batch:x:todo"},
			{From: base + "|"},
			{From: base + "x|batch:x:todo"},
			{Failures: "run:failures"},
			{Failures: base},
		} {
			next, ended, err := la.Next(e.ctx, allocator.EndOptions{Count: allocator.CountAdd}, "w", opts)
			wantErr(t, "Next with "+opts.From+opts.Failures, err, allocator.ErrInvalidConfig)
			wantErr(t, "Next with "+opts.From+opts.Failures+" (ended)", ended, allocator.ErrInvalidConfig)
			if next != nil {
				t.Fatalf("Next with %+v granted %s", opts, next.Item())
			}
		}
		for _, opts := range []allocator.AcquireOptions{{From: e.a.Keys().Batch("x").Todo}, {Failures: e.a.Keys().Failures()}} {
			_, err := e.a.TryAcquire(e.ctx, "w", opts)
			wantErr(t, "TryAcquire with a Next option", err, allocator.ErrInvalidConfig)
		}
		e.wantHeld(la)
		e.wantValue("b", "", false)
		if n := e.countIn(e.a.Keys().Failures(), "a"); n != 0 {
			t.Fatalf("a refused Next counted a failure: %d", n)
		}
	}},
}

// addTo adds items to the SET key beside the pool (its memory twin for
// the memory backend).
func (e *env) addTo(key string, items ...string) {
	e.t.Helper()
	switch p := e.pool.(type) {
	case *lock.RedisLockPool:
		must(e.t, p.Client().SAdd(e.ctx, key, items).Err())
	case *lock.MemoryLockPool:
		for _, it := range items {
			memberset.Of(p, key).Add(it)
		}
	default:
		e.t.Fatalf("addTo: pool %T", e.pool)
	}
}

// countIn is item's count in the HASH key beside the pool.
func (e *env) countIn(key, item string) int {
	e.t.Helper()
	switch p := e.pool.(type) {
	case *lock.RedisLockPool:
		n, err := p.Client().HGet(e.ctx, key, item).Int()
		if err != nil && !errors.Is(err, redis.Nil) {
			e.t.Fatal(err)
		}
		return n
	case *lock.MemoryLockPool:
		return failcount.Of(p, key).Get(item)
	}
	e.t.Fatalf("countIn: pool %T", e.pool)
	return 0
}
