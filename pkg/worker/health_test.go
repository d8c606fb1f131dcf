package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/worker"
)

// TestPoolHealth: Health reports a pool that cannot acquire (Redis gone)
// once that lasted the health window, and recovers with the first lease.
// Waiting for a free item is not a failure.
func TestPoolHealth(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	f := newRedisFixture(t, srv.Client(t), redistest.Prefix(t), allocator.Config{LeaseTTL: 2 * time.Second}, []string{"a"})
	a, st, pool := f.alloc, f.store, f.pool
	// Two workers, one item: one always waits for it.
	p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
		return nil
	}), worker.Config{Concurrency: 2, LeaseTTL: 2 * time.Second})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	// A second of work with one worker always waiting for the item: the
	// scenario, not a wait for a state.
	time.Sleep(time.Second)
	if err := p.Health(); err != nil {
		t.Fatalf("Health while working (one worker waiting) = %v; want nil", err)
	}

	srv.Stop()
	stopped := time.Now()
	redistest.Eventually(t, "Health to report Redis gone", 15*time.Second, func() bool { return p.Health() != nil })
	err = p.Health()
	t.Logf("unhealthy %v after Redis went away: %v", time.Since(stopped).Round(time.Millisecond), err)
	if time.Since(stopped) < 3*time.Second || errors.Is(err, context.Canceled) {
		t.Fatalf("Health = %v %v after Redis went away; want an error only after the 3s window, naming the failure", err, time.Since(stopped))
	}
	srv.Restart() // empty: the item is gone, and the workers wait without errors
	healthy := redistest.Eventually(t, "Health nil again after Redis came back", 15*time.Second, func() bool { return p.Health() == nil })
	t.Logf("healthy again %v after Redis came back", healthy.Round(time.Millisecond))
	must(t, pool.Extend(context.Background(), []string{"a"}))
}
