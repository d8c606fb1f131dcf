package redistest

import (
	"testing"
	"time"
)

// eventuallyTick is the pause between two checks of an [Eventually]
// condition: short, so that a test measuring how soon something happens
// adds at most a few milliseconds to what it measures.
const eventuallyTick = 2 * time.Millisecond

// Eventually checks cond every few milliseconds until it returns true, and
// returns how long that took. If within passes first, it fails the test
// (t.Fatalf) naming what it waited for, how long it waited and the
// scheduling delay the test process saw ([SchedDelay]), so that a bound
// missed on a loaded machine says so. cond runs on the caller's goroutine
// and may itself fail the test.
//
// Tests wait with Eventually for a state they can observe (a waiter
// registered, a key gone, a process dead) instead of sleeping for a time
// that is usually long enough.
func Eventually(t testing.TB, what string, within time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if waited := time.Since(start); waited > within {
			t.Fatalf("waited %v for %s: not within %v (%s)", waited.Round(time.Millisecond), what, within, SchedDelay())
		}
		time.Sleep(eventuallyTick)
	}
}

// Must fails the test (t.Fatalf) if err is not nil.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}
