package redistest

import (
	"fmt"
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
	took, err := Poll(what, within, eventuallyTick, func() (bool, string) { return cond(), "" })
	if err != nil {
		t.Fatalf("%v", err)
	}
	return took
}

// Poll calls cond every interval until it reports done, and returns how
// long that took; cond runs at least once. If within passes first, the
// error says what was awaited, how long, what cond reported seeing last
// (its second result, when not empty) and the scheduling delay the test
// process saw ([SchedDelay]). It is the wait under [Eventually], for
// callers that decide themselves what a timeout means, or whose condition
// has something to say when it never holds.
func Poll(what string, within, interval time.Duration, cond func() (done bool, seen string)) (time.Duration, error) {
	start := time.Now()
	for {
		done, seen := cond()
		if done {
			return time.Since(start), nil
		}
		if waited := time.Since(start); waited > within {
			if seen != "" {
				seen = "; last seen: " + seen
			}
			return waited, fmt.Errorf("waited %v for %s: not within %v%s (%s)", waited.Round(time.Millisecond), what, within, seen, SchedDelay())
		}
		time.Sleep(interval)
	}
}

// Must fails the test (t.Fatalf) if err is not nil.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}
