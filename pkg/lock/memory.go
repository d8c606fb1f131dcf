package lock

import (
	"cmp"
	"container/heap"
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// MemoryConfig configures an in-memory lock or pool.
type MemoryConfig struct {
	// Epsilon is the tolerance of the conditional comparisons. Zero means
	// DefaultEpsilon (1e-6); otherwise it must be finite and positive.
	Epsilon float64
}

// MemoryLock is the in-memory backend of [Locker]: the spec's ThreadLock. It
// behaves exactly like [RedisLock] (same validation, results and TTL
// granularity, whole milliseconds), but its locks live in this process only,
// so it coordinates goroutines, not processes or hosts. Each MemoryLock is a
// store of its own: goroutines that must see each other's locks share one.
// Create it with [NewMemoryLock]; the zero value is not usable. It is safe for
// concurrent use.
//
// Expiry follows the monotonic clock, so wall-clock jumps neither shorten nor
// extend a lease. Expired locks read as absent at once and are reclaimed by
// the next call that writes, at an amortised O(log n) each.
type MemoryLock struct {
	Ops
	mu      sync.Mutex
	epoch   time.Time            // monotonic origin of every deadline
	entries map[string]*memEntry // lock key -> entry, possibly expired
	expiry  expiryHeap           // entries that expire, soonest first
	eps     float64
}

var _ Locker = (*MemoryLock)(nil)

// memEntry is one lock key. Entries that never expire are not in the heap.
type memEntry struct {
	key   string
	value string
	// deadline is when the entry expires, as time since the lock's epoch;
	// meaningful only while index >= 0.
	deadline time.Duration
	// index is the entry's position in the expiry heap, or -1 when it never
	// expires.
	index int
}

// expiryHeap is a container/heap min-heap of entries by deadline that keeps
// every entry's index up to date.
type expiryHeap []*memEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].deadline < h[j].deadline }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *expiryHeap) Push(x any) {
	e := x.(*memEntry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *expiryHeap) Pop() any {
	old := *h
	n := len(old) - 1
	e := old[n]
	old[n] = nil // let the entry be collected
	e.index = -1
	*h = old[:n]
	return e
}

// NewMemoryLock returns an empty in-memory lock.
func NewMemoryLock(cfg MemoryConfig) (*MemoryLock, error) {
	l, err := newMemoryLock(cfg)
	if err != nil {
		return nil, fmt.Errorf("lock: NewMemoryLock: %w", err)
	}
	return l, nil
}

func newMemoryLock(cfg MemoryConfig) (*MemoryLock, error) {
	eps := cmp.Or(cfg.Epsilon, DefaultEpsilon)
	if err := checkEpsilon(eps); err != nil {
		return nil, err
	}
	l := &MemoryLock{
		epoch:   time.Now(),
		entries: make(map[string]*memEntry),
		eps:     eps,
	}
	l.Ops = Ops{l}
	return l, nil
}

// The helpers below expect l.mu to be held.

// now is the monotonic time since the lock's epoch.
func (l *MemoryLock) now() time.Duration { return time.Since(l.epoch) }

// reap deletes every entry whose deadline has passed. Writers call it first.
func (l *MemoryLock) reap(now time.Duration) {
	for len(l.expiry) > 0 && l.expiry[0].deadline <= now {
		e := heap.Pop(&l.expiry).(*memEntry)
		delete(l.entries, e.key)
	}
}

// live returns the key's entry, or nil when it is absent or expired. It
// never adds to the map.
func (l *MemoryLock) live(key string, now time.Duration) *memEntry {
	e := l.entries[key]
	if e == nil || (e.index >= 0 && e.deadline <= now) {
		return nil
	}
	return e
}

// set stores value under key with ms milliseconds to live (-1: forever).
func (l *MemoryLock) set(key, value string, ms int64, now time.Duration) {
	e := l.entries[key]
	if e == nil {
		e = &memEntry{key: key, index: -1}
		l.entries[key] = e
	}
	e.value = value
	l.expire(e, ms, now)
}

// expire gives e ms milliseconds to live from now, or no expiry for -1.
func (l *MemoryLock) expire(e *memEntry, ms int64, now time.Duration) {
	if ms < 0 {
		if e.index >= 0 {
			heap.Remove(&l.expiry, e.index)
		}
		return
	}
	// checkTTL bounds ms*1ms by the caller's Duration; only the sum with
	// now can overflow, and then the lock lives for ~292 years.
	d := time.Duration(ms) * time.Millisecond
	if now > math.MaxInt64-d {
		e.deadline = math.MaxInt64
	} else {
		e.deadline = now + d
	}
	if e.index >= 0 {
		heap.Fix(&l.expiry, e.index)
	} else {
		heap.Push(&l.expiry, e)
	}
}

// remove deletes e from the map and the heap.
func (l *MemoryLock) remove(e *memEntry) {
	if e.index >= 0 {
		heap.Remove(&l.expiry, e.index)
	}
	delete(l.entries, e.key)
}

// remaining is a live entry's TTL as PTTL reports it: whole milliseconds,
// rounded down, or NoExpiry.
func remaining(e *memEntry, now time.Duration) time.Duration {
	if e.index < 0 {
		return NoExpiry
	}
	return (e.deadline - now).Truncate(time.Millisecond)
}

// ctxErr reports a done context the way a Redis call would: after the input
// was validated and before anything is read or written.
func ctxErr(ctx context.Context, op, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("lock: %s %q: %w", op, key, err)
	}
	return nil
}

// Update implements [Locker].
func (l *MemoryLock) Update(ctx context.Context, key, value string, ttl time.Duration) error {
	const op = "Update"
	ms, err := checkKeyValueTTL(op, key, value, ttl)
	if err != nil {
		return err
	}
	_, err = l.write(ctx, op, key, func(_ *memEntry, now time.Duration) bool {
		l.set(key, value, ms, now)
		return true
	})
	return err
}

// Lock implements [Locker].
func (l *MemoryLock) Lock(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	const op = "Lock"
	ms, err := checkKeyValueTTL(op, key, value, ttl)
	if err != nil {
		return false, err
	}
	return l.write(ctx, op, key, func(e *memEntry, now time.Duration) bool {
		if e != nil {
			return false
		}
		l.set(key, value, ms, now)
		return true
	})
}

// LockValue implements [Locker].
func (l *MemoryLock) LockValue(ctx context.Context, key string) (string, bool, error) {
	const op = "LockValue"
	if err := checkKey(op, key); err != nil {
		return "", false, err
	}
	if err := ctxErr(ctx, op, key); err != nil {
		return "", false, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.live(key, l.now())
	if e == nil {
		return "", false, nil
	}
	return e.value, true, nil
}

// RLock implements [Locker].
func (l *MemoryLock) RLock(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	const op = "RLock"
	ms, err := checkKeyValueTTL(op, key, value, ttl)
	if err != nil {
		return false, err
	}
	return l.write(ctx, op, key, func(e *memEntry, now time.Duration) bool {
		if e != nil && e.value != value {
			return false
		}
		l.set(key, value, ms, now)
		return true
	})
}

// Unlock implements [Locker].
func (l *MemoryLock) Unlock(ctx context.Context, key string) (bool, error) {
	const op = "Unlock"
	if err := checkKey(op, key); err != nil {
		return false, err
	}
	return l.write(ctx, op, key, func(e *memEntry, _ time.Duration) bool {
		if e == nil {
			return false
		}
		l.remove(e)
		return true
	})
}

// Refresh implements [Locker].
func (l *MemoryLock) Refresh(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	const op = "Refresh"
	ms, err := checkKeyValueTTL(op, key, value, ttl)
	if err != nil {
		return false, err
	}
	return l.ifHolds(ctx, op, key, value, func(e *memEntry, now time.Duration) { l.expire(e, ms, now) })
}

// Release implements [Locker].
func (l *MemoryLock) Release(ctx context.Context, key, value string) (bool, error) {
	const op = "Release"
	if err := checkKey(op, key); err != nil {
		return false, err
	}
	if err := checkValue(op, key, value); err != nil {
		return false, err
	}
	return l.ifHolds(ctx, op, key, value, func(e *memEntry, _ time.Duration) { l.remove(e) })
}

// Replace implements [Locker].
func (l *MemoryLock) Replace(ctx context.Context, key, oldValue, newValue string, ttl time.Duration) (bool, error) {
	const op = "Replace"
	ms, err := checkReplace(op, key, oldValue, newValue, ttl)
	if err != nil {
		return false, err
	}
	return l.ifHolds(ctx, op, key, oldValue, func(_ *memEntry, now time.Duration) { l.set(key, newValue, ms, now) })
}

// ifHolds runs act under the lock when key is live and holds value, and
// reports whether it did: the shape of refresh.lua, release.lua and
// replace.lua. Input must already be validated.
func (l *MemoryLock) ifHolds(ctx context.Context, op, key, value string, act func(e *memEntry, now time.Duration)) (bool, error) {
	return l.write(ctx, op, key, func(e *memEntry, now time.Duration) bool {
		if e == nil || e.value != value {
			return false
		}
		act(e, now)
		return true
	})
}

// write is one writing step on key, atomic as a Redis command or script:
// after ctx is checked, under the lock and with expired entries reaped, fn
// gets key's live entry (nil when absent or expired) and the time, and
// reports what the step reports. Input must already be validated.
func (l *MemoryLock) write(ctx context.Context, op, key string, fn func(e *memEntry, now time.Duration) bool) (bool, error) {
	if err := ctxErr(ctx, op, key); err != nil {
		return false, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.reap(now)
	return fn(l.live(key, now), now), nil
}

// TTL implements [Locker]. Like Redis's PTTL it rounds down to whole
// milliseconds, so a lock in its last millisecond reports 0 and true.
func (l *MemoryLock) TTL(ctx context.Context, key string) (time.Duration, bool, error) {
	const op = "TTL"
	if err := checkKey(op, key); err != nil {
		return 0, false, err
	}
	if err := ctxErr(ctx, op, key); err != nil {
		return 0, false, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e := l.live(key, now)
	if e == nil {
		return 0, false, nil
	}
	return remaining(e, now), true, nil
}

// SetIf implements [Locker].
func (l *MemoryLock) SetIf(ctx context.Context, key string, c Comparison, cmp, set float64, ttl time.Duration) (bool, error) {
	a, err := checkSetIf(key, c, cmp, set, ttl)
	if err != nil {
		return false, err
	}
	return l.cond(ctx, key, a)
}

// DelIf implements [Locker].
func (l *MemoryLock) DelIf(ctx context.Context, key string, c Comparison, cmp float64) (bool, error) {
	a, err := checkDelIf(key, c, cmp)
	if err != nil {
		return false, err
	}
	return l.cond(ctx, key, a)
}

// cond is scripts/cond.lua: when the key is absent or "cmp c current"
// holds, it deletes the key (a.del) or sets it to a.set with a.ms to live.
func (l *MemoryLock) cond(ctx context.Context, key string, a condArgs) (bool, error) {
	notNumber := false
	ok, err := l.write(ctx, a.op, key, func(e *memEntry, now time.Duration) bool {
		if e != nil {
			cur, ok := parseNumber(e.value)
			if !ok {
				notNumber = true
				return false
			}
			if !a.c.holds(a.cmp, cur, l.eps) {
				return false
			}
		}
		switch {
		case !a.del:
			l.set(key, a.set, a.ms, now)
		case e != nil:
			l.remove(e)
		}
		return true
	})
	if notNumber {
		return false, fmt.Errorf("lock: %s %q: %w: the key holds a non-number", a.op, key, ErrNotNumeric)
	}
	return ok, err
}
