package lock_test

import (
	"testing"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/lock"
)

// TestShrinkCount: ShrinkCount counts only the members it removed, each
// once.
func TestShrinkCount(t *testing.T) {
	t.Parallel()
	p, err := lock.NewRedisLockPool(redistest.Client(t), lock.Config{Prefix: redistest.Prefix(t)})
	must(t, err)
	ctx := t.Context()
	must(t, p.Extend(ctx, []string{"a", "b", "c"}))
	n, err := p.ShrinkCount(ctx, []string{"a", "b", "absent", "a"})
	must(t, err)
	if n != 2 {
		t.Errorf("ShrinkCount(a, b, absent, a) = %d, want 2", n)
	}
	if left, err := p.Len(ctx); err != nil || left != 1 {
		t.Errorf("Len after = %d, %v; want 1", left, err)
	}
	if _, err := p.ShrinkCount(ctx, []string{""}); err == nil {
		t.Error("ShrinkCount of an empty name: nil error, want ErrInvalidKey")
	}
}
