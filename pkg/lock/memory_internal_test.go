package lock

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// White-box tests of the in-memory backend's own machinery: reclaiming,
// the expiry heap, allocation-free reads and locking. The behaviour both
// backends share is tested by the conformance suite.

func newTestMemoryLock(t *testing.T) *MemoryLock {
	t.Helper()
	l, err := NewMemoryLock(MemoryConfig{})
	if err != nil {
		t.Fatalf("NewMemoryLock: %v", err)
	}
	return l
}

func newTestMemoryPool(t *testing.T) *MemoryLockPool {
	t.Helper()
	p, err := NewMemoryLockPool(MemoryConfig{})
	if err != nil {
		t.Fatalf("NewMemoryLockPool: %v", err)
	}
	return p
}

// sizes returns the number of entries in the map and in the heap.
func (l *MemoryLock) sizes() (entries, heaped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries), len(l.expiry)
}

// checkMemoryInvariants checks that the heap is a min-heap of exactly the
// map's expiring entries, each knowing its own position.
func checkMemoryInvariants(t *testing.T, l *MemoryLock) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, e := range l.expiry {
		if e.index != i {
			t.Fatalf("heap[%d] (%q) has index %d", i, e.key, e.index)
		}
		if l.entries[e.key] != e {
			t.Fatalf("heap[%d] (%q) is not the map's entry for its key", i, e.key)
		}
		if parent := (i - 1) / 2; i > 0 && l.expiry[parent].deadline > e.deadline {
			t.Fatalf("heap[%d] deadline %v precedes its parent heap[%d] deadline %v", i, e.deadline, parent, l.expiry[parent].deadline)
		}
	}
	heaped := 0
	for k, e := range l.entries {
		switch {
		case e.key != k:
			t.Fatalf("entry under %q names key %q", k, e.key)
		case e.index == -1:
			// never expires
		case e.index < 0 || e.index >= len(l.expiry) || l.expiry[e.index] != e:
			t.Fatalf("entry %q has index %d, not its heap position (heap len %d)", k, e.index, len(l.expiry))
		default:
			heaped++
		}
	}
	if heaped != len(l.expiry) {
		t.Fatalf("%d map entries expire but the heap holds %d", heaped, len(l.expiry))
	}
}

// mustOK fails the test unless the call it is given reports true, nil.
func mustOK(t *testing.T, what string) func(bool, error) {
	t.Helper()
	return func(ok bool, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !ok {
			t.Fatalf("%s = false; want true", what)
		}
	}
}

func TestMemoryConfig(t *testing.T) {
	for _, eps := range []float64{-1e-9, math.NaN(), math.Inf(1), math.Inf(-1)} {
		if _, err := NewMemoryLock(MemoryConfig{Epsilon: eps}); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("NewMemoryLock(Epsilon %v) = %v; want ErrInvalidConfig", eps, err)
		}
		if _, err := NewMemoryLockPool(MemoryConfig{Epsilon: eps}); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("NewMemoryLockPool(Epsilon %v) = %v; want ErrInvalidConfig", eps, err)
		}
	}
	for cfg, want := range map[float64]float64{0: DefaultEpsilon, 0.25: 0.25} {
		l, err := NewMemoryLock(MemoryConfig{Epsilon: cfg})
		if err != nil {
			t.Fatalf("NewMemoryLock(Epsilon %v): %v", cfg, err)
		}
		p, err := NewMemoryLockPool(MemoryConfig{Epsilon: cfg})
		if err != nil {
			t.Fatalf("NewMemoryLockPool(Epsilon %v): %v", cfg, err)
		}
		if l.eps != want || p.eps != want {
			t.Errorf("Epsilon %v gave eps %v (lock) and %v (pool); want %v", cfg, l.eps, p.eps, want)
		}
	}
}

func TestMemoryReclaimsExpiredEntries(t *testing.T) {
	p, ctx := newTestMemoryPool(t), context.Background()
	// Long enough for the 100 writes and the refreshes below on a loaded
	// machine (20ms was not, under make test); the sleeps are 3 TTLs.
	const ttl = 250 * time.Millisecond
	for i := range 100 {
		key := "short-" + strconv.Itoa(i)
		switch i % 4 { // every writer that sets a TTL
		case 0:
			mustOK(t, "Lock")(p.Lock(ctx, key, "v", ttl))
		case 1:
			mustOK(t, "RLock")(p.RLock(ctx, key, "v", ttl))
		case 2:
			if err := p.Update(ctx, key, "1", ttl); err != nil {
				t.Fatal(err)
			}
		case 3:
			mustOK(t, "SetGT")(p.SetGT(ctx, key, 1, 2, ttl))
		}
	}
	mustOK(t, "Lock(forever)")(p.Lock(ctx, "forever", "v", NoExpiry))
	mustOK(t, "Lock(long)")(p.Lock(ctx, "long", "v", time.Minute))
	mustOK(t, "Refresh(short-0 to long)")(p.Refresh(ctx, "short-0", "v", time.Minute))
	mustOK(t, "Refresh(short-4 to forever)")(p.Refresh(ctx, "short-4", "v", NoExpiry))
	if n, h := p.sizes(); n != 102 || h != 100 {
		t.Fatalf("before expiry: %d entries, %d in heap; want 102, 100", n, h)
	}
	checkMemoryInvariants(t, p.MemoryLock)

	time.Sleep(3 * ttl)
	if ok, err := p.IsLocked(ctx, "short-9"); ok || err != nil {
		t.Fatalf("IsLocked(expired) = %v, %v; want false, nil", ok, err)
	}
	// Any write reclaims every expired entry, whichever key it touches;
	// a pool write does too.
	if err := p.Extend(ctx, []string{"member"}); err != nil {
		t.Fatal(err)
	}
	if n, h := p.sizes(); n != 4 || h != 2 {
		t.Fatalf("after expiry and a write: %d entries, %d in heap; want 4 (forever, long, short-0, short-4), 2", n, h)
	}
	checkMemoryInvariants(t, p.MemoryLock)
	for _, key := range []string{"forever", "long", "short-0", "short-4"} {
		if _, ok := p.entries[key]; !ok {
			t.Errorf("live entry %q was reclaimed", key)
		}
	}

	// The same through a lock-only write.
	mustOK(t, "Lock(short again)")(p.Lock(ctx, "again", "v", ttl))
	time.Sleep(3 * ttl)
	if ok, err := p.Unlock(ctx, "unrelated"); ok || err != nil {
		t.Fatalf("Unlock(unrelated) = %v, %v; want false, nil", ok, err)
	}
	if n, h := p.sizes(); n != 4 || h != 2 {
		t.Fatalf("after the second expiry: %d entries, %d in heap; want 4, 2", n, h)
	}
	checkMemoryInvariants(t, p.MemoryLock)
}

func TestMemoryReadsDoNotAllocate(t *testing.T) {
	p, ctx := newTestMemoryPool(t), context.Background()
	for i := range 500 {
		key := "absent-" + strconv.Itoa(i)
		if ok, err := p.IsLocked(ctx, key); ok || err != nil {
			t.Fatalf("IsLocked = %v, %v", ok, err)
		}
		if v, ok, err := p.LockValue(ctx, key); v != "" || ok || err != nil {
			t.Fatalf("LockValue = %q, %v, %v", v, ok, err)
		}
		if d, ok, err := p.TTL(ctx, key); d != 0 || ok || err != nil {
			t.Fatalf("TTL = %v, %v, %v", d, ok, err)
		}
		if s, err := p.KeyStatus(ctx, key, time.Second); s != Free || err != nil {
			t.Fatalf("KeyStatus = %v, %v", s, err)
		}
		// Writers that do nothing to an absent key must not create it.
		for name, f := range map[string]func() (bool, error){
			"Refresh": func() (bool, error) { return p.Refresh(ctx, key, "v", time.Minute) },
			"Release": func() (bool, error) { return p.Release(ctx, key, "v") },
			"Unlock":  func() (bool, error) { return p.Unlock(ctx, key) },
			"DelEQ":   func() (bool, error) { return p.DelEQ(ctx, key, 1) },
		} {
			if _, err := f(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if ok, err := p.Contains(ctx, key); ok || err != nil {
			t.Fatalf("Contains = %v, %v", ok, err)
		}
		if st, err := p.LockStatus(ctx, []string{key, key + "x"}); len(st) != 2 || st[0] || st[1] || err != nil {
			t.Fatalf("LockStatus = %v, %v", st, err)
		}
	}
	if n, h := p.sizes(); n != 0 || h != 0 {
		t.Fatalf("after reads of absent keys: %d entries, %d in heap; want 0, 0", n, h)
	}

	// Reading the lock state of members does not create locks either.
	if err := p.Extend(ctx, []string{"m1", "m2", "m3"}); err != nil {
		t.Fatal(err)
	}
	if locked, free, err := p.HealthCheck(ctx); locked != 0 || free != 3 || err != nil {
		t.Fatalf("HealthCheck = %d, %d, %v", locked, free, err)
	}
	for il, err := range p.ItemLocks(ctx) {
		if err != nil || il.Locked {
			t.Fatalf("ItemLocks yielded %+v, %v", il, err)
		}
	}
	if n, _ := p.sizes(); n != 0 {
		t.Fatalf("after pool reads: %d entries; want 0", n)
	}

	// A read of an expired key treats it as absent and adds nothing.
	mustOK(t, "Lock")(p.Lock(ctx, "k", "v", time.Millisecond))
	time.Sleep(10 * time.Millisecond)
	for range 100 {
		if v, ok, err := p.LockValue(ctx, "k"); ok || err != nil {
			t.Fatalf("LockValue(expired) = %q, %v, %v", v, ok, err)
		}
		if d, ok, err := p.TTL(ctx, "k"); ok || err != nil {
			t.Fatalf("TTL(expired) = %v, %v, %v", d, ok, err)
		}
	}
	if n, _ := p.sizes(); n > 1 {
		t.Fatalf("reads of an expired key grew the map to %d entries", n)
	}
}

func TestMemoryHeapInvariantsUnderRandomOps(t *testing.T) {
	l, ctx := newTestMemoryLock(t), context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	ttls := []time.Duration{NoExpiry, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
		time.Second, time.Minute, time.Hour, 1500 * time.Microsecond, 24 * time.Hour}
	values := []string{"a", "b", "1", "2.5"}
	for step := range 5000 {
		key := "k" + strconv.Itoa(rng.IntN(64))
		val := values[rng.IntN(len(values))]
		ttl := ttls[rng.IntN(len(ttls))]
		var err error
		switch rng.IntN(9) {
		case 0, 1:
			err = l.Update(ctx, key, val, ttl)
		case 2, 3:
			_, err = l.Refresh(ctx, key, val, ttl)
		case 4:
			_, err = l.Unlock(ctx, key)
		case 5:
			_, err = l.Lock(ctx, key, val, ttl)
		case 6:
			_, err = l.RLock(ctx, key, val, ttl)
		case 7:
			_, err = l.Release(ctx, key, val)
		case 8:
			_, err = l.SetLE(ctx, key, float64(rng.IntN(4)), float64(rng.IntN(4)), ttl)
			if errors.Is(err, ErrNotNumeric) {
				err = nil
			}
		}
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		checkMemoryInvariants(t, l)
	}

	// After the short TTLs pass, one write leaves only live entries.
	time.Sleep(10 * time.Millisecond)
	if err := l.Update(ctx, "final", "v", time.Hour); err != nil {
		t.Fatal(err)
	}
	checkMemoryInvariants(t, l)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for k, e := range l.entries {
		if l.live(k, now) == nil {
			t.Errorf("expired entry %q (deadline %v, now %v) survived a write", k, e.deadline, now)
		}
	}
}

func TestMemoryTTLWholeMilliseconds(t *testing.T) {
	l, ctx := newTestMemoryLock(t), context.Background()
	for _, ttl := range []time.Duration{time.Millisecond + 999*time.Microsecond, 10*time.Second + 1500*time.Microsecond, time.Duration(math.MaxInt64)} {
		if err := l.Update(ctx, "k", "v", ttl); err != nil {
			t.Fatal(err)
		}
		d, ok, err := l.TTL(ctx, "k")
		if err != nil || !ok || d%time.Millisecond != 0 || d > ttl.Truncate(time.Millisecond) || d < 0 {
			t.Errorf("TTL after Update(%v) = %v, %v, %v; want whole ms within [0, %v]", ttl, d, ok, err, ttl.Truncate(time.Millisecond))
		}
	}
}

func TestMemoryNotNumericErrorText(t *testing.T) {
	l, ctx := newTestMemoryLock(t), context.Background()
	for _, raw := range []string{"abc", " 1", "0x10", "inf", "nan", "1e", ""} {
		if err := l.Update(ctx, "k", raw, time.Minute); err != nil {
			t.Fatal(err)
		}
		ok, err := l.SetGT(ctx, "k", 1, 2, time.Minute)
		want := `lock: SetGT "k": lock: value is not a number: the key holds a non-number`
		if ok || !errors.Is(err, ErrNotNumeric) || err.Error() != want {
			t.Errorf("SetGT on %q = %v, %v; want false and %q", raw, ok, err, want)
		}
		if _, err := l.DelNE(ctx, "k", 1); !errors.Is(err, ErrNotNumeric) {
			t.Errorf("DelNE on %q = %v; want ErrNotNumeric", raw, err)
		}
		if v, _, _ := l.LockValue(ctx, "k"); v != raw {
			t.Errorf("after refused conditional ops the key holds %q; want %q", v, raw)
		}
	}
}

func TestMemoryContextDone(t *testing.T) {
	p := newTestMemoryPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Validation comes first, as in the Redis backend.
	if _, err := p.Lock(ctx, "", "v", time.Minute); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("Lock(empty key, done ctx) = %v; want ErrInvalidKey", err)
	}
	if _, err := p.Lock(ctx, "k", "v", time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock(done ctx) = %v; want context.Canceled", err)
	}
	if err := p.Extend(ctx, []string{"a"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Extend(done ctx) = %v; want context.Canceled", err)
	}
	if err := p.Extend(ctx, nil); err != nil {
		t.Fatalf("Extend(nil, done ctx) = %v; want nil (nothing to do)", err)
	}
	if n, h := p.sizes(); n != 0 || h != 0 || len(p.members) != 0 {
		t.Fatalf("calls with a done context wrote something")
	}

	// Items notices a cancellation made during the iteration.
	items := make([]string, 5000)
	for i := range items {
		items[i] = "item-" + strconv.Itoa(i)
	}
	if err := p.Assign(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	yielded, errs := 0, 0
	for _, err := range p.Items(ctx) {
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Items yielded %v; want context.Canceled", err)
			}
			errs++
			continue
		}
		if yielded++; yielded == 1 {
			cancel()
		}
	}
	if errs != 1 || yielded > memCtxEvery {
		t.Fatalf("Items after cancel: %d items, %d errors; want at most %d items and 1 error", yielded, errs, memCtxEvery)
	}
}

// TestMemoryIterationsMayCallThePool checks Items and ItemLocks yield
// outside the mutex: a loop body that calls the pool must not deadlock.
func TestMemoryIterationsMayCallThePool(t *testing.T) {
	p, ctx := newTestMemoryPool(t), context.Background()
	if err := p.Extend(ctx, []string{"a", "b", "c"}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		n := 0
		for it, err := range p.Items(ctx) {
			if err != nil {
				done <- err
				return
			}
			if _, err := p.Lock(ctx, it, "v", time.Minute); err != nil {
				done <- err
				return
			}
			if err := p.Extend(ctx, []string{it + "-new"}); err != nil {
				done <- err
				return
			}
			n++
		}
		for il, err := range p.ItemLocks(ctx) {
			if err != nil {
				done <- err
				return
			}
			if err := p.Shrink(ctx, []string{il.Item}); err != nil {
				done <- err
				return
			}
		}
		if n != 3 {
			done <- fmt.Errorf("Items yielded %d items from a snapshot of 3", n)
			return
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("calling the pool from inside an iteration deadlocked")
	}
	if n, _ := p.Len(ctx); n != 0 {
		t.Fatalf("Len = %d after shrinking every member; want 0", n)
	}
}

func TestMemoryConcurrentUse(t *testing.T) {
	p, ctx := newTestMemoryPool(t), context.Background()
	const workers, rounds = 32, 400
	var (
		inside   atomic.Int32
		acquired atomic.Int64
		shared   int64 // guarded by the "mutex" lock itself
		wg       sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			owner := "worker-" + strconv.Itoa(w)
			fail := func(what string, err error) {
				if err != nil {
					t.Errorf("worker %d: %s: %v", w, what, err)
				}
			}
			for range rounds {
				// Mutual exclusion: only one worker at a time gets here, and
				// the race detector sees the lock order the writes to shared.
				ok, err := p.Lock(ctx, "mutex", owner, time.Minute)
				fail("Lock(mutex)", err)
				if ok {
					if n := inside.Add(1); n != 1 {
						t.Errorf("%d holders of one lock", n)
					}
					shared++
					acquired.Add(1)
					inside.Add(-1)
					released, err := p.Release(ctx, "mutex", owner)
					fail("Release(mutex)", err)
					if !released {
						t.Errorf("worker %d could not release its own lock", w)
					}
				}

				key := "k" + strconv.Itoa(rng.IntN(16))
				ttl := time.Duration(1+rng.IntN(5)) * time.Millisecond
				if rng.IntN(4) == 0 {
					ttl = NoExpiry
				}
				switch rng.IntN(12) {
				case 0:
					fail("Update", p.Update(ctx, key, owner, ttl))
				case 1:
					_, err = p.RLock(ctx, key, owner, ttl)
				case 2:
					_, err = p.Refresh(ctx, key, owner, ttl)
				case 3:
					_, err = p.Unlock(ctx, key)
				case 4:
					_, err = p.SetGE(ctx, key, float64(rng.IntN(8)), float64(rng.IntN(8)), ttl)
					if errors.Is(err, ErrNotNumeric) {
						err = nil
					}
				case 5:
					_, _, err = p.TTL(ctx, key)
				case 6:
					err = p.Extend(ctx, []string{key, "m" + strconv.Itoa(rng.IntN(32))})
				case 7:
					err = p.Shrink(ctx, []string{key})
				case 8:
					_, err = p.LockStatus(ctx, []string{key, "mutex"})
				case 9:
					_, _, err = p.HealthCheck(ctx)
				case 10:
					for _, e := range p.ItemLocks(ctx) {
						if e != nil {
							err = e
						}
					}
				case 11:
					if rng.IntN(20) == 0 {
						err = p.Assign(ctx, []string{key})
					} else {
						for _, e := range p.Items(ctx) {
							if e != nil {
								err = e
							}
						}
					}
				}
				fail("random op", err)
			}
		})
	}
	wg.Wait()
	if shared != acquired.Load() || shared == 0 {
		t.Fatalf("shared counter %d after %d acquisitions", shared, acquired.Load())
	}
	checkMemoryInvariants(t, p.MemoryLock)
}
