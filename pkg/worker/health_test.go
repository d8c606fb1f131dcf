package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// TestPoolHealth: Health reports a pool that cannot acquire (Redis gone)
// once that lasted the health window, and recovers with the first lease.
// Waiting for a free item is not a failure.
func TestPoolHealth(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	c := srv.Client(t)
	lcfg := lock.Config{Prefix: redistest.Prefix(t)}
	pool, err := lock.NewRedisLockPool(c, lcfg)
	mustOK(t, err)
	mustOK(t, pool.Extend(context.Background(), []string{"a"}))
	a, err := allocator.NewRedis(pool, allocator.Config{LeaseTTL: 2 * time.Second})
	mustOK(t, err)
	defer a.Close()
	st, err := worker.NewRedisStore(pool)
	mustOK(t, err)
	// Two workers, one item: one always waits for it.
	p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
		return nil
	}), worker.Config{Concurrency: 2, LeaseTTL: 2 * time.Second})
	mustOK(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	healthy := func(within time.Duration) time.Duration {
		start := time.Now()
		for p.Health() != nil {
			if time.Since(start) > within {
				t.Fatalf("Health still %v after %v", p.Health(), within)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Since(start)
	}
	time.Sleep(time.Second)
	if err := p.Health(); err != nil {
		t.Fatalf("Health while working (one worker waiting) = %v; want nil", err)
	}

	srv.Stop()
	stopped := time.Now()
	for p.Health() == nil {
		if time.Since(stopped) > 15*time.Second {
			t.Fatal("Health stayed nil 15s after Redis went away")
		}
		time.Sleep(20 * time.Millisecond)
	}
	err = p.Health()
	t.Logf("unhealthy %v after Redis went away: %v", time.Since(stopped).Round(time.Millisecond), err)
	if time.Since(stopped) < 3*time.Second || errors.Is(err, context.Canceled) {
		t.Fatalf("Health = %v %v after Redis went away; want an error only after the 3s window, naming the failure", err, time.Since(stopped))
	}
	srv.Restart() // empty: the item is gone, and the workers wait without errors
	t.Logf("healthy again %v after Redis came back", healthy(15*time.Second).Round(time.Millisecond))
	mustOK(t, pool.Extend(context.Background(), []string{"a"}))
}
