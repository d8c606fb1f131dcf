package lock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockpool/lockpool/pkg/lock"
)

type poolBehaviour struct {
	name string
	fn   func(t *testing.T, newPool func(options) lock.Pool)
}

var poolBehaviours = []poolBehaviour{
	{"extend-contains-len-items", func(t *testing.T, newPool func(options) lock.Pool) {
		p, ctx := newPool(options{}), context.Background()
		wantMembers(t, p)
		must(t, p.Extend(ctx, []string{"a", "b", "c"}))
		must(t, p.Extend(ctx, []string{"c", "d", "d"}))
		wantMembers(t, p, "a", "b", "c", "d")
		wantBool(t, "Contains(a)", true)(p.Contains(ctx, "a"))
		wantBool(t, "Contains(z)", false)(p.Contains(ctx, "z"))
		must(t, p.Extend(ctx, nil))
		must(t, p.Extend(ctx, []string{}))
		wantMembers(t, p, "a", "b", "c", "d")
	}},
	{"shrink", func(t *testing.T, newPool func(options) lock.Pool) {
		p, ctx := newPool(options{}), context.Background()
		must(t, p.Shrink(ctx, []string{"absent"}))
		must(t, p.Extend(ctx, []string{"a", "b", "c"}))
		must(t, p.Shrink(ctx, []string{"b", "zz"}))
		must(t, p.Shrink(ctx, nil))
		must(t, p.Shrink(ctx, []string{}))
		wantMembers(t, p, "a", "c")
		must(t, p.Shrink(ctx, []string{"a", "c"}))
		wantMembers(t, p)
	}},
	{"assign-replaces", func(t *testing.T, newPool func(options) lock.Pool) {
		p, ctx := newPool(options{}), context.Background()
		must(t, p.Assign(ctx, []string{"a", "b"}))
		wantMembers(t, p, "a", "b")
		must(t, p.Assign(ctx, []string{"c", "d", "c"}))
		wantMembers(t, p, "c", "d")
		must(t, p.Assign(ctx, []string{}))
		wantMembers(t, p)
		must(t, p.Assign(ctx, []string{"e"}))
		must(t, p.Assign(ctx, nil))
		wantMembers(t, p)
	}},
	{"clear-keeps-locks", func(t *testing.T, newPool func(options) lock.Pool) {
		p, ctx := newPool(options{}), context.Background()
		must(t, p.Clear(ctx)) // clearing an empty pool is fine
		must(t, p.Extend(ctx, []string{"a", "b"}))
		wantBool(t, "Lock(a)", true)(p.Lock(ctx, "a", "w", long))
		must(t, p.Clear(ctx))
		wantMembers(t, p)
		wantValue(t, p, "a", "w", true)
	}},
	{"bad-items-write-nothing", func(t *testing.T, newPool func(options) lock.Pool) {
		p, ctx := newPool(options{}), context.Background()
		must(t, p.Extend(ctx, []string{"keep-1", "keep-2"}))
		for _, bad := range []string{"", "nul\x00", strings.Repeat("x", lock.MaxKeyLen+1)} {
			items := []string{"new-1", bad, "new-2"}
			for name, err := range map[string]error{
				"Extend":     p.Extend(ctx, items),
				"Shrink":     p.Shrink(ctx, []string{"keep-1", bad}),
				"Assign":     p.Assign(ctx, items),
				"Contains":   second(p.Contains(ctx, bad)),
				"LockStatus": second(p.LockStatus(ctx, items)),
			} {
				if !errors.Is(err, lock.ErrInvalidKey) {
					t.Errorf("%s with an item of %d bytes = %v; want ErrInvalidKey", name, len(bad), err)
				}
			}
		}
		wantMembers(t, p, "keep-1", "keep-2")
	}},
	{"lock-status-and-health", func(t *testing.T, newPool func(options) lock.Pool) {
		p, ctx := newPool(options{}), context.Background()
		wantHealth(t, p, 0, 0)
		st, err := p.LockStatus(ctx, nil)
		must(t, err)
		if len(st) != 0 {
			t.Fatalf("LockStatus(nil) = %v; want empty", st)
		}
		must(t, p.Extend(ctx, []string{"a", "b", "c", "d", "e"}))
		wantHealth(t, p, 0, 5)
		wantBool(t, "Lock(b)", true)(p.Lock(ctx, "b", "w", long))
		wantBool(t, "Lock(d)", true)(p.Lock(ctx, "d", "w", short))
		wantBool(t, "Lock(not a member)", true)(p.Lock(ctx, "outsider", "w", long))
		wantHealth(t, p, 2, 3)
		st, err = p.LockStatus(ctx, []string{"a", "b", "outsider", "d"})
		must(t, err)
		if want := []bool{false, true, true, true}; !slices.Equal(st, want) {
			t.Fatalf("LockStatus = %v; want %v", st, want)
		}
		wantItemLocks(t, p, map[string]bool{"a": false, "b": true, "c": false, "d": true, "e": false})
		time.Sleep(expiryWait) // d's lock expires
		wantHealth(t, p, 1, 4)
		wantItemLocks(t, p, map[string]bool{"a": false, "b": true, "c": false, "d": false, "e": false})
	}},
	{"items-stops-when-asked", func(t *testing.T, newPool func(options) lock.Pool) {
		p, ctx := newPool(options{}), context.Background()
		must(t, p.Extend(ctx, numbered("i", 5000)))
		n := 0
		for _, err := range p.Items(ctx) {
			must(t, err)
			if n++; n == 10 {
				break
			}
		}
		if n != 10 {
			t.Fatalf("consumed %d items; want 10", n)
		}
	}},
	{"large-pool-crosses-chunks", func(t *testing.T, newPool func(options) lock.Pool) {
		// 25,000 items spans several write chunks and many scan steps.
		p, ctx := newPool(options{}), context.Background()
		items := numbered("item", 25_000)
		must(t, p.Assign(ctx, items))
		n, err := p.Len(ctx)
		must(t, err)
		if n != int64(len(items)) {
			t.Fatalf("Len = %d; want %d", n, len(items))
		}
		seen := map[string]bool{}
		for it, err := range p.Items(ctx) {
			must(t, err)
			seen[it] = true
		}
		if len(seen) != len(items) {
			t.Fatalf("Items yielded %d distinct items; want %d", len(seen), len(items))
		}
		for _, it := range items[:300] {
			wantBool(t, "Lock("+it+")", true)(p.Lock(ctx, it, "w", long))
		}
		wantHealth(t, p, 300, int64(len(items))-300)
		must(t, p.Shrink(ctx, items[:20_000]))
		wantHealth(t, p, 0, 5_000)
	}},
}

func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%07d", prefix, i)
	}
	return out
}

func wantMembers(t *testing.T, p lock.Pool, want ...string) {
	t.Helper()
	ctx := context.Background()
	var got []string
	for it, err := range p.Items(ctx) {
		must(t, err)
		got = append(got, it)
	}
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Items = %q; want %q", got, want)
	}
	n, err := p.Len(ctx)
	must(t, err)
	if n != int64(len(want)) {
		t.Fatalf("Len = %d; want %d", n, len(want))
	}
}

func wantHealth(t *testing.T, p lock.Pool, wantLocked, wantFree int64) {
	t.Helper()
	locked, free, err := p.HealthCheck(context.Background())
	must(t, err)
	if locked != wantLocked || free != wantFree {
		t.Fatalf("HealthCheck = (%d locked, %d free); want (%d, %d)", locked, free, wantLocked, wantFree)
	}
}

func wantItemLocks(t *testing.T, p lock.Pool, want map[string]bool) {
	t.Helper()
	got := map[string]bool{}
	for il, err := range p.ItemLocks(context.Background()) {
		must(t, err)
		got[il.Item] = il.Locked
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ItemLocks = %v; want %v", got, want)
	}
}
