package lock

import (
	"context"
	"testing"
	"time"
)

// TestMemoryPoolGeneration checks that the membership generation moves on
// every change of the member set, and only then.
func TestMemoryPoolGeneration(t *testing.T) {
	p, ctx := newTestMemoryPool(t), context.Background()
	gen := p.Generation()
	if gen != 0 {
		t.Fatalf("new pool Generation = %d; want 0", gen)
	}
	step := func(what string, changes bool, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		got := p.Generation()
		switch {
		case changes && got <= gen:
			t.Fatalf("%s: Generation %d, was %d; want it to move", what, got, gen)
		case !changes && got != gen:
			t.Fatalf("%s: Generation %d, was %d; want it unchanged", what, got, gen)
		}
		gen = got
	}
	step("Extend(a, b)", true, p.Extend(ctx, []string{"a", "b"}))
	step("Extend(a) again", false, p.Extend(ctx, []string{"a"}))
	step("Extend(nil)", false, p.Extend(ctx, nil))
	step("Extend(b, c)", true, p.Extend(ctx, []string{"b", "c"}))
	step("Shrink(x)", false, p.Shrink(ctx, []string{"x"}))
	step("Shrink(c, x)", true, p.Shrink(ctx, []string{"c", "x"}))
	step("Assign(b, a)", false, p.Assign(ctx, []string{"b", "a"}))
	step("Assign(a, c)", true, p.Assign(ctx, []string{"a", "c"}))
	step("Assign(a, c, d)", true, p.Assign(ctx, []string{"a", "c", "d"}))
	_, err := p.Lock(ctx, "a", "v", time.Minute)
	step("Lock(a)", false, err)
	_, err = p.Unlock(ctx, "a")
	step("Unlock(a)", false, err)
	step("Update(z)", false, p.Update(ctx, "z", "v", time.Minute))
	step("Clear", true, p.Clear(ctx))
	step("Clear (empty)", false, p.Clear(ctx))
	step("Assign(nil) (empty)", false, p.Assign(ctx, nil))
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.Extend(cctx, []string{"q"}); err == nil {
		t.Fatal("Extend with a cancelled context succeeded")
	}
	step("failed Extend", false, nil)
}
