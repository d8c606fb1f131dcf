package lock_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockpool/lockpool/pkg/lock"
)

type lockBehaviour struct {
	name string
	fn   func(t *testing.T, newLock func(options) lock.Ops)
}

// short is a TTL that real tests wait out; expiryWait comfortably exceeds
// it. short is long enough that the call after the one setting it still
// finds the key on a loaded 2-core machine (60ms was not, under make test).
const (
	short      = 300 * time.Millisecond
	expiryWait = 600 * time.Millisecond
	long       = time.Minute
)

var lockBehaviours = []lockBehaviour{
	{"lock-free-key", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{}), context.Background()
		wantBool(t, "Lock(free)", true)(l.Lock(ctx, "k", "owner-a", long))
		wantValue(t, l, "k", "owner-a", true)
		wantBool(t, "IsLocked", true)(l.IsLocked(ctx, "k"))
		wantBool(t, "Lock(held by a)", false)(l.Lock(ctx, "k", "owner-b", long))
		wantBool(t, "Lock(held by a, same value)", false)(l.Lock(ctx, "k", "owner-a", long))
		wantValue(t, l, "k", "owner-a", true)
		wantBool(t, "IsLocked(other key)", false)(l.IsLocked(ctx, "other"))
		wantValue(t, l, "other", "", false)
	}},
	{"empty-value-is-a-value", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{}), context.Background()
		wantBool(t, "Lock", true)(l.Lock(ctx, "k", "", long))
		wantValue(t, l, "k", "", true)
		wantBool(t, "RLock(same empty value)", true)(l.RLock(ctx, "k", "", long))
		wantBool(t, "Release(empty value)", true)(l.Release(ctx, "k", ""))
		wantValue(t, l, "k", "", false)
	}},
	{"lock-expires", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{}), context.Background()
		wantBool(t, "Lock", true)(l.Lock(ctx, "k", "a", short))
		time.Sleep(expiryWait)
		wantBool(t, "IsLocked after TTL", false)(l.IsLocked(ctx, "k"))
		wantValue(t, l, "k", "", false)
		wantStatus(t, l, "k", long, lock.Free)
		wantBool(t, "Lock after expiry", true)(l.Lock(ctx, "k", "b", long))
		wantValue(t, l, "k", "b", true)
	}},
	{"update-is-forceful", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{}), context.Background()
		must(t, l.Update(ctx, "k", "a", long))
		wantValue(t, l, "k", "a", true)
		must(t, l.Update(ctx, "k", "b", 10*long))
		wantValue(t, l, "k", "b", true)
		wantTTL(t, l, "k", 9*long, 10*long)
		must(t, l.Update(ctx, "k", "c", short))
		time.Sleep(expiryWait)
		wantValue(t, l, "k", "", false)
	}},
	{"rlock-is-reentrant-and-extends", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{}), context.Background()
		wantBool(t, "RLock(free)", true)(l.RLock(ctx, "k", "a", 200*time.Millisecond))
		wantBool(t, "RLock(same value)", true)(l.RLock(ctx, "k", "a", long))
		wantTTL(t, l, "k", long-5*time.Second, long)
		wantBool(t, "RLock(same value) again", true)(l.RLock(ctx, "k", "a", 2*long))
		wantTTL(t, l, "k", 2*long-5*time.Second, 2*long)
		wantBool(t, "RLock(other value)", false)(l.RLock(ctx, "k", "b", 10*long))
		wantValue(t, l, "k", "a", true)
		wantTTL(t, l, "k", 2*long-5*time.Second, 2*long)
		// One Release ends it however often it was re-entered.
		wantBool(t, "Release", true)(l.Release(ctx, "k", "a"))
		wantValue(t, l, "k", "", false)
	}},
	{"rlock-after-expiry", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{}), context.Background()
		wantBool(t, "Lock", true)(l.Lock(ctx, "k", "a", short))
		time.Sleep(expiryWait)
		wantBool(t, "RLock(expired, other value)", true)(l.RLock(ctx, "k", "b", long))
		wantValue(t, l, "k", "b", true)
	}},
	{"unlock-is-forceful", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{}), context.Background()
		wantBool(t, "Unlock(free)", false)(l.Unlock(ctx, "k"))
		wantBool(t, "Lock", true)(l.Lock(ctx, "k", "a", long))
		wantBool(t, "Unlock(held by anyone)", true)(l.Unlock(ctx, "k"))
		wantValue(t, l, "k", "", false)
		wantBool(t, "Unlock again", false)(l.Unlock(ctx, "k"))
		wantBool(t, "Lock after Unlock", true)(l.Lock(ctx, "k", "b", long))
	}},
	{"refresh-only-own", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{}), context.Background()
		wantBool(t, "Refresh(free)", false)(l.Refresh(ctx, "k", "a", long))
		wantValue(t, l, "k", "", false) // a failed refresh must not create the lock
		// 10s, not less: a loaded machine once took a second between these
		// two calls, and the lock expired before its refresh.
		wantBool(t, "Lock", true)(l.Lock(ctx, "k", "a", 10*time.Second))
		wantBool(t, "Refresh(own)", true)(l.Refresh(ctx, "k", "a", long))
		wantTTL(t, l, "k", long-5*time.Second, long)
		wantBool(t, "Refresh(other's)", false)(l.Refresh(ctx, "k", "b", 10*long))
		wantTTL(t, l, "k", long-5*time.Second, long)
		wantValue(t, l, "k", "a", true)
		wantBool(t, "Refresh(own, NoExpiry)", true)(l.Refresh(ctx, "k", "a", lock.NoExpiry))
		wantTTL(t, l, "k", lock.NoExpiry, lock.NoExpiry)
		wantBool(t, "Refresh(own, short)", true)(l.Refresh(ctx, "k", "a", short))
		time.Sleep(expiryWait)
		wantBool(t, "Refresh(expired)", false)(l.Refresh(ctx, "k", "a", long))
		wantValue(t, l, "k", "", false)
	}},
	{"release-only-own", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{}), context.Background()
		wantBool(t, "Release(free)", false)(l.Release(ctx, "k", "a"))
		wantBool(t, "Lock", true)(l.Lock(ctx, "k", "a", long))
		wantBool(t, "Release(other's)", false)(l.Release(ctx, "k", "b"))
		wantValue(t, l, "k", "a", true)
		wantBool(t, "Release(own)", true)(l.Release(ctx, "k", "a"))
		wantValue(t, l, "k", "", false)
		wantBool(t, "Release(own) twice", false)(l.Release(ctx, "k", "a"))
	}},
	{"stalled-holder-cannot-clobber", func(t *testing.T, newLock func(options) lock.Ops) {
		// a holds, stalls past its TTL, b takes over: a's Refresh and
		// Release must fail and leave b's lock alone.
		l, ctx := newLock(options{}), context.Background()
		wantBool(t, "Lock(a)", true)(l.Lock(ctx, "k", "a", short))
		time.Sleep(expiryWait)
		wantBool(t, "Lock(b)", true)(l.Lock(ctx, "k", "b", long))
		wantBool(t, "Refresh(a)", false)(l.Refresh(ctx, "k", "a", long))
		wantBool(t, "Release(a)", false)(l.Release(ctx, "k", "a"))
		wantValue(t, l, "k", "b", true)
	}},
	{"ttl", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{}), context.Background()
		ttl, found, err := l.TTL(ctx, "k")
		must(t, err)
		if found || ttl != 0 {
			t.Fatalf("TTL(free) = %v, %v; want 0, false", ttl, found)
		}
		must(t, l.Update(ctx, "k", "a", 10*time.Second))
		wantTTL(t, l, "k", 9*time.Second, 10*time.Second)
		must(t, l.Update(ctx, "k", "a", 1500*time.Microsecond+10*time.Second))
		wantTTL(t, l, "k", 9*time.Second, 10*time.Second+time.Millisecond) // whole ms, rounded down
		must(t, l.Update(ctx, "k", "a", lock.NoExpiry))
		wantTTL(t, l, "k", lock.NoExpiry, lock.NoExpiry)
	}},
	{"key-status", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{}), context.Background()
		timeout := 2 * time.Minute
		wantStatus(t, l, "k", timeout, lock.Free)
		must(t, l.Update(ctx, "k", "a", time.Minute))
		wantStatus(t, l, "k", timeout, lock.Locked)
		must(t, l.Update(ctx, "k", "a", timeout))
		wantStatus(t, l, "k", timeout, lock.Locked) // equal is not longer
		must(t, l.Update(ctx, "k", "a", 5*time.Minute))
		wantStatus(t, l, "k", timeout, lock.Unavailable)
		must(t, l.Update(ctx, "k", "a", lock.NoExpiry))
		wantStatus(t, l, "k", timeout, lock.Error)
		wantBool(t, "Unlock", true)(l.Unlock(ctx, "k"))
		wantStatus(t, l, "k", timeout, lock.Free)
	}},
	{"no-expiry-is-explicit", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{}), context.Background()
		wantBool(t, "Lock(NoExpiry)", true)(l.Lock(ctx, "k", "a", lock.NoExpiry))
		wantTTL(t, l, "k", lock.NoExpiry, lock.NoExpiry)
		wantBool(t, "RLock(NoExpiry)", true)(l.RLock(ctx, "k", "a", lock.NoExpiry))
		wantTTL(t, l, "k", lock.NoExpiry, lock.NoExpiry)
		wantBool(t, "RLock(same value, 1 min)", true)(l.RLock(ctx, "k", "a", time.Minute))
		wantTTL(t, l, "k", 50*time.Second, time.Minute)
	}},
	{"keys-are-opaque", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{}), context.Background()
		for _, k := range []string{"a:b|c", "with space", "new\nline", "ünïcødé-ключ-鍵", "$(touch pwned)", "; rm -rf /", "'quote\"", strings.Repeat("x", lock.MaxKeyLen)} {
			wantBool(t, "Lock("+k+")", true)(l.Lock(ctx, k, "v:"+k, long))
			wantValue(t, l, k, "v:"+k, true)
		}
		wantValue(t, l, "a", "", false)
	}},
	{"bad-input-is-rejected-and-writes-nothing", testBadInput},
	{"conditional-ops", testConditional},
	{"conditional-ops-custom-epsilon", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{epsilon: 0.1}), context.Background()
		must(t, l.Update(ctx, "k", "1", long))
		wantBool(t, "SetEQ(1.05 ~ 1 with eps 0.1)", true)(l.SetEQ(ctx, "k", 1.05, 2, long))
		wantValue(t, l, "k", "2", true)
		wantBool(t, "SetNE(2.05 vs 2 with eps 0.1)", false)(l.SetNE(ctx, "k", 2.05, 3, long))
		wantBool(t, "DelGE(1.95 >= 2-0.1)", true)(l.DelGE(ctx, "k", 1.95))
		wantValue(t, l, "k", "", false)
	}},
	{"64-goroutines-race-one-wins", func(t *testing.T, newLock func(options) lock.Ops) {
		l, ctx := newLock(options{}), context.Background()
		n := raceWins(t, "Lock", 64, func(i int) (bool, error) {
			return l.Lock(ctx, "contended", string(rune('A'+i%26))+strings.Repeat("x", i), long)
		})
		if n != 1 {
			t.Fatalf("%d goroutines won the same lock; want exactly 1", n)
		}
	}},
}

func testBadInput(t *testing.T, newLock func(options) lock.Ops) {
	l, ctx := newLock(options{}), context.Background()
	// A lock that must survive every rejected call untouched.
	must(t, l.Update(ctx, "witness", "w", long))
	long1025 := strings.Repeat("k", lock.MaxKeyLen+1)
	for _, key := range []string{"", "nul\x00key", long1025} {
		calls := map[string]error{}
		calls["KeyStatus"] = second(l.KeyStatus(ctx, key, long))
		calls["Update"] = l.Update(ctx, key, "v", long)
		calls["Lock"] = second(l.Lock(ctx, key, "v", long))
		calls["IsLocked"] = second(l.IsLocked(ctx, key))
		_, _, calls["LockValue"] = l.LockValue(ctx, key)
		calls["RLock"] = second(l.RLock(ctx, key, "v", long))
		calls["Unlock"] = second(l.Unlock(ctx, key))
		calls["Refresh"] = second(l.Refresh(ctx, key, "v", long))
		calls["Release"] = second(l.Release(ctx, key, "v"))
		_, _, calls["TTL"] = l.TTL(ctx, key)
		calls["SetGT"] = second(l.SetGT(ctx, key, 1, 1, long))
		calls["DelNE"] = second(l.DelNE(ctx, key, 1))
		for name, err := range calls {
			if !errors.Is(err, lock.ErrInvalidKey) {
				t.Errorf("%s(key of %d bytes) = %v; want ErrInvalidKey", name, len(key), err)
			}
		}
	}
	for _, ttl := range []time.Duration{0, -time.Second, time.Millisecond - 1, -2} {
		calls := map[string]error{
			"Update":  l.Update(ctx, "k", "v", ttl),
			"Lock":    second(l.Lock(ctx, "k", "v", ttl)),
			"RLock":   second(l.RLock(ctx, "k", "v", ttl)),
			"Refresh": second(l.Refresh(ctx, "witness", "w", ttl)),
			"SetGT":   second(l.SetGT(ctx, "k", 1, 1, ttl)),
		}
		for name, err := range calls {
			if !errors.Is(err, lock.ErrInvalidTTL) {
				t.Errorf("%s(ttl %v) = %v; want ErrInvalidTTL", name, ttl, err)
			}
		}
	}
	for _, c := range []lock.Comparison{"", "=", ">>", "gt"} {
		calls := map[string]error{
			"SetIf": second(l.SetIf(ctx, "witness", c, 1, 1, long)),
			"DelIf": second(l.DelIf(ctx, "witness", c, 1)),
		}
		for name, err := range calls {
			if !errors.Is(err, lock.ErrInvalidValue) {
				t.Errorf("%s(comparison %q) = %v; want ErrInvalidValue", name, c, err)
			}
		}
	}
	for _, timeout := range []time.Duration{0, -time.Second, lock.NoExpiry} {
		if _, err := l.KeyStatus(ctx, "witness", timeout); !errors.Is(err, lock.ErrInvalidTTL) {
			t.Errorf("KeyStatus(timeout %v) = %v; want ErrInvalidTTL", timeout, err)
		}
	}
	big := strings.Repeat("v", lock.MaxValueLen+1)
	for name, err := range map[string]error{
		"Update":  l.Update(ctx, "k", big, long),
		"Lock":    second(l.Lock(ctx, "k", big, long)),
		"RLock":   second(l.RLock(ctx, "k", big, long)),
		"Refresh": second(l.Refresh(ctx, "k", big, long)),
		"Release": second(l.Release(ctx, "k", big)),
	} {
		if !errors.Is(err, lock.ErrInvalidValue) {
			t.Errorf("%s(value of %d bytes) = %v; want ErrInvalidValue", name, len(big), err)
		}
	}
	wantValue(t, l, "k", "", false)
	wantValue(t, l, "witness", "w", true)
	wantTTL(t, l, "witness", long-5*time.Second, long)
}

func second[T any](_ T, err error) error { return err }

// raceWins calls try(0) to try(n-1) from n goroutines released at once
// and returns how many of them won (true). An error fails the test.
func raceWins(t *testing.T, what string, n int, try func(i int) (bool, error)) int32 {
	var wins atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			ok, err := try(i)
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
			if ok {
				wins.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	return wins.Load()
}

func wantBool(t *testing.T, what string, want bool) func(bool, error) {
	t.Helper()
	return func(got bool, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: unexpected error: %v", what, err)
		}
		if got != want {
			t.Fatalf("%s = %v; want %v", what, got, want)
		}
	}
}

func wantValue(t *testing.T, l lock.Locker, key, want string, wantFound bool) {
	t.Helper()
	got, found, err := l.LockValue(context.Background(), key)
	if err != nil {
		t.Fatalf("LockValue(%q): %v", key, err)
	}
	if got != want || found != wantFound {
		t.Fatalf("LockValue(%q) = %q, %v; want %q, %v", key, got, found, want, wantFound)
	}
}

// wantTTL checks the remaining TTL lies in [lo, hi]. Both NoExpiry asks for a
// lock that never expires.
func wantTTL(t *testing.T, l lock.Locker, key string, lo, hi time.Duration) {
	t.Helper()
	got, found, err := l.TTL(context.Background(), key)
	if err != nil {
		t.Fatalf("TTL(%q): %v", key, err)
	}
	if !found || got < lo || got > hi {
		t.Fatalf("TTL(%q) = %v, %v; want within [%v, %v], true", key, got, found, lo, hi)
	}
}

func wantStatus(t *testing.T, l lock.Locker, key string, timeout time.Duration, want lock.Status) {
	t.Helper()
	got, err := lock.Ops{Locker: l}.KeyStatus(context.Background(), key, timeout)
	if err != nil {
		t.Fatalf("KeyStatus(%q): %v", key, err)
	}
	if got != want {
		t.Fatalf("KeyStatus(%q, %v) = %v; want %v", key, timeout, got, want)
	}
}
