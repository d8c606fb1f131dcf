package worker_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// A batch: every item of the pool is processed once, by whichever worker
// leases it, with its lease kept alive while the Go function runs. The
// function's context ends (cause ErrLeaseLost) if the lease is lost; the
// fencing token goes with every write. Run returns when nothing is left.
func ExampleNew() {
	ctx := context.Background()
	pool, _ := lock.NewMemoryLockPool(lock.MemoryConfig{})
	_ = pool.Assign(ctx, []string{"tenant-a", "tenant-b", "tenant-c"})
	alloc, _ := allocator.NewMemory(pool, allocator.Config{})
	defer alloc.Close()

	var mu sync.Mutex
	var migrated []string
	task := worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
		mu.Lock()
		defer mu.Unlock()
		migrated = append(migrated, job.Item) // e.g. migrate(ctx, job.Item, job.Token)
		return nil
	})
	p, err := worker.New(alloc, worker.NewMemoryStore(pool), task, worker.Config{
		Mode:        worker.ModeBatch,
		BatchID:     "migration-1",
		Concurrency: 2,
		LeaseTTL:    10 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	if err := p.Run(ctx); err != nil {
		panic(err)
	}
	slices.Sort(migrated)
	fmt.Println(migrated)
	// Output: [tenant-a tenant-b tenant-c]
}

// ExecTask runs a command per job. The job reaches it in RUNNER_*
// environment variables, never through a shell string, so an item name
// cannot inject commands: this one is printed, not run.
func ExampleExecTask() {
	ctx := context.Background()
	pool, _ := lock.NewMemoryLockPool(lock.MemoryConfig{})
	_ = pool.Assign(ctx, []string{"shard-1; rm -rf /"})
	alloc, _ := allocator.NewMemory(pool, allocator.Config{})
	defer alloc.Close()

	var mu sync.Mutex
	var out []string
	task := &worker.ExecTask{
		Command:   []string{"printenv", "RUNNER_ITEM", "RUNNER_ATTEMPT"},
		KillGrace: time.Second,
		Output: func(job worker.Job, stream, line string) {
			mu.Lock()
			defer mu.Unlock()
			out = append(out, stream+": "+line)
		},
	}
	p, err := worker.New(alloc, worker.NewMemoryStore(pool), task, worker.Config{
		Mode:     worker.ModeBatch,
		LeaseTTL: 10 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	if err := p.Run(ctx); err != nil {
		panic(err)
	}
	fmt.Println(strings.Join(out, "\n"))
	// Output:
	// stdout: shard-1; rm -rf /
	// stdout: 1
}

// After a batch, the store names the failed items with their last
// errors, and keeps every item's last outcome; while a pool runs, it is
// in the fleet's registry (Store.Runners), with its runs and failures.
func ExampleRunHistory() {
	ctx := context.Background()
	pool, _ := lock.NewMemoryLockPool(lock.MemoryConfig{})
	_ = pool.Assign(ctx, []string{"ok-1", "ok-2", "broken"})
	alloc, _ := allocator.NewMemory(pool, allocator.Config{})
	defer alloc.Close()
	store := worker.NewMemoryStore(pool)

	task := worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
		if job.Item == "broken" {
			return fmt.Errorf("no such table (attempt %d)", job.Attempt)
		}
		return nil
	})
	p, _ := worker.New(alloc, store, task, worker.Config{
		Mode: worker.ModeBatch, BatchID: "nightly", ID: "host-1:42",
		LeaseTTL: 10 * time.Second, MaxAttempts: 2, Backoff: time.Millisecond,
	})
	fmt.Println(p.Run(ctx))

	failed, _, _ := store.FailedItems(ctx, "nightly", "", 100)
	fmt.Println(failed)
	h, _, _ := store.LastRun(ctx, "broken")
	fmt.Println(h.Outcome, h.Attempts, h.Runner, h.Error)
	h, _, _ = store.LastRun(ctx, "ok-1")
	fmt.Println(h.Outcome, h.Attempts)
	runners, _ := store.Runners(ctx)
	fmt.Println(len(runners), "runners registered once Run returned")
	// Output:
	// worker: batch finished with failed items: batch "nightly": 1 of 3 items failed
	// [{broken no such table (attempt 2)}]
	// failure 2 host-1:42 no such table (attempt 2)
	// success 1
	// 0 runners registered once Run returned
}
