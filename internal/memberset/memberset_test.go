package memberset_test

import (
	"slices"
	"testing"

	"github.com/lockpool/lockpool/internal/memberset"
	"github.com/lockpool/lockpool/pkg/lock"
)

func TestSet(t *testing.T) {
	pool, err := lock.NewMemoryLockPool(lock.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := memberset.Lookup(pool, "k"); ok {
		t.Fatal("Lookup found a set never made")
	}
	s := memberset.Of(pool, "k")
	for _, it := range []string{"a", "b", "c", "d"} {
		if !s.Add(it) {
			t.Fatalf("Add(%s) of a new item reported it present", it)
		}
	}
	if s.Add("a") || s.Len() != 4 {
		t.Fatalf("Add of a member: len %d; want it refused, len 4", s.Len())
	}
	if got, ok := memberset.Lookup(pool, "k"); !ok || got != s {
		t.Fatal("Lookup did not find the set Of made")
	}
	if !s.Remove("b") || s.Remove("b") || s.Has("b") || !s.Has("d") || s.Len() != 3 {
		t.Fatalf("after Remove(b): has b %v, has d %v, len %d; want false, true, 3", s.Has("b"), s.Has("d"), s.Len())
	}
	for n := range 5 {
		got := s.Sample(n)
		if len(got) != min(n, 3) {
			t.Fatalf("Sample(%d) gave %q; want %d items", n, got, min(n, 3))
		}
		slices.Sort(got)
		if len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Fatalf("Sample(%d) gave %q; want distinct items", n, got)
		}
		for _, it := range got {
			if !s.Has(it) {
				t.Fatalf("Sample(%d) gave %s, no member", n, it)
			}
		}
	}
	memberset.Forget(pool, "k")
	if _, ok := memberset.Lookup(pool, "k"); ok {
		t.Fatal("Lookup found a forgotten set")
	}
	if memberset.Of(pool, "k").Len() != 0 {
		t.Fatal("Of after Forget gave the old set")
	}
}
