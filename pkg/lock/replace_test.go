package lock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lockpool/lockpool/pkg/lock"
)

// The Replace behaviours (the holder's compare-and-set) join the one
// conformance suite, so they run against a plain lock and a pool of every
// backend like every other lock behaviour.
func init() {
	for _, rb := range replaceBehaviours {
		lockBehaviours = append(lockBehaviours, lockBehaviour{"replace/" + rb.name, func(t *testing.T, newLock func(options) lock.Ops) {
			rb.fn(t, newLock(options{}))
		}})
	}
}

var replaceBehaviours = []struct {
	name string
	fn   func(t *testing.T, l lock.Locker)
}{
	{"replaces-only-the-held-value", func(t *testing.T, l lock.Locker) {
		ctx := context.Background()
		wantBool(t, "Replace(absent)", false)(l.Replace(ctx, "k", "a", "b", long))
		wantValue(t, l, "k", "", false)
		wantBool(t, "Replace(absent, empty old value)", false)(l.Replace(ctx, "k", "", "b", long))
		wantValue(t, l, "k", "", false)

		wantBool(t, "Lock", true)(l.Lock(ctx, "k", "a", long))
		wantBool(t, "Replace(other value)", false)(l.Replace(ctx, "k", "x", "b", time.Second))
		wantValue(t, l, "k", "a", true)
		wantTTL(t, l, "k", long-5*time.Second, long)

		wantBool(t, "Replace(held value)", true)(l.Replace(ctx, "k", "a", "b", time.Second))
		wantValue(t, l, "k", "b", true)
		wantTTL(t, l, "k", 500*time.Millisecond, time.Second)
		wantBool(t, "Release(old value)", false)(l.Release(ctx, "k", "a"))
		wantBool(t, "Refresh(old value)", false)(l.Refresh(ctx, "k", "a", long))
		wantBool(t, "Replace(old value again)", false)(l.Replace(ctx, "k", "a", "c", long))
		wantValue(t, l, "k", "b", true)

		wantBool(t, "Replace(same value)", true)(l.Replace(ctx, "k", "b", "b", long))
		wantTTL(t, l, "k", long-5*time.Second, long)
		wantBool(t, "Replace(to empty value)", true)(l.Replace(ctx, "k", "b", "", long))
		wantValue(t, l, "k", "", true)
		wantBool(t, "Replace(from empty value)", true)(l.Replace(ctx, "k", "", "d", long))
		wantValue(t, l, "k", "d", true)
	}},
	{"no-expiry", func(t *testing.T, l lock.Locker) {
		ctx := context.Background()
		wantBool(t, "Lock", true)(l.Lock(ctx, "k", "a", short))
		wantBool(t, "Replace(NoExpiry)", true)(l.Replace(ctx, "k", "a", "b", lock.NoExpiry))
		time.Sleep(expiryWait)
		wantValue(t, l, "k", "b", true)
		wantTTL(t, l, "k", lock.NoExpiry, lock.NoExpiry)
		wantStatus(t, l, "k", long, lock.Error)
		wantBool(t, "Replace(back to a TTL)", true)(l.Replace(ctx, "k", "b", "c", short))
		time.Sleep(expiryWait)
		wantValue(t, l, "k", "", false)
	}},
	{"expired-lock-is-not-replaced", func(t *testing.T, l lock.Locker) {
		ctx := context.Background()
		wantBool(t, "Lock", true)(l.Lock(ctx, "k", "a", short))
		time.Sleep(expiryWait)
		wantBool(t, "Replace(expired)", false)(l.Replace(ctx, "k", "a", "b", long))
		wantValue(t, l, "k", "", false)
	}},
	{"exactly-one-of-racing-replacers-wins", func(t *testing.T, l lock.Locker) {
		ctx := context.Background()
		wantBool(t, "Lock", true)(l.Lock(ctx, "k", "a", long))
		got := raceWins(t, "Replace", 16, func(i int) (bool, error) {
			return l.Replace(ctx, "k", "a", "winner-"+strings.Repeat("x", i), long)
		})
		if got != 1 {
			t.Fatalf("%d replacers won; want exactly 1", got)
		}
		v, _, err := l.LockValue(ctx, "k")
		must(t, err)
		if !strings.HasPrefix(v, "winner-") {
			t.Fatalf("value after the race = %q", v)
		}
	}},
	{"bad-input-writes-nothing", func(t *testing.T, l lock.Locker) {
		ctx := context.Background()
		must(t, l.Update(ctx, "witness", "w", long))
		for _, key := range []string{"", "nul\x00key", strings.Repeat("k", lock.MaxKeyLen+1)} {
			if _, err := l.Replace(ctx, key, "w", "v", long); !errors.Is(err, lock.ErrInvalidKey) {
				t.Errorf("Replace(key of %d bytes) = %v; want ErrInvalidKey", len(key), err)
			}
		}
		for _, ttl := range []time.Duration{0, -time.Second, time.Millisecond - 1, -2} {
			if _, err := l.Replace(ctx, "witness", "w", "v", ttl); !errors.Is(err, lock.ErrInvalidTTL) {
				t.Errorf("Replace(ttl %v) = %v; want ErrInvalidTTL", ttl, err)
			}
		}
		big := strings.Repeat("v", lock.MaxValueLen+1)
		if _, err := l.Replace(ctx, "witness", big, "v", long); !errors.Is(err, lock.ErrInvalidValue) {
			t.Errorf("Replace(old value of %d bytes) = %v; want ErrInvalidValue", len(big), err)
		}
		if _, err := l.Replace(ctx, "witness", "w", big, long); !errors.Is(err, lock.ErrInvalidValue) {
			t.Errorf("Replace(new value of %d bytes) = %v; want ErrInvalidValue", len(big), err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := l.Replace(cctx, "witness", "w", "v", long); !errors.Is(err, context.Canceled) {
			t.Errorf("Replace(cancelled context) = %v; want context.Canceled", err)
		}
		wantValue(t, l, "witness", "w", true)
		wantTTL(t, l, "witness", long-5*time.Second, long)
	}},
}
