package allocator_test

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// Redis-only behaviours: keys of the wrong type, data loss, and raw Redis
// clients (such as the Python package) sharing the keyspace.

// poolOn is a Redis lock pool over client c.
func poolOn(t testing.TB, c redis.UniversalClient, cfg lock.Config) *lock.RedisLockPool {
	t.Helper()
	p, err := lock.NewRedisLockPool(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func redisSetup(t *testing.T, c redis.UniversalClient, cfg allocator.Config) (*allocator.Allocator, *lock.RedisLockPool, context.Context) {
	t.Helper()
	pool := poolOn(t, c, lock.Config{Prefix: redistest.Prefix(t)})
	a, err := allocator.NewRedis(pool, cfg)
	must(t, err)
	closeOnCleanup(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return a, pool, ctx
}

func TestRedisWrongType(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	a, pool, ctx := redisSetup(t, c, allocator.Config{LeaseTTL: long})
	must(t, pool.Extend(ctx, []string{"a", "b"}))
	must(t, a.Sync(ctx))
	la := mustTryOn(t, ctx, a, "w", allocator.AcquireOptions{Prefer: "a"})

	// The pool key holds a string.
	must(t, c.Del(ctx, pool.PoolKey()).Err())
	must(t, c.Set(ctx, pool.PoolKey(), "not a set", 0).Err())
	for _, opts := range []allocator.AcquireOptions{{}, {Prefer: "b"}, {Binding: "job"}} {
		_, err := tryOn(t, ctx, a, "w", opts)
		wantErr(t, "TryAcquire on a string pool key", err, lock.ErrWrongType)
		if errors.Is(err, allocator.ErrNoFreeItem) {
			t.Fatalf("wrong type reported as ErrNoFreeItem: %v", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err = acquireOn(t, wctx, a, "w", opts)
		cancel()
		wantErr(t, "Acquire on a string pool key", err, lock.ErrWrongType)
	}
	wantErr(t, "Sync on a string pool key", a.Sync(ctx), lock.ErrWrongType)
	if got, err := c.Get(ctx, pool.PoolKey()).Result(); err != nil || got != "not a set" {
		t.Fatalf("pool key now %q, %v; want the string untouched", got, err)
	}
	if ttl, err := c.PTTL(ctx, pool.PoolKey()).Result(); err != nil || ttl != -1*time.Nanosecond && ttl != -1*time.Millisecond {
		t.Fatalf("pool key PTTL now %v, %v; want no expiry", ttl, err)
	}
	must(t, c.Del(ctx, pool.PoolKey()).Err())
	must(t, pool.Extend(ctx, []string{"a", "b"}))

	// An item's lock key holds a hash: never handed out, not touched.
	bKey := pool.Key("b")
	must(t, c.HSet(ctx, bKey, "f", "v").Err())
	_, err := tryOn(t, ctx, a, "w", allocator.AcquireOptions{Prefer: "b"})
	wantErr(t, "TryAcquire with b a hash", err, allocator.ErrNoFreeItem)
	wantErr(t, "Quarantine(b) with b a hash", a.Quarantine(ctx, "b", time.Second), lock.ErrWrongType)
	wantHash(t, c, bKey, map[string]string{"f": "v"})

	// A lease whose lock key became a hash.
	aKey := pool.Key("a")
	must(t, c.Del(ctx, aKey).Err())
	must(t, c.HSet(ctx, aKey, "g", "w").Err())
	wantErr(t, "Refresh with a hash lock key", la.Refresh(ctx), lock.ErrWrongType)
	lost, err := a.RefreshAll(ctx, []*allocator.Lease{la})
	wantErr(t, "RefreshAll with a hash lock key", err, lock.ErrWrongType)
	if len(lost) != 0 {
		t.Fatalf("RefreshAll failed but reported %d lost", len(lost))
	}
	wantErr(t, "Release with a hash lock key", la.Release(ctx), lock.ErrWrongType)
	wantErr(t, "Lease.Quarantine with a hash lock key", la.Quarantine(ctx, time.Second), lock.ErrWrongType)
	wantHash(t, c, aKey, map[string]string{"g": "w"})
	wantHash(t, c, bKey, map[string]string{"f": "v"})
}

func wantHash(t *testing.T, c redis.UniversalClient, key string, want map[string]string) {
	t.Helper()
	got, err := c.HGetAll(context.Background(), key).Result()
	must(t, err)
	if !maps.Equal(got, want) {
		t.Fatalf("hash %s = %v, want %v untouched", key, got, want)
	}
	if ttl, err := c.PTTL(context.Background(), key).Result(); err != nil || ttl >= 0 {
		t.Fatalf("hash %s PTTL %v, %v; want no expiry", key, ttl, err)
	}
}

// TestRedisRawClients: a raw SADD (as the Python package does) adds an
// allocatable item, and a lease is a plain string lock with a PX TTL.
func TestRedisRawClients(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	a, pool, ctx := redisSetup(t, c, allocator.Config{LeaseTTL: 5 * time.Second})
	must(t, c.SAdd(ctx, pool.PoolKey(), "py-item").Err())
	l, _ := tryEventually(t, ctx, a, "w", "SADDed item allocatable", syncBound)
	if l.Item() != "py-item" {
		t.Fatalf("got %q", l.Item())
	}
	if v, err := c.Get(ctx, pool.Key("py-item")).Result(); err != nil || v != l.Value() {
		t.Fatalf("GET lock key = %q, %v; want %q", v, err, l.Value())
	}
	if ttl, err := c.PTTL(ctx, pool.Key("py-item")).Result(); err != nil || ttl <= 4*time.Second || ttl > 5*time.Second {
		t.Fatalf("PTTL lock key = %v, %v; want about 5s", ttl, err)
	}
	must(t, l.Release(ctx))
	if n, err := c.Exists(ctx, pool.Key("py-item")).Result(); err != nil || n != 0 {
		t.Fatalf("lock key exists after Release: %d, %v", n, err)
	}
	// SREM by a raw client: never handed out again.
	must(t, c.SRem(ctx, pool.PoolKey(), "py-item").Err())
	_, err := tryOn(t, ctx, a, "w", allocator.AcquireOptions{})
	wantErr(t, "TryAcquire after SREM", err, allocator.ErrNoFreeItem)
}

func TestParseLeaseValue(t *testing.T) {
	for v, want := range map[string]struct {
		owner string
		token int64
		ok    bool
	}{
		"host:1/w0#1000001":       {"host:1/w0", 1000001, true},
		"a#b#5":                   {"a#b", 5, true},
		allocator.QuarantineValue: {},
		allocator.CooldownValue:   {},
		"#5":                      {},
		"owner#":                  {},
		"owner#x1":                {},
		"owner#-3":                {},
		"owner#+3":                {},
		"plain":                   {},
	} {
		owner, token, ok := allocator.ParseLeaseValue(v)
		if owner != want.owner || token != want.token || ok != want.ok {
			t.Errorf("ParseLeaseValue(%q) = %q, %d, %v; want %q, %d, %v", v, owner, token, ok, want.owner, want.token, want.ok)
		}
	}
}
