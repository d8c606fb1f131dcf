package allocator_test

import (
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/keyspace"
)

// The availability index's bucketed layout (scripts/index.lua), checked
// from outside with plain Redis reads.

// bucketOf is index.lua's addressing, written again from its comment:
// linear hashing of the first 32 bits of the item's SHA-1 over n buckets.
func bucketOf(item string, n int) int {
	sum := sha1.Sum([]byte(item))
	h := uint64(binary.BigEndian.Uint32(sum[:4]))
	l := uint64(1)
	for l*2 <= uint64(n) {
		l *= 2
	}
	b := h % (2 * l)
	if b >= uint64(n) {
		b = h % l
	}
	return int(b)
}

// checkIndex reads the whole index of ks and fails t unless it holds
// exactly want (item -> score; nil: don't compare scores, only the items
// of wantItems), every item in the bucket its hash names, every head the
// earliest score of its bucket ("inf" when empty), the count right, and
// every bucket small enough for a listpack.
func checkIndex(t *testing.T, c redis.UniversalClient, ks keyspace.Pool, wantItems []string) map[string]float64 {
	t.Helper()
	ctx := t.Context()
	heads, err := c.ZRangeWithScores(ctx, ks.Index(), 0, -1).Result()
	must(t, err)
	n := len(heads)
	head := map[int]float64{}
	for _, h := range heads {
		b, err := strconv.Atoi(h.Member.(string))
		if err != nil || b < 0 || b >= n {
			t.Fatalf("heads member %q: not a bucket number below %d", h.Member, n)
		}
		head[b] = h.Score
	}
	got := map[string]float64{}
	for b := range n {
		key := ks.IndexBucket(b)
		zs, err := c.ZRangeWithScores(ctx, key, 0, -1).Result()
		must(t, err)
		if len(zs) > 128 {
			t.Errorf("bucket %d holds %d items: more than a listpack's default 128", b, len(zs))
		}
		if len(zs) > 0 {
			if enc := c.ObjectEncoding(ctx, key).Val(); enc != "listpack" {
				t.Errorf("bucket %d (%d items) is encoded %q, want listpack", b, len(zs), enc)
			}
			if head[b] != zs[0].Score {
				t.Errorf("bucket %d: head %v, earliest score %v", b, head[b], zs[0].Score)
			}
		} else if head[b] < 1e300 {
			t.Errorf("empty bucket %d has head %v, want inf", b, head[b])
		}
		for _, z := range zs {
			item := z.Member.(string)
			if want := bucketOf(item, n); want != b {
				t.Errorf("item %q in bucket %d, its hash names bucket %d of %d", item, b, want, n)
			}
			got[item] = z.Score
		}
	}
	count, err := c.HGet(ctx, ks.IndexCount(), "items").Int()
	must(t, err)
	if count != len(got) {
		t.Errorf("index count %d, buckets hold %d items", count, len(got))
	}
	if wantItems != nil {
		if len(got) != len(wantItems) {
			t.Errorf("index holds %d items, want %d", len(got), len(wantItems))
		}
		for _, it := range wantItems {
			if _, ok := got[it]; !ok {
				t.Errorf("item %q is in no bucket", it)
			}
		}
	}
	if n > 1 && len(got) > 0 && float64(len(got))/float64(n) > 40 {
		t.Errorf("%d items in %d buckets: more than 40 a bucket, a split is missing", len(got), n)
	}
	return got
}

func TestRedisIndexLayout(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	a, pool, ctx := redisSetup(t, c, allocator.Config{LeaseTTL: long})
	ks := pool.Keys()
	items := make([]string, 5000)
	for i := range items {
		items[i] = fmt.Sprintf("item-%05d", i)
	}
	// A leftover index of the layout before buckets: sync steps empty it.
	for i := range 1500 {
		must(t, c.ZAdd(ctx, ks.LegacyIndex(), redis.Z{Score: float64(i), Member: fmt.Sprintf("old-%d", i)}).Err())
	}
	must(t, pool.Extend(ctx, items))
	must(t, a.Sync(ctx))
	checkIndex(t, c, ks, items)
	if n := c.Exists(ctx, ks.LegacyIndex()).Val(); n != 0 {
		t.Errorf("the old index key is still there after a sync")
	}
	if n := c.ZCard(ctx, ks.Index()).Val(); n < 5000/40 {
		t.Errorf("5000 items in %d buckets", n)
	}

	// Leases move items to later scores, releases back; the heads follow.
	var leases []*allocator.Lease
	for range 300 {
		leases = append(leases, mustTryOn(t, ctx, a, "w", allocator.AcquireOptions{}))
	}
	scores := checkIndex(t, c, ks, items)
	for _, l := range leases {
		if s := scores[l.Item()]; int64(s) != l.Deadline().UnixMilli() {
			t.Errorf("leased %q scored %v, its deadline is %d", l.Item(), s, l.Deadline().UnixMilli())
		}
	}
	for _, l := range leases[:150] {
		must(t, l.Release(ctx))
	}
	checkIndex(t, c, ks, items)

	// The oldest-available item comes first across buckets: the first 150
	// released are available since their release, the 4,700 never leased
	// since the epoch (score 0), so a grant takes a never-leased one.
	l := mustTryOn(t, ctx, a, "w", allocator.AcquireOptions{})
	if scores[l.Item()] != 0 {
		t.Errorf("granted %q, available since %v, while items available since 0 wait", l.Item(), scores[l.Item()])
	}

	// Items leave the pool: the sync walk drops them from their buckets.
	must(t, pool.Shrink(ctx, items[:2500]))
	must(t, a.Sync(ctx)) // a full sweep: it drops what left
	checkIndex(t, c, ks, items[2500:])
}
