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
