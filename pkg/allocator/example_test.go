package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// A worker leases a free item, keeps the lease alive while it works, and
// gives the item back. The keep-alive's context ends (with cause
// ErrLeaseLost) if the lease is ever lost, so the work stops before anyone
// else can be granted the item; the fencing token goes with every write.
func ExampleAllocator_Acquire() {
	ctx := context.Background()
	pool, _ := lock.NewMemoryLockPool(lock.MemoryConfig{})
	_ = pool.Assign(ctx, []string{"api-key-1"})
	a, err := allocator.NewMemory(pool, allocator.Config{LeaseTTL: 30 * time.Second})
	if err != nil {
		panic(err)
	}
	defer a.Close()

	lease, err := a.Acquire(ctx, "worker-7", allocator.AcquireOptions{}) // waits for a free item
	if err != nil {
		panic(err)
	}
	ka, err := lease.KeepAlive(ctx, allocator.KeepAliveOptions{})
	if err != nil {
		panic(err)
	}
	work := func(ctx context.Context, item string, token int64) {
		fmt.Println("using", item) // e.g. call the API, sending token with every write
	}
	work(ka.Context(), lease.Item(), lease.Token())

	// While the item is leased, nobody else gets it.
	_, err = a.TryAcquire(ctx, "worker-8", allocator.AcquireOptions{})
	fmt.Println(errors.Is(err, allocator.ErrNoFreeItem))
	ka.Stop()
	_ = lease.Release(ctx)

	// Released, it is free again, under a larger fencing token.
	next, err := a.TryAcquire(ctx, "worker-8", allocator.AcquireOptions{})
	fmt.Println(next.Item(), next.Token() > lease.Token(), err)
	// Output:
	// using api-key-1
	// true
	// api-key-1 true <nil>
}

// A binding gives a caller back the item it had last, when that item is
// free, so a tenant keeps its warm cache or session; Prefer asks for one
// item without remembering it.
func ExampleAcquireOptions_binding() {
	ctx := context.Background()
	pool, _ := lock.NewMemoryLockPool(lock.MemoryConfig{})
	_ = pool.Assign(ctx, []string{"gpu-0", "gpu-1", "gpu-2"})
	a, _ := allocator.NewMemory(pool, allocator.Config{LeaseTTL: time.Minute})
	defer a.Close()
	_ = a.Sync(ctx) // index the items added just now (else within Config.SyncInterval)

	first, _ := a.TryAcquire(ctx, "trainer", allocator.AcquireOptions{Prefer: "gpu-1", Binding: "tenant-42"})
	fmt.Println("first:", first.Item())
	_ = first.Release(ctx)

	// Another caller takes an item meanwhile: the least recently used one,
	// not tenant-42's.
	other, _ := a.TryAcquire(ctx, "someone-else", allocator.AcquireOptions{})
	fmt.Println("other:", other.Item() != "gpu-1")

	again, _ := a.TryAcquire(ctx, "trainer", allocator.AcquireOptions{Binding: "tenant-42"})
	fmt.Println("again:", again.Item())
	// Output:
	// first: gpu-1
	// other: true
	// again: gpu-1
}

// A worker that goes from item to item ends each lease and takes the next
// in one step (one round trip on Redis), counting the item's failures on
// the way: the next lease says how often its item has failed in a row.
func ExampleLease_Next() {
	ctx := context.Background()
	pool, _ := lock.NewMemoryLockPool(lock.MemoryConfig{})
	_ = pool.Assign(ctx, []string{"shard-1", "shard-2"})
	a, _ := allocator.NewMemory(pool, allocator.Config{LeaseTTL: time.Minute})
	defer a.Close()
	_ = a.Sync(ctx)

	lease, _ := a.TryAcquire(ctx, "crawler", allocator.AcquireOptions{Prefer: "shard-1"})
	// shard-1 failed: count it and hold it back for a while.
	next, ended, err := lease.Next(ctx, allocator.EndOptions{Hold: time.Second, Count: allocator.CountAdd}, "crawler", allocator.AcquireOptions{})
	fmt.Println(next.Item(), next.Failures(), ended, err)
	// shard-2 succeeded; shard-1 is still held back, so nothing is free.
	_, ended, err = next.Next(ctx, allocator.EndOptions{Hold: time.Second}, "crawler", allocator.AcquireOptions{})
	fmt.Println(ended, errors.Is(err, allocator.ErrNoFreeItem))
	// Output:
	// shard-2 0 <nil> <nil>
	// <nil> true
}
