package lock_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/lock"
)

// These tests cover what only the Redis backend has: its keyspace, keys of
// the wrong type written by someone else, and an unreachable server.

func newRedisPool(t *testing.T, c redis.UniversalClient, cfg lock.Config) *lock.RedisLockPool {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = redistest.Prefix(t)
	}
	p, err := lock.NewRedisLockPool(c, cfg)
	must(t, err)
	return p
}

// TestKeyspaceIsPythonCompatible checks the byte layout of redis_allocator's
// lock module: "<prefix>|<suffix>:<key>" STRINGs with a TTL, and the pool's
// SET at "<prefix>|<suffix>|pool". The raw commands below are the ones the
// Python package sends, so a lock taken by either side is honoured by the
// other.
func TestKeyspaceIsPythonCompatible(t *testing.T) {
	t.Parallel()
	c, ctx := redistest.Client(t), context.Background()
	prefix := redistest.Prefix(t)

	l, err := lock.NewRedisLock(c, lock.Config{Prefix: prefix})
	must(t, err)
	wantBool(t, "Go Lock", true)(l.Lock(ctx, "res-1", "go-worker", time.Minute))
	if v := c.Get(ctx, prefix+"|lock:res-1").Val(); v != "go-worker" {
		t.Fatalf("raw GET %s|lock:res-1 = %q; want go-worker", prefix, v)
	}
	if ttl := c.PTTL(ctx, prefix+"|lock:res-1").Val(); ttl <= 55*time.Second || ttl > time.Minute {
		t.Fatalf("raw PTTL = %v; want about 1m", ttl)
	}
	// Python's lock(): SET key value EX timeout NX. Go must see it as held.
	if ok := c.SetNX(ctx, prefix+"|lock:res-2", "py-thread-7", 60*time.Second).Val(); !ok {
		t.Fatal("raw SET NX failed on a fresh key")
	}
	wantBool(t, "Go Lock on a Python-held key", false)(l.Lock(ctx, "res-2", "go-worker", time.Minute))
	wantValue(t, l, "res-2", "py-thread-7", true)
	// Python's rlock(): SET key value EX timeout NX GET; same value = held.
	if err := c.SetArgs(ctx, prefix+"|lock:res-1", "go-worker", redis.SetArgs{Mode: "NX", Get: true, TTL: time.Minute}).Err(); err != nil {
		t.Fatalf("Python-style rlock on a Go-held key: %v", err)
	}

	p := newRedisPool(t, c, lock.Config{Prefix: prefix})
	if p.PoolKey() != prefix+"|lock-pool|pool" {
		t.Fatalf("PoolKey = %q; want %q", p.PoolKey(), prefix+"|lock-pool|pool")
	}
	must(t, p.Extend(ctx, []string{"a", "b"}))
	if typ := c.Type(ctx, prefix+"|lock-pool|pool").Val(); typ != "set" {
		t.Fatalf("pool key type = %q; want set", typ)
	}
	// Python's extend() is SADD; its pool locks live under the lock-pool suffix.
	c.SAdd(ctx, prefix+"|lock-pool|pool", "c")
	c.Set(ctx, prefix+"|lock-pool:c", "py", time.Minute)
	wantMembers(t, p, "a", "b", "c")
	wantHealth(t, p, 1, 2)

	custom := newRedisPool(t, c, lock.Config{Prefix: prefix, Suffix: "gpu"})
	must(t, custom.Extend(ctx, []string{"slot-0"}))
	wantBool(t, "Lock(slot-0)", true)(custom.Lock(ctx, "slot-0", "w", time.Minute))
	for _, k := range []string{prefix + "|gpu|pool", prefix + "|gpu:slot-0"} {
		if c.Exists(ctx, k).Val() != 1 {
			t.Fatalf("key %q missing", k)
		}
	}
}

// TestWrongTypeIsRefusedAndKept puts a hash where a lock lives and a string
// where a pool lives: every operation must fail with ErrWrongType naming the
// key, and the foreign keys must be left exactly as they were.
func TestWrongTypeIsRefusedAndKept(t *testing.T) {
	t.Parallel()
	c, ctx := redistest.Client(t), context.Background()
	p := newRedisPool(t, c, lock.Config{})
	lockKey := p.Key("item")
	c.HSet(ctx, lockKey, "field", "precious")
	c.Set(ctx, p.PoolKey(), "precious", 0)

	calls := map[string]error{
		"KeyStatus": second(p.KeyStatus(ctx, "item", time.Minute)),
		"Update":    p.Update(ctx, "item", "v", time.Minute),
		"Lock":      second(p.Lock(ctx, "item", "v", time.Minute)),
		"IsLocked":  second(p.IsLocked(ctx, "item")),
		"RLock":     second(p.RLock(ctx, "item", "v", time.Minute)),
		"Unlock":    second(p.Unlock(ctx, "item")),
		"Refresh":   second(p.Refresh(ctx, "item", "v", time.Minute)),
		"Release":   second(p.Release(ctx, "item", "v")),
		"SetGT":     second(p.SetGT(ctx, "item", 1, 1, time.Minute)),
		"DelEQ":     second(p.DelEQ(ctx, "item", 1)),
	}
	_, _, calls["LockValue"] = p.LockValue(ctx, "item")
	_, _, calls["TTL"] = p.TTL(ctx, "item")
	for name, err := range calls {
		if !errors.Is(err, lock.ErrWrongType) || !strings.Contains(err.Error(), lockKey) {
			t.Errorf("%s on a hash = %v; want ErrWrongType naming %q", name, err, lockKey)
		}
	}
	poolCalls := map[string]error{
		"Extend":      p.Extend(ctx, []string{"x"}),
		"Shrink":      p.Shrink(ctx, []string{"x"}),
		"Assign":      p.Assign(ctx, []string{"x"}),
		"Assign(nil)": p.Assign(ctx, nil),
		"Clear":       p.Clear(ctx),
		"Contains":    second(p.Contains(ctx, "x")),
		"Len":         second(p.Len(ctx)),
	}
	_, _, poolCalls["HealthCheck"] = p.HealthCheck(ctx)
	for _, err := range p.Items(ctx) {
		poolCalls["Items"] = err
	}
	for _, err := range p.ItemLocks(ctx) {
		poolCalls["ItemLocks"] = err
	}
	for name, err := range poolCalls {
		if !errors.Is(err, lock.ErrWrongType) || !strings.Contains(err.Error(), p.PoolKey()) {
			t.Errorf("%s on a string pool key = %v; want ErrWrongType naming %q", name, err, p.PoolKey())
		}
	}
	if v := c.HGet(ctx, lockKey, "field").Val(); v != "precious" {
		t.Errorf("hash at the lock key now holds %q; want it untouched", v)
	}
	if v := c.Get(ctx, p.PoolKey()).Val(); v != "precious" {
		t.Errorf("string at the pool key now holds %q; want it untouched", v)
	}
	if keys := c.Keys(ctx, p.PoolKey()+":assign:*").Val(); len(keys) != 0 {
		t.Errorf("a refused Assign left staging keys %q", keys)
	}
}

// TestBadInputWritesNoKeys checks at the Redis level that rejected calls
// created no key at all under the test's prefix.
func TestBadInputWritesNoKeys(t *testing.T) {
	t.Parallel()
	c, ctx := redistest.Client(t), context.Background()
	prefix := redistest.Prefix(t)
	p := newRedisPool(t, c, lock.Config{Prefix: prefix})
	for _, key := range []string{"", "a\x00b", strings.Repeat("k", lock.MaxKeyLen+1)} {
		_ = p.Update(ctx, key, "v", time.Minute)
		_, _ = p.Lock(ctx, key, "v", time.Minute)
		_, _ = p.SetGT(ctx, key, 1, 1, time.Minute)
		_ = p.Extend(ctx, []string{"ok", key})
		_ = p.Assign(ctx, []string{"ok", key})
	}
	_ = p.Update(ctx, "k", "v", 0)
	_, _ = p.Lock(ctx, "k", "v", -time.Second)
	_, _ = p.SetGT(ctx, "k", 1, 1, 0)
	_, _ = p.Lock(ctx, "k", strings.Repeat("v", lock.MaxValueLen+1), time.Minute)
	if keys := c.Keys(ctx, prefix+"*").Val(); len(keys) != 0 {
		t.Fatalf("rejected calls wrote keys %q", keys)
	}
	for _, cfg := range []lock.Config{{}, {Prefix: "p", Epsilon: -1}, {Prefix: "a\x00"}, {Prefix: strings.Repeat("p", lock.MaxKeyLen+1)}} {
		if _, err := lock.NewRedisLockPool(c, cfg); !errors.Is(err, lock.ErrInvalidConfig) {
			t.Errorf("NewRedisLockPool(%+v) = %v; want ErrInvalidConfig", cfg, err)
		}
		if _, err := lock.NewRedisLock(c, cfg); !errors.Is(err, lock.ErrInvalidConfig) {
			t.Errorf("NewRedisLock(%+v) = %v; want ErrInvalidConfig", cfg, err)
		}
	}
	if _, err := lock.NewRedisLock(nil, lock.Config{Prefix: "p"}); !errors.Is(err, lock.ErrInvalidConfig) {
		t.Errorf("NewRedisLock(nil client) = %v; want ErrInvalidConfig", err)
	}
}

// TestUnreachableRedis covers a refused connection and a server that
// accepts but never answers: errors name the operation and key, and no call
// outlives its context's deadline by more than a small margin.
func TestUnreachableRedis(t *testing.T) {
	t.Parallel()
	// A port nobody listens on: take a free one and close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	refused := ln.Addr().String()
	must(t, ln.Close())
	// A black hole: accepts connections, never replies.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	t.Cleanup(func() { hole.Close() })
	go func() {
		for {
			conn, err := hole.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { conn.Close() })
		}
	}()
	for _, addr := range []string{refused, hole.Addr().String()} {
		c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
		t.Cleanup(func() { c.Close() })
		p := newRedisPool(t, c, lock.Config{Prefix: "down"})
		calls := map[string]func(context.Context) error{
			"Lock":        func(ctx context.Context) error { return second(p.Lock(ctx, "item", "v", time.Minute)) },
			"Refresh":     func(ctx context.Context) error { return second(p.Refresh(ctx, "item", "v", time.Minute)) },
			"Unlock":      func(ctx context.Context) error { return second(p.Unlock(ctx, "item")) },
			"SetGT":       func(ctx context.Context) error { return second(p.SetGT(ctx, "item", 1, 1, time.Minute)) },
			"Assign":      func(ctx context.Context) error { return p.Assign(ctx, []string{"a"}) },
			"HealthCheck": func(ctx context.Context) error { _, _, err := p.HealthCheck(ctx); return err },
		}
		for name, call := range calls {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			start := time.Now()
			err := call(ctx)
			took := time.Since(start)
			cancel()
			if err == nil {
				t.Errorf("%s against %s succeeded; want an error", name, addr)
				continue
			}
			if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "down|lock-pool") {
				t.Errorf("%s error %q does not name the operation and key", name, err)
			}
			if took > 2*time.Second {
				t.Errorf("%s against %s took %v with a 300ms deadline (%s)", name, addr, took, redistest.SchedDelay())
			}
		}
	}
}

// TestAssignFailureKeepsOldPool makes Assign fail half-way through staging
// (the server runs out of memory) and checks the old pool is intact and no
// staging set is left behind.
func TestAssignFailureKeepsOldPool(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	p := newRedisPool(t, c, lock.Config{})
	old := numbered("old", 1000)
	must(t, p.Assign(ctx, old))

	limit := usedMemory(t, c) + 2<<20
	must(t, c.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
	must(t, c.ConfigSet(ctx, "maxmemory", strconv.FormatInt(limit, 10)).Err())
	err := p.Assign(ctx, numbered("new-item-with-a-long-name", 200_000))
	if err == nil {
		t.Fatal("Assign of 200k items under a 2 MiB memory margin succeeded; the test needs it to fail")
	}
	if !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("Assign failed with %v; want the server's OOM error", err)
	}
	must(t, c.ConfigSet(ctx, "maxmemory", "0").Err())
	wantMembers(t, p, old...)
	if keys := c.Keys(ctx, p.PoolKey()+":assign:*").Val(); len(keys) != 0 {
		t.Fatalf("failed Assign left staging keys %q", keys)
	}
}

// usedMemory reads used_memory from INFO memory.
func usedMemory(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	for _, line := range strings.Split(c.Info(context.Background(), "memory").Val(), "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			must(t, err)
			return n
		}
	}
	t.Fatal("INFO memory has no used_memory")
	return 0
}

// TestMillionItemPool: Extend and Assign take 1,000,000 items (the Python
// package's assign fails near 8,000 and empties the pool), and the pool-wide
// walks cover them all.
func TestMillionItemPool(t *testing.T) {
	t.Parallel()
	c, ctx := redistest.Client(t), context.Background()
	p := newRedisPool(t, c, lock.Config{})
	t.Cleanup(func() { c.Del(context.Background(), p.PoolKey()) })
	const n = 1_000_000
	must(t, p.Extend(ctx, numbered("x", n)))
	wantLen(t, p, n)
	must(t, p.Assign(ctx, numbered("y", n)))
	wantLen(t, p, n)
	wantBool(t, "Contains(y-0999999)", true)(p.Contains(ctx, "y-0999999"))
	wantBool(t, "Contains(x-0000000)", false)(p.Contains(ctx, "x-0000000"))
	wantBool(t, "Lock(y-0000042)", true)(p.Lock(ctx, "y-0000042", "w", time.Minute))
	wantHealth(t, p, 1, n-1)
}

func wantLen(t *testing.T, p lock.Pool, want int64) {
	t.Helper()
	n, err := p.Len(context.Background())
	must(t, err)
	if n != want {
		t.Fatalf("Len = %d; want %d", n, want)
	}
}

// TestHealthCheckWalksBothWays checks both of HealthCheck's strategies give
// exact counts: the keyspace walk (a database with fewer keys than the pool
// has members) and the member walk, with a prefix full of glob characters
// and a neighbouring pool whose keys an unescaped pattern would match.
func TestHealthCheckWalksBothWays(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	c, ctx := srv.Client(t), context.Background()
	p := newRedisPool(t, c, lock.Config{Prefix: `a*b[c]\d?`})
	// The unescaped pattern a*b[c]\d? would match this neighbour's prefix.
	neighbour := newRedisPool(t, c, lock.Config{Prefix: "aXXbcdZ"})
	items := numbered("item", 3000)
	must(t, p.Assign(ctx, items))
	must(t, neighbour.Assign(ctx, items[100:110]))
	for _, it := range items[:40] {
		wantBool(t, "Lock", true)(p.Lock(ctx, it, "w", time.Minute))
	}
	for _, it := range items[100:110] {
		wantBool(t, "neighbour Lock", true)(neighbour.Lock(ctx, it, "w", time.Minute))
	}
	wantBool(t, "Lock(non-member)", true)(p.Lock(ctx, "outsider", "w", time.Minute))
	if n := c.DBSize(ctx).Val(); n >= int64(len(items)) {
		t.Fatalf("DBSIZE %d; the keyspace walk needs fewer keys than the pool's %d members", n, len(items))
	}
	wantHealth(t, p, 40, int64(len(items))-40) // keyspace walk
	// Past the pool's size in keys, the member walk takes over.
	filler := newRedisPool(t, c, lock.Config{Prefix: "filler"})
	for _, it := range items {
		must(t, filler.Update(ctx, it, "x", time.Minute))
	}
	wantHealth(t, p, 40, int64(len(items))-40)
	wantHealth(t, neighbour, 10, 0)
}

// TestHealthCheckWithAWrongPassword: a connection that fails to
// authenticate must be an error, not "0 locked, 0 free".
func TestHealthCheckWithAWrongPassword(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin := redistest.Client(t)
	user := "hc-" + strings.NewReplacer(":", "-", "|", "-").Replace(redistest.Prefix(t))
	if err := admin.Do(ctx, "ACL", "SETUSER", user, "on", ">right-pw", "~*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", user) })
	cfg := lock.Config{Prefix: redistest.Prefix(t)}
	good, err := lock.NewRedisLockPool(admin, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := good.Extend(ctx, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	bad := redis.NewClient(&redis.Options{Addr: redistest.Addr(t), Username: user, Password: "wrong-pw", MaxRetries: -1})
	defer bad.Close()
	p, err := lock.NewRedisLockPool(bad, cfg)
	if err != nil {
		t.Fatal(err)
	}
	locked, free, err := p.HealthCheck(ctx)
	if err == nil {
		t.Fatalf("HealthCheck with a wrong password = %d locked, %d free, nil error; want an error", locked, free)
	}
}
