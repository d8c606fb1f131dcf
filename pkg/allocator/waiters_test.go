package allocator_test

import (
	"context"
	"errors"
	"fmt"
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
		a, err := allocator.NewRedis(poolOn(t, c, cfg), acfg)
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

	waitersKey := pool.Keys().Waiters()
	redistest.Eventually(t, fmt.Sprintf("%d waiters registered", procs*perProc), 30*time.Second, func() bool {
		return admin.ZCard(ctx, waitersKey).Val() >= procs*perProc
	})

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
		t.Fatalf("no waiter got the released item within 2s (%s)", redistest.SchedDelay())
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
		t.Fatalf("a second waiter (%s) got the single item held by %s", l.Owner(), winner.Owner())
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

// TestDeadProcessEntriesAreForgotten: waiters and hand-offs of a process
// that died (its wake channel has no subscriber) are dropped by the sync
// steps of the live allocators, so neither key grows with the processes
// that ever ran; a live process's entries stay.
func TestDeadProcessEntriesAreForgotten(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	a, pool, ctx := redisSetup(t, c, allocator.Config{LeaseTTL: long, SyncInterval: 20 * time.Millisecond})
	must(t, pool.Extend(ctx, []string{"a"}))
	held := mustTryOn(t, ctx, a, "w", allocator.AcquireOptions{})
	// A live waiter of this process, blocked on the only item.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	waiting := acquireAsync(t, wctx, a, "waiter", allocator.AcquireOptions{})
	keys := pool.Keys()
	redistest.Eventually(t, "the live waiter registered", 5*time.Second, func() bool { return c.ZCard(ctx, keys.Waiters()).Val() == 1 })
	// Entries of 50 processes that are gone.
	for i := range 50 {
		w := fmt.Sprintf("dead%02d:1", i)
		must(t, c.ZAdd(ctx, keys.Waiters(), redis.Z{Score: 1, Member: w}).Err())
		must(t, c.HSet(ctx, keys.Reserved(), w, "a").Err())
	}
	took := redistest.Eventually(t, "dead waiters and hand-offs dropped", 10*time.Second, func() bool {
		return c.ZCard(ctx, keys.Waiters()).Val() == 1 && c.HLen(ctx, keys.Reserved()).Val() == 0
	})
	t.Logf("50 dead waiters and hand-offs dropped in %v (sync every 20ms, 4 of each looked at per step)", took.Round(time.Millisecond))
	// The live waiter is still woken by a release.
	must(t, held.Release(ctx))
	r := waitResult(t, "the live waiter", waiting, 5*time.Second)
	must(t, r.err)
	must(t, r.l.Release(ctx))
}
