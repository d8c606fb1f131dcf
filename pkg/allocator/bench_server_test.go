package allocator_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/benchpair"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/keyspace"
	"github.com/lockpool/lockpool/pkg/lock"
)

// What the Redis server pays for lockpool: CPU per acquire cycle and memory
// per pool item, each against a baseline on the same dedicated server.

// BenchmarkRedisCPUPerCycle measures the server's CPU time (INFO cpu:
// used_cpu_user + used_cpu_sys) per TryAcquire+Release cycle on a 128-item
// pool, against the raw SET NX PX + DEL cycle, 8 goroutines each. The two
// cannot be told apart when interleaved, so they run as separate phases
// (benchpair.Phases: raw, lockpool, lockpool, raw). The allocator lives
// through all four, so its background sync weighs on both alike. Goal:
// cpu-us-ratio <= 1.6.
func BenchmarkRedisCPUPerCycle(b *testing.B) {
	env := newBenchEnv(b)
	const goroutines = 8
	b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
		ctx := context.Background()
		p := env.pool(b, "cpu", 128)
		benchpair.Phases(b, goroutines, "cpu-us", benchpair.ServerCPU(ctx, env.client),
			benchRawCycle(ctx, env.client, p.pool.PoolKey()), benchAllocCycle(ctx, p.alloc))
	})
}

// memoryItems is how many items the memory benchmark's pools hold.
const memoryItems = 100_000

// memoryLayout is one way of keeping a pool of items in Redis: build
// writes it for items under the prefix, and every key it wrote starts with
// the pool's base "<prefix>|<suffix>".
type memoryLayout struct {
	name  string
	build func(ctx context.Context, b *testing.B, c *redis.Client, ks keyspace.Pool, items []string)
}

// BenchmarkRedisMemoryPerItem measures the server memory a pool of 100,000
// free items ("item-000000" ...) takes in three layouts, each under its own
// prefix of the same length on one dedicated server:
//
//	lockpool  the pool's member SET <prefix>|<suffix>|pool, then what
//	          allocator.NewRedis and a full Sync add (the availability
//	          index ZSET of every item, the epoch HASH, the fencing
//	          counter, the sweep cursors): what a lockpool pool costs
//	          before any lease
//	sadd      the names alone, SADD into one SET: the floor
//	python    the layout the Python package redis_allocator's
//	          RedisAllocator writes for N free items (version 0.7): its
//	          pool key <prefix>|<suffix>|pool is a HASH, not a SET (its
//	          RedisLockPool's member SET under the same name is replaced,
//	          not kept beside it), item -> "prev||next||expiry", a doubly
//	          linked free list in extend order, expiry -1 (no timeout),
//	          and its head and tail STRINGs <pool>|head and <pool>|tail
//
// Memory per layout is the sum of MEMORY USAGE <key> SAMPLES 0 (every
// element counted) over the layout's keys, found with SCAN; the goal is
// python-ratio = lockpool ÷ python <= 1.3 (sadd-ratio = lockpool ÷ sadd is
// reported for scale). The used_memory increase of the server while each
// layout was written is reported too (*-used-B/item), as a check.
func BenchmarkRedisMemoryPerItem(b *testing.B) {
	env := newBenchEnv(b)
	ctx := context.Background()
	items := make([]string, memoryItems)
	for i := range items {
		items[i] = fmt.Sprintf("item-%06d", i)
	}
	layouts := []memoryLayout{
		{"lockpool", buildLockpoolLayout},
		{"sadd", buildSaddLayout},
		{"python", buildPythonLayout},
	}
	used := map[string]float64{}
	bases := map[string]keyspace.Pool{}
	for _, l := range layouts {
		// Same-length prefixes, so key names weigh alike.
		ks := keyspace.New("bench-"+l.name[:2], lock.DefaultPoolSuffix)
		before := usedMemory(ctx, b, env.client)
		l.build(ctx, b, env.client, ks, items)
		used[l.name] = float64(usedMemory(ctx, b, env.client) - before)
		bases[l.name] = ks
	}
	bytes := map[string]float64{}
	logged := false
	for b.Loop() {
		for _, l := range layouts {
			sum, keys := layoutMemory(ctx, b, env.client, bases[l.name])
			bytes[l.name] = float64(sum)
			if !logged {
				b.Logf("%s: %.1f B/item in %d keys: %s", l.name, float64(sum)/memoryItems, len(keys), strings.Join(keys, ", "))
			}
		}
		logged = true
	}
	b.ReportMetric(0, "ns/op") // reading the sizes is not the goal; the sizes are
	for _, l := range layouts {
		b.ReportMetric(bytes[l.name]/memoryItems, l.name+"-B/item")
		b.ReportMetric(used[l.name]/memoryItems, l.name+"-used-B/item")
	}
	b.ReportMetric(bytes["lockpool"]/bytes["python"], "python-ratio")
	b.ReportMetric(bytes["lockpool"]/bytes["sadd"], "sadd-ratio")
}

// buildLockpoolLayout adds the items to a lock pool, then starts an
// allocator over it and syncs it, so that its index holds every item.
func buildLockpoolLayout(ctx context.Context, b *testing.B, c *redis.Client, ks keyspace.Pool, items []string) {
	lp, err := lock.NewRedisLockPool(c, lock.Config{Prefix: ks.Prefix(), Suffix: ks.Suffix()})
	must(b, err)
	must(b, lp.Extend(ctx, items))
	a, err := allocator.NewRedis(lp, allocator.Config{LeaseTTL: benchTTL})
	must(b, err)
	b.Cleanup(func() { _ = a.Close() })
	must(b, a.Sync(ctx))
	if n, err := c.HGet(ctx, ks.IndexCount(), "items").Int64(); err != nil || n != int64(len(items)) {
		b.Fatalf("after Sync the index count %q is %d (%v); want %d (did the index key move?)", ks.IndexCount(), n, err, len(items))
	}
}

// buildSaddLayout writes the names into one SET, 1,000 a command.
func buildSaddLayout(ctx context.Context, b *testing.B, c *redis.Client, ks keyspace.Pool, items []string) {
	pipe := c.Pipeline()
	for chunk := range slices.Chunk(items, 1000) {
		args := make([]any, len(chunk))
		for i, it := range chunk {
			args[i] = it
		}
		pipe.SAdd(ctx, ks.Members(), args...)
	}
	_, err := pipe.Exec(ctx)
	must(b, err)
}

// pythonSep is what the Python layout joins prev, next and expiry with.
const pythonSep = "||"

// buildPythonLayout writes the Python package's free list: a HASH of
// item -> "prev||next||-1" in order, and the head and tail pointers.
func buildPythonLayout(ctx context.Context, b *testing.B, c *redis.Client, ks keyspace.Pool, items []string) {
	hash := ks.Members()
	pipe := c.Pipeline()
	for start := 0; start < len(items); start += 1000 {
		end := min(start+1000, len(items))
		args := make([]any, 0, 2*(end-start))
		for i := start; i < end; i++ {
			prev, next := "", ""
			if i > 0 {
				prev = items[i-1]
			}
			if i+1 < len(items) {
				next = items[i+1]
			}
			args = append(args, items[i], prev+pythonSep+next+pythonSep+"-1")
		}
		pipe.HSet(ctx, hash, args...)
	}
	pipe.Set(ctx, hash+"|head", items[0], 0)
	pipe.Set(ctx, hash+"|tail", items[len(items)-1], 0)
	_, err := pipe.Exec(ctx)
	must(b, err)
}

// layoutMemory sums MEMORY USAGE ... SAMPLES 0 over every key of the pool
// ks, and names each key with its type, encoding and size.
func layoutMemory(ctx context.Context, b *testing.B, c *redis.Client, ks keyspace.Pool) (int64, []string) {
	var sum int64
	var keys []string
	iter := c.Scan(ctx, 0, keyspace.GlobEscape(ks.Base())+"*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		n, err := c.MemoryUsage(ctx, k, 0).Result()
		must(b, err)
		typ, err := c.Type(ctx, k).Result()
		must(b, err)
		enc, err := c.ObjectEncoding(ctx, k).Result()
		must(b, err)
		sum += n
		keys = append(keys, fmt.Sprintf("%s (%s %s, %d B)", k, typ, enc, n))
	}
	must(b, iter.Err())
	return sum, keys
}

// usedMemory is the server's used_memory (INFO memory).
func usedMemory(ctx context.Context, b *testing.B, c *redis.Client) int64 {
	info, err := c.Info(ctx, "memory").Result()
	must(b, err)
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			must(b, err)
			return n
		}
	}
	b.Fatalf("INFO memory has no used_memory: %q", info)
	return 0
}
