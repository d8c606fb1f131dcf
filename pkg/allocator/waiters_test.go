package allocator_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// TestThousandWaitersDoNotSpin blocks 1,000 Acquire calls spread over four
// allocators (four processes, as far as Redis can tell: each has its own
// wake channel and connections) on a pool whose only item is held with a
// long lease. Counted by the server itself (INFO commandstats on a
// dedicated redis-server):
//
//   - while nothing changes, the waiters send nothing: only the allocators'
//     periodic sync steps reach the server;
//   - one release wakes a bounded number of waiters (WakeWaiters = 1), not
//     all of them: the acquire attempts that follow stay a handful.
func TestThousandWaitersDoNotSpin(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	admin := srv.Client(t)
	ctx := context.Background()
	cfg := lock.Config{Prefix: "spin"}
	pool, err := lock.NewRedisLockPool(admin, cfg)
	must(t, err)
	must(t, pool.Assign(ctx, []string{"only"}))

	const procs, perProc = 4, 250
	acfg := allocator.Config{WakeWaiters: 1, MaxWait: time.Minute}
	var allocs []*allocator.Allocator
	for range procs {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: perProc + 10, ContextTimeoutEnabled: true})
		t.Cleanup(func() { c.Close() })
		a, err := allocator.NewRedis(c, cfg, acfg)
		must(t, err)
		closeOnCleanup(t, a)
		allocs = append(allocs, a)
	}
	holder, err := allocs[0].TryAcquire(ctx, "holder", allocator.AcquireOptions{TTL: time.Minute})
	must(t, err)

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan *allocator.Lease, procs*perProc)
	var wg sync.WaitGroup
	for p, a := range allocs {
		for w := range perProc {
			wg.Go(func() {
				l, err := a.Acquire(wctx, "waiter-"+strconv.Itoa(p)+"-"+strconv.Itoa(w), allocator.AcquireOptions{TTL: time.Minute})
				if err == nil {
					got <- l
				} else if !errors.Is(err, context.Canceled) {
					t.Errorf("Acquire: %v", err)
				}
			})
		}
	}
	t.Cleanup(func() { cancel(); wg.Wait() })

	waitersKey := "spin|lock-pool|alloc:waiters"
	deadline := time.Now().Add(30 * time.Second)
	for admin.ZCard(ctx, waitersKey).Val() < procs*perProc {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d waiters registered after 30s", admin.ZCard(ctx, waitersKey).Val(), procs*perProc)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A quiet second: nobody releases, no lease ends.
	must(t, admin.ConfigResetStat(ctx).Err())
	time.Sleep(time.Second)
	quiet := commandCalls(t, admin)
	// Each allocator runs one sync step per SyncInterval (250ms): about 16
	// in a second. 1,000 polling waiters would send thousands.
	if n := quiet["evalsha"] + quiet["eval"]; n > 40 {
		t.Fatalf("%d script calls in a quiet second with 1,000 blocked waiters (%v); want only the sync steps (~16)", n, quiet)
	}

	must(t, admin.ConfigResetStat(ctx).Err())
	must(t, holder.Release(ctx))
	var winner *allocator.Lease
	select {
	case winner = <-got:
	case <-time.After(2 * time.Second):
		t.Fatal("no waiter got the released item within 2s")
	}
	time.Sleep(300 * time.Millisecond) // let any over-woken waiters show up in the counters
	after := commandCalls(t, admin)
	if n := after["spublish"]; n != 1 {
		t.Fatalf("the release published %d wake-ups; want exactly WakeWaiters = 1", n)
	}
	// The release, the winner's acquire, its waiter clean-up and a few
	// sync steps; a thundering herd would be ~1,000 acquires.
	if n := after["evalsha"] + after["eval"]; n > 20 {
		t.Fatalf("%d script calls after one release (%v); want a handful", n, after)
	}
	select {
	case l := <-got:
		t.Fatalf("a second waiter (%s) got the single item held by %s", l.Owner, winner.Owner)
	default:
	}
}

// commandCalls reads INFO commandstats into command -> calls.
func commandCalls(t *testing.T, c *redis.Client) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, line := range strings.Split(c.Info(context.Background(), "commandstats").Val(), "\r\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":calls=")
		if !ok || name == line {
			continue
		}
		n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
		must(t, err)
		out[name] = n
	}
	return out
}
