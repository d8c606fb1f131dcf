package allocator

import (
	"fmt"
	"time"
)

// LostReason says why a lease was lost.
type LostReason string

// Reasons a lease is lost.
const (
	// LostTaken: the item's lock holds another value: another lease, a
	// quarantine, or a lock taken through pkg/lock after this lease expired
	// or was removed.
	LostTaken LostReason = "taken"
	// LostGone: the item's lock key is gone: the lease expired (no refresh
	// reached Redis in time), or someone deleted the key.
	LostGone LostReason = "gone"
	// LostEvicted: the lock key is gone while the server evicted keys
	// (maxmemory with an eviction policy, accepted with AllowEviction).
	LostEvicted LostReason = "evicted"
	// LostDiscontinuity: the Redis dataset had a discontinuity (a restart,
	// a failover to a replica, a restore) and the lease did not survive it.
	LostDiscontinuity LostReason = "discontinuity"
	// LostUnconfirmed: no refresh was confirmed in time, so the holder gave
	// the lease up before it could expire: Redis unreachable or too slow.
	LostUnconfirmed LostReason = "unconfirmed"
	// LostCancelled: an operator cancelled the lease (Allocator.Cancel,
	// runner pool cancel): its holder is told at once and stops.
	LostCancelled LostReason = "cancelled"
)

// LostError is the error of a lease found lost; errors.Is(err,
// ErrLeaseLost) holds for it, and errors.As gives the reason.
type LostError struct {
	// Item is the lease's item.
	Item string
	// Reason says what happened.
	Reason LostReason
	// Detail adds what is known: the dataset generation and when it began,
	// the keys evicted, or the last error seen.
	Detail string
}

func (e *LostError) Error() string {
	var what string
	switch e.Reason {
	case LostTaken:
		what = "the item is held by another lease or lock"
	case LostGone:
		what = "its lock key is gone from redis (expired, or deleted)"
	case LostEvicted:
		what = "its lock key was evicted by redis (maxmemory-policy)"
	case LostDiscontinuity:
		what = "redis's dataset changed (restart, failover or restore) and the lease was not in it"
	case LostUnconfirmed:
		what = "no refresh was confirmed in time (redis unreachable or slow)"
	case LostCancelled:
		what = "an operator cancelled the lease"
	default:
		what = string(e.Reason)
	}
	if e.Detail != "" {
		what += ": " + e.Detail
	}
	return ErrLeaseLost.Error() + " (" + string(e.Reason) + "): " + what
}

// Is makes a LostError match ErrLeaseLost.
func (e *LostError) Is(target error) bool { return target == ErrLeaseLost }

// lostError says why l was found lost with verdict v.
func (a *Allocator) lostError(l *Lease, v verdict, rep report) error {
	e := &LostError{Item: l.item, Reason: LostTaken}
	l.mu.Lock()
	gen := l.gen
	l.mu.Unlock()
	switch {
	case rep.state.Gen > gen && gen > 0:
		e.Reason = LostDiscontinuity
		e.Detail = fmt.Sprintf("granted in generation %d, now %d since %s", gen, rep.state.Gen, rep.state.Since.UTC().Format(time.RFC3339Nano))
		if !rep.state.QuietUntil.IsZero() {
			e.Detail += fmt.Sprintf("; no grant until %s", rep.state.QuietUntil.UTC().Format(time.RFC3339Nano))
		}
	case v == verdictGone && a.evictedSince(rep.evicted, rep.state.Gen):
		e.Reason = LostEvicted
		e.Detail = fmt.Sprintf("redis has evicted %d keys since it started", rep.evicted)
	case v == verdictGone:
		e.Reason = LostGone
	}
	return e
}

// evictedSince reports whether the server's evicted_keys, n in dataset
// generation gen, rose above what this allocator saw before in the same
// generation (a restart or a failover starts the count anew), and
// remembers n.
func (a *Allocator) evictedSince(n, gen int64) bool {
	if n < 0 {
		return false
	}
	a.evictMu.Lock()
	defer a.evictMu.Unlock()
	if a.evictedGen != 0 && gen != a.evictedGen || a.evicted < 0 {
		a.evicted, a.evictedGen = n, gen // a new baseline
		return false
	}
	rose := n > a.evicted
	a.evicted, a.evictedGen = max(a.evicted, n), gen
	return rose
}
