package lock_test

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/pkg/lock"
)

// A holder takes a lock, keeps it with Refresh, and gives it back with
// Release; another owner cannot take it meanwhile.
func ExampleLocker() {
	ctx := context.Background()
	l, err := lock.NewMemoryLock(lock.MemoryConfig{})
	if err != nil {
		panic(err)
	}
	ok, _ := l.Lock(ctx, "resource-1", "worker-a", 30*time.Second)
	fmt.Println("worker-a locked:", ok)
	ok, _ = l.Lock(ctx, "resource-1", "worker-b", 30*time.Second)
	fmt.Println("worker-b locked:", ok)
	held, _ := l.Refresh(ctx, "resource-1", "worker-a", 30*time.Second)
	fmt.Println("worker-a still holds it:", held)
	released, _ := l.Release(ctx, "resource-1", "worker-a")
	fmt.Println("released:", released)
	// Output:
	// worker-a locked: true
	// worker-b locked: false
	// worker-a still holds it: true
	// released: true
}

// RLock lets the same owner take its lock again, extending it.
func ExampleLocker_rLock() {
	ctx := context.Background()
	l, _ := lock.NewMemoryLock(lock.MemoryConfig{})
	_, _ = l.Lock(ctx, "resource-1", "thread-7", time.Minute)
	again, _ := l.RLock(ctx, "resource-1", "thread-7", time.Minute)
	other, _ := l.RLock(ctx, "resource-1", "thread-8", time.Minute)
	fmt.Println(again, other)
	// Output: true false
}

// SetGT keeps the largest value seen, e.g. a high-water mark.
func ExampleOps_SetGT() {
	ctx := context.Background()
	l, _ := lock.NewMemoryLock(lock.MemoryConfig{})
	for _, v := range []float64{3, 7, 5} {
		_, _ = l.SetGT(ctx, "high-water", v, v, time.Hour)
	}
	v, _, _ := l.LockValue(ctx, "high-water")
	fmt.Println(v)
	// Output: 7
}

// A pool tracks its items and which of them are locked.
func ExamplePool() {
	ctx := context.Background()
	p, _ := lock.NewMemoryLockPool(lock.MemoryConfig{})
	_ = p.Assign(ctx, []string{"key-1", "key-2", "key-3"})
	_, _ = p.Lock(ctx, "key-2", "worker-a", time.Minute)
	locked, free, _ := p.HealthCheck(ctx)
	fmt.Println("locked:", locked, "free:", free)
	// Output: locked: 1 free: 2
}

// The Redis backend takes any go-redis client: standalone, Sentinel
// (failover) or a UniversalClient. ContextTimeoutEnabled makes every call
// honour its context's deadline even when Redis stalls.
func ExampleNewRedisLockPool() {
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 []string{"127.0.0.1:6379"},
		ContextTimeoutEnabled: true,
	})
	defer client.Close()
	// Keys: "app|lock-pool:<item>" for locks, "app|lock-pool|pool" for the
	// member set, as the Python package lays them out.
	pool, err := lock.NewRedisLockPool(client, lock.Config{Prefix: "app"})
	if err != nil {
		panic(err)
	}
	fmt.Println(pool.PoolKey())
	// Output: app|lock-pool|pool
}
