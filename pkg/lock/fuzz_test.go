package lock_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/lock"
)

// FuzzDifferential runs the same random program of lock and pool operations
// on the Redis backend and the in-memory backend and requires the same
// result from both at every step. Its seed corpus runs in `make test`;
// `make fuzz` explores further.
//
// A program is a byte string read three bytes per step: operation, key or
// item list, and argument. TTLs are a minute or more, so nothing expires
// mid-program and results do not depend on timing.
func FuzzDifferential(f *testing.F) {
	for shift := range 7 {
		var prog []byte
		for op := range len(fuzzOps) {
			prog = append(prog, byte(op), byte(op+shift), byte(op*7+shift*3))
		}
		f.Add(prog)
	}
	// Conditional operations on numbers stored by Update, at the epsilon edges.
	f.Add([]byte{1, 0, 0, 10, 0, 2, 12, 0, 3, 14, 0, 4, 16, 0, 5, 7, 0, 0, 1, 0, 2, 19, 0, 2, 21, 0, 9, 7, 0, 0})
	// Pool members and their locks.
	f.Add([]byte{22, 5, 0, 0, 0, 1, 0, 2, 2, 28, 0, 0, 29, 5, 0, 30, 0, 0, 24, 1, 0, 31, 0, 0, 23, 0, 0, 28, 0, 0})

	c := redistest.Client(f)
	base := redistest.Prefix(f)
	var runs atomic.Int64
	f.Fuzz(func(t *testing.T, prog []byte) {
		ctx := context.Background()
		prefix := fmt.Sprintf("%s-%d", base, runs.Add(1))
		rp, err := lock.NewRedisLockPool(c, lock.Config{Prefix: prefix})
		must(t, err)
		mp, err := lock.NewMemoryLockPool(lock.MemoryConfig{})
		must(t, err)
		t.Cleanup(func() {
			keys := []string{rp.PoolKey()}
			for _, k := range fuzzKeys {
				keys = append(keys, rp.Key(k))
			}
			for _, k := range fuzzItemLists {
				for _, it := range k {
					if it != "" && !strings.Contains(it, "\x00") {
						keys = append(keys, rp.Key(it))
					}
				}
			}
			c.Del(context.Background(), keys...)
		})
		for step := 0; len(prog) >= 3 && step < 100; step++ {
			op := fuzzOps[int(prog[0])%len(fuzzOps)]
			sel, arg := prog[1], prog[2]
			prog = prog[3:]
			got := op.run(ctx, rp, sel, arg)
			want := op.run(ctx, mp, sel, arg)
			if got != want {
				t.Fatalf("step %d %s(sel %d, arg %d): redis gave %s, memory gave %s", step, op.name, sel, arg, got, want)
			}
		}
	})
}

var (
	fuzzKeys   = []string{"a", "b", "item-1", "c", "", "x\x00y"}
	fuzzValues = []string{"1", "2", "0", "1.0000005", "worker-a", "", " 1", "1e400", "-0", ".5", "abc", strings.Repeat("v", lock.MaxValueLen+1)}
	fuzzNums   = []float64{0, 1, 1e-6, -1e-6, 1 + 5e-7, 1 - 5e-7, 1 + 2e-6, 1 - 2e-6, 2, -1, 0.5, 1e300, math.NaN(), math.Inf(1)}
	fuzzTTLs   = []time.Duration{time.Minute, 5 * time.Minute, 10 * time.Minute, lock.NoExpiry, 0, 500 * time.Microsecond, -time.Second}
	// KeyStatus timeouts: between the 1 and 5 minute TTLs, and invalid.
	fuzzTimeouts  = []time.Duration{2 * time.Minute, 20 * time.Minute, 0}
	fuzzItemLists = [][]string{{"a", "b"}, {"item-1"}, {}, nil, {"a", ""}, {"b", "c", "a"}, {"c"}}
)

type fuzzOp struct {
	name string
	run  func(ctx context.Context, p lock.Pool, sel, arg byte) string
}

func pick[T any](s []T, b byte) T { return s[int(b)%len(s)] }

// outcome renders a result so the two backends can be compared: values as
// they are, errors by the sentinel they wrap. A TTL is rounded to the
// second, and its exact value is not compared, only that it is in range.
func outcome(err error, vals ...any) string {
	if err != nil {
		for _, s := range []error{lock.ErrInvalidKey, lock.ErrInvalidValue, lock.ErrInvalidTTL, lock.ErrNotNumeric, lock.ErrWrongType} {
			if errors.Is(err, s) {
				return "error: " + s.Error()
			}
		}
		return "unexpected error: " + err.Error()
	}
	return fmt.Sprint(vals...)
}

func condFuzzOp(name string, op condOp) fuzzOp {
	return fuzzOp{name, func(ctx context.Context, p lock.Pool, sel, arg byte) string {
		ok, err := op.run(ctx, lock.Ops{Locker: p}, pick(fuzzKeys, sel), pick(fuzzNums, arg), pick(fuzzNums, arg>>4), pick(fuzzTTLs, arg>>2))
		return outcome(err, ok)
	}}
}

func sortedItems(ctx context.Context, p lock.Pool) string {
	var items []string
	for it, err := range p.Items(ctx) {
		if err != nil {
			return outcome(err)
		}
		items = append(items, it)
	}
	slices.Sort(items)
	return fmt.Sprintf("%q", items)
}

var fuzzOps = []fuzzOp{
	{"Lock", func(ctx context.Context, p lock.Pool, sel, arg byte) string {
		return outcome2(p.Lock(ctx, pick(fuzzKeys, sel), pick(fuzzValues, arg), pick(fuzzTTLs, arg>>4)))
	}},
	{"Update", func(ctx context.Context, p lock.Pool, sel, arg byte) string {
		return outcome(p.Update(ctx, pick(fuzzKeys, sel), pick(fuzzValues, arg), pick(fuzzTTLs, arg>>4)), "ok")
	}},
	{"RLock", func(ctx context.Context, p lock.Pool, sel, arg byte) string {
		return outcome2(p.RLock(ctx, pick(fuzzKeys, sel), pick(fuzzValues, arg), pick(fuzzTTLs, arg>>4)))
	}},
	{"Unlock", func(ctx context.Context, p lock.Pool, sel, _ byte) string {
		return outcome2(p.Unlock(ctx, pick(fuzzKeys, sel)))
	}},
	{"Refresh", func(ctx context.Context, p lock.Pool, sel, arg byte) string {
		return outcome2(p.Refresh(ctx, pick(fuzzKeys, sel), pick(fuzzValues, arg), pick(fuzzTTLs, arg>>4)))
	}},
	{"Replace", func(ctx context.Context, p lock.Pool, sel, arg byte) string {
		return outcome2(p.Replace(ctx, pick(fuzzKeys, sel), pick(fuzzValues, arg), pick(fuzzValues, arg>>3), pick(fuzzTTLs, arg>>5)))
	}},
	{"Release", func(ctx context.Context, p lock.Pool, sel, arg byte) string {
		return outcome2(p.Release(ctx, pick(fuzzKeys, sel), pick(fuzzValues, arg)))
	}},
	{"IsLocked", func(ctx context.Context, p lock.Pool, sel, _ byte) string {
		return outcome2(lock.Ops{Locker: p}.IsLocked(ctx, pick(fuzzKeys, sel)))
	}},
	{"LockValue", func(ctx context.Context, p lock.Pool, sel, _ byte) string {
		v, found, err := p.LockValue(ctx, pick(fuzzKeys, sel))
		return outcome(err, fmt.Sprintf("%q", v), found)
	}},
	{"TTL", func(ctx context.Context, p lock.Pool, sel, _ byte) string {
		ttl, found, err := p.TTL(ctx, pick(fuzzKeys, sel))
		switch {
		case err != nil || !found || ttl == lock.NoExpiry:
			return outcome(err, ttl, found)
		case ttl <= 0 || ttl > 10*time.Minute:
			return fmt.Sprintf("TTL %v out of range", ttl)
		}
		// Which of the TTL buckets (1m, 5m, 10m) it belongs to.
		return outcome(nil, "bucket", (ttl+time.Minute-time.Second)/time.Minute, found)
	}},
	{"KeyStatus", func(ctx context.Context, p lock.Pool, sel, arg byte) string {
		return outcome2(lock.Ops{Locker: p}.KeyStatus(ctx, pick(fuzzKeys, sel), pick(fuzzTimeouts, arg)))
	}},
	condFuzzOp("SetGT", condOps["SetGT"]), condFuzzOp("SetLT", condOps["SetLT"]),
	condFuzzOp("SetGE", condOps["SetGE"]), condFuzzOp("SetLE", condOps["SetLE"]),
	condFuzzOp("SetEQ", condOps["SetEQ"]), condFuzzOp("SetNE", condOps["SetNE"]),
	condFuzzOp("DelGT", condOps["DelGT"]), condFuzzOp("DelLT", condOps["DelLT"]),
	condFuzzOp("DelGE", condOps["DelGE"]), condFuzzOp("DelLE", condOps["DelLE"]),
	condFuzzOp("DelEQ", condOps["DelEQ"]), condFuzzOp("DelNE", condOps["DelNE"]),
	{"Extend", func(ctx context.Context, p lock.Pool, sel, _ byte) string {
		return outcome(p.Extend(ctx, pick(fuzzItemLists, sel)), "ok")
	}},
	{"Shrink", func(ctx context.Context, p lock.Pool, sel, _ byte) string {
		return outcome(p.Shrink(ctx, pick(fuzzItemLists, sel)), "ok")
	}},
	{"Assign", func(ctx context.Context, p lock.Pool, sel, _ byte) string {
		return outcome(p.Assign(ctx, pick(fuzzItemLists, sel)), "ok")
	}},
	{"Clear", func(ctx context.Context, p lock.Pool, _, _ byte) string {
		return outcome(p.Clear(ctx), "ok")
	}},
	{"Contains", func(ctx context.Context, p lock.Pool, sel, _ byte) string {
		return outcome2(p.Contains(ctx, pick(fuzzKeys, sel)))
	}},
	{"Len", func(ctx context.Context, p lock.Pool, _, _ byte) string {
		return outcome2(p.Len(ctx))
	}},
	{"HealthCheck", func(ctx context.Context, p lock.Pool, _, _ byte) string {
		locked, free, err := p.HealthCheck(ctx)
		return outcome(err, locked, " ", free)
	}},
	{"LockStatus", func(ctx context.Context, p lock.Pool, sel, _ byte) string {
		return outcome2(p.LockStatus(ctx, pick(fuzzItemLists, sel)))
	}},
	{"ItemLocks", func(ctx context.Context, p lock.Pool, _, _ byte) string {
		var rows []string
		for il, err := range p.ItemLocks(ctx) {
			if err != nil {
				return outcome(err)
			}
			rows = append(rows, fmt.Sprintf("%q=%v", il.Item, il.Locked))
		}
		slices.Sort(rows)
		return strings.Join(rows, ",")
	}},
	{"Items", func(ctx context.Context, p lock.Pool, _, _ byte) string {
		return sortedItems(ctx, p)
	}},
}

func outcome2[T any](v T, err error) string { return outcome(err, v) }
