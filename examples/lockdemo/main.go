// Command lockdemo shows the lock core at work: a handful of workers share a
// pool of items, each taking a free item with Lock, keeping it with Refresh
// while it works, and handing it back with Release. No two workers ever hold
// the same item.
//
// With REDIS_ADDR empty it runs on the in-memory backend; with
// REDIS_ADDR=host:port it runs the same code against Redis, so several
// copies can share one pool (the same switch as every example):
//
//	go run ./examples/lockdemo
//	REDIS_ADDR=127.0.0.1:6379 go run ./examples/lockdemo -workers 4
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/pkg/lock"
)

func main() {
	workers := flag.Int("workers", 8, "number of workers")
	items := flag.Int("items", 5, "number of pool items")
	rounds := flag.Int("rounds", 20, "items each worker processes")
	flag.Parse()
	if err := run(os.Getenv("REDIS_ADDR"), *workers, *items, *rounds); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run(addr string, workers, items, rounds int) error {
	ctx := context.Background()
	var pool lock.Pool
	if addr == "" {
		p, err := lock.NewMemoryLockPool(lock.MemoryConfig{})
		if err != nil {
			return err
		}
		pool = p
		fmt.Println("backend: in-memory (one process)")
	} else {
		client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
		defer client.Close()
		p, err := lock.NewRedisLockPool(client, lock.Config{Prefix: "lockdemo"})
		if err != nil {
			return err
		}
		pool = p
		fmt.Println("backend: redis at", addr, "pool key", p.PoolKey())
	}
	names := make([]string, items)
	for i := range names {
		names[i] = fmt.Sprintf("item-%d", i)
	}
	if err := pool.Assign(ctx, names); err != nil {
		return err
	}

	var holders sync.Map // item -> worker currently inside its critical section
	var overlaps atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		owner := fmt.Sprintf("worker-%d-%d", os.Getpid(), w)
		wg.Go(func() {
			for n := 0; n < rounds; {
				item, err := take(ctx, pool, names, owner)
				if err != nil {
					errs <- err
					return
				}
				if item == "" {
					time.Sleep(time.Millisecond)
					continue
				}
				if _, clash := holders.LoadOrStore(item, owner); clash {
					overlaps.Add(1)
				}
				time.Sleep(2 * time.Millisecond) // the work
				if held, err := pool.Refresh(ctx, item, owner, 5*time.Second); err != nil || !held {
					errs <- fmt.Errorf("%s lost %s: %v", owner, item, err)
					return
				}
				holders.Delete(item)
				if _, err := pool.Release(ctx, item, owner); err != nil {
					errs <- err
					return
				}
				n++
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	locked, free, err := pool.HealthCheck(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("%d workers processed %d items of a %d-item pool; overlapping holders: %d; now locked %d, free %d\n",
		workers, workers*rounds, items, overlaps.Load(), locked, free)
	if overlaps.Load() != 0 {
		return fmt.Errorf("two workers held the same item")
	}
	return nil
}

// take locks the first free item, or returns "" when all are taken.
func take(ctx context.Context, pool lock.Pool, names []string, owner string) (string, error) {
	for _, it := range names {
		ok, err := pool.Lock(ctx, it, owner, 5*time.Second)
		if err != nil {
			return "", err
		}
		if ok {
			return it, nil
		}
	}
	return "", nil
}
