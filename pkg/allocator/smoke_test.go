package allocator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestSmokeRedis(t *testing.T) {
	c, ctx := redistest.Client(t), context.Background()
	cfg := lock.Config{Prefix: redistest.Prefix(t)}
	pool, err := lock.NewRedisLockPool(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.Extend(ctx, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	a, err := allocator.NewRedis(c, cfg, allocator.Config{LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	l1, err := a.TryAcquire(ctx, "w1", allocator.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l2, err := a.TryAcquire(ctx, "w2", allocator.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(l1.Item, l1.Token, l1.Value, l2.Item, l2.Token)
	if _, err := a.TryAcquire(ctx, "w3", allocator.AcquireOptions{}); !errors.Is(err, allocator.ErrNoFreeItem) {
		t.Fatalf("third TryAcquire = %v", err)
	}
	start := time.Now()
	go func() { time.Sleep(100 * time.Millisecond); _ = l1.Release(ctx) }()
	l3, err := a.Acquire(ctx, "w3", allocator.AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("handoff after", time.Since(start), l3.Item, l3.Token)
	if err := l2.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	l4, err := a.Acquire(ctx, "w4", allocator.AcquireOptions{})
	t.Log("expiry wait", time.Since(start), l4, err)
}
