package lock_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/benchpair"
	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/lock"
)

// Run with: make bench, or
//
//	go test -run '^$' -bench . -benchtime 2s ./pkg/lock
//
// Each benchmark reports throughput-ratio against the raw go-redis baseline
// (SET NX PX + DEL) measured alternately in the same run; see benchpair.

// benchClient gives enough connections for 64 goroutines.
func benchClient(b *testing.B) *redis.Client {
	b.Helper()
	c := redis.NewClient(&redis.Options{Addr: redistest.Addr(b), PoolSize: 128, ContextTimeoutEnabled: true})
	b.Cleanup(func() { c.Close() })
	return c
}

// benchLock is a lock over benchClient with a prefix of its own.
func benchLock(b *testing.B) (*redis.Client, string, *lock.RedisLock) {
	b.Helper()
	c, prefix := benchClient(b), redistest.Prefix(b)
	l, err := lock.NewRedisLock(c, lock.Config{Prefix: prefix})
	must(b, err)
	return c, prefix, l
}

// rawCycle is the baseline: what a hand-written Redis lock costs.
func rawCycle(ctx context.Context, c *redis.Client, prefix string) func(i int) error {
	return func(i int) error {
		key := prefix + "|raw:" + strconv.Itoa(i)
		if err := c.SetArgs(ctx, key, "owner", redis.SetArgs{Mode: "NX", TTL: time.Minute}).Err(); err != nil {
			return err
		}
		return c.Del(ctx, key).Err()
	}
}

func BenchmarkLockUnlock(b *testing.B) {
	for _, goroutines := range []int{1, 64} {
		b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
			c, prefix, l := benchLock(b)
			ctx := context.Background()
			benchpair.Compare(b, goroutines, rawCycle(ctx, c, prefix), func(i int) error {
				key := strconv.Itoa(i)
				ok, err := l.Lock(ctx, key, "owner", time.Minute)
				if err != nil || !ok {
					return fmt.Errorf("Lock(%s) = %v, %v", key, ok, err)
				}
				ok, err = l.Unlock(ctx, key)
				if err != nil || !ok {
					return fmt.Errorf("Unlock(%s) = %v, %v", key, ok, err)
				}
				return nil
			})
		})
	}
}

// BenchmarkRefresh compares one Refresh (a script: compare and extend) with
// the raw two-command cycle, and with a raw PEXPIRE, its one-command floor.
func BenchmarkRefresh(b *testing.B) {
	for _, goroutines := range []int{1, 64} {
		b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
			c, prefix, l := benchLock(b)
			ctx := context.Background()
			const keys = 64
			for k := range keys {
				must(b, l.Update(ctx, strconv.Itoa(k), "owner", time.Minute))
			}
			refresh := func(i int) error {
				ok, err := l.Refresh(ctx, strconv.Itoa(i%keys), "owner", time.Minute)
				if err != nil || !ok {
					return fmt.Errorf("Refresh = %v, %v", ok, err)
				}
				return nil
			}
			b.Run("vs-setnx-del", func(b *testing.B) {
				benchpair.Compare(b, goroutines, rawCycle(ctx, c, prefix), refresh)
			})
			b.Run("vs-pexpire", func(b *testing.B) {
				benchpair.Compare(b, goroutines, func(i int) error {
					return c.PExpire(ctx, l.Key(strconv.Itoa(i%keys)), time.Minute).Err()
				}, refresh)
			})
		})
	}
}

// BenchmarkHealthCheck counts locked and free members of a pool. The goal
// is under one second for a million items. HealthCheck walks the smaller of
// the pool and the keyspace: with 10% locked it visits the locks, with every
// item locked it must visit every member (its worst case). It also reports
// the time as a multiple of one raw SET NX + DEL cycle.
func BenchmarkHealthCheck(b *testing.B) {
	for _, tc := range []struct{ items, every int }{{10_000, 10}, {1_000_000, 10}, {1_000_000, 1}} {
		b.Run(fmt.Sprintf("items=%d/locked=%d%%", tc.items, 100/tc.every), func(b *testing.B) {
			n := tc.items
			c, ctx := benchClient(b), context.Background()
			prefix := redistest.Prefix(b)
			p, err := lock.NewRedisLockPool(c, lock.Config{Prefix: prefix})
			must(b, err)
			items := numbered("item", n)
			must(b, p.Assign(ctx, items))
			lockEvery(b, c, p, items, tc.every, "owner", time.Hour)
			b.Cleanup(func() {
				c.Del(context.Background(), p.PoolKey())
				lockEvery(b, c, p, items, tc.every, "", 0)
			})
			raw := rawCycle(ctx, c, prefix)
			start := time.Now()
			for i := range 1000 {
				must(b, raw(i))
			}
			cycle := time.Since(start) / 1000
			wantLocked := int64((n + tc.every - 1) / tc.every)

			b.ResetTimer()
			for b.Loop() {
				locked, free, err := p.HealthCheck(ctx)
				must(b, err)
				if locked != wantLocked || free != int64(n)-wantLocked {
					b.Fatalf("HealthCheck = (%d, %d); want (%d, %d)", locked, free, wantLocked, int64(n)-wantLocked)
				}
			}
			b.StopTimer()
			per := b.Elapsed() / time.Duration(b.N)
			b.ReportMetric(float64(per)/float64(time.Millisecond), "ms/op")
			b.ReportMetric(float64(per)/float64(cycle), "baseline-cycles/op")
		})
	}
}

// lockEvery sets (value != "") or deletes the lock of every nth item, in
// pipelined batches.
func lockEvery(b *testing.B, c *redis.Client, p *lock.RedisLockPool, items []string, every int, value string, ttl time.Duration) {
	pipe := c.Pipeline()
	for i := 0; i < len(items); i += every {
		if value != "" {
			pipe.Set(context.Background(), p.Key(items[i]), value, ttl)
		} else {
			pipe.Del(context.Background(), p.Key(items[i]))
		}
		if pipe.Len() == 10_000 || i+every >= len(items) {
			if _, err := pipe.Exec(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	}
}
