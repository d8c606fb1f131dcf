package allocator

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Lease is one item handed to one owner until its deadline. Its lock value
// is unique to the lease, so a holder that stalled past its deadline can
// never refresh or release a newer lease on the same item, even one of its
// own owner's. What it names (Item, Owner, Token, Value) is fixed when it is
// granted and read through accessors: nothing a caller does can make it
// release or refresh another lock. It is safe for concurrent use.
type Lease struct {
	item, owner, value string
	token              int64

	a   *Allocator
	ttl time.Duration

	endMu    sync.Mutex // serialises Release and Quarantine of this lease
	mu       sync.Mutex
	deadline time.Time // server time
	// confirmed is when, on this process's monotonic clock, the request
	// behind the latest confirmed grant or refresh was sent: the lease
	// lives at least until confirmed + ttl.
	confirmed time.Time
	state     leaseState
	// gen is the dataset generation the lease was last confirmed in.
	gen int64
	// lostErr says why the lease was lost, once it was.
	lostErr error
}

type leaseState int

const (
	leaseHeld leaseState = iota
	leaseLost
	leaseReleased
)

func (a *Allocator) newLease(owner string, ttl time.Duration, g grant, sent time.Time) *Lease {
	return &Lease{
		confirmed: sent,
		item:      g.item,
		owner:     owner,
		token:     g.token,
		value:     leaseValue(owner, g.token),
		a:         a,
		ttl:       ttl,
		deadline:  g.deadline,
		gen:       g.gen,
	}
}

func leaseValue(owner string, token int64) string {
	return owner + "#" + strconv.FormatInt(token, 10)
}

// ParseLeaseValue splits a lock value written by the allocator into the
// lease's owner and token. ok is false for any other value, including
// QuarantineValue and locks taken directly through pkg/lock.
func ParseLeaseValue(v string) (owner string, token int64, ok bool) {
	i := strings.LastIndexByte(v, '#')
	if i <= 0 || v == QuarantineValue {
		return "", 0, false
	}
	token, err := strconv.ParseInt(v[i+1:], 10, 64)
	if err != nil || token <= 0 || v[i+1] == '+' {
		return "", 0, false
	}
	return v[:i], token, true
}

// Item is the pool item leased.
func (l *Lease) Item() string { return l.item }

// Owner is who asked for the lease.
func (l *Lease) Owner() string { return l.owner }

// Token is the lease's fencing token: strictly increasing per pool across
// all hosts, never reused. Hand it to whatever the task writes, so writes
// from a holder whose lease has passed can be rejected.
func (l *Lease) Token() int64 { return l.token }

// Value is the lease's lock value, "<owner>#<token>", stored at the
// item's lock key.
func (l *Lease) Value() string { return l.value }

// Deadline is when the lease expires unless refreshed, by the Redis
// server's clock (the process clock for the memory backend).
func (l *Lease) Deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// TTL is the lease's time to live, renewed by every Refresh.
func (l *Lease) TTL() time.Duration { return l.ttl }

// Refresh extends the lease by its TTL if it is still current. It returns
// ErrLeaseLost when the lease expired or someone else holds the item (and
// from then on), and ErrLeaseReleased after Release.
func (l *Lease) Refresh(ctx context.Context) error {
	if err := l.usable("Refresh"); err != nil {
		return err
	}
	sent := time.Now()
	now, vs, rep, err := l.a.store.refresh(ctx, []*Lease{l}, l.ttl)
	if err != nil {
		return fmt.Errorf("allocator: Refresh %q: %w", l.item, err)
	}
	if vs[0] != verdictHeld {
		lerr := l.a.lostError(l, vs[0], rep)
		l.markLost(lerr)
		return fmt.Errorf("allocator: Refresh %q: %w", l.item, lerr)
	}
	l.extended(now.Add(l.ttl), sent, rep.state.Gen)
	return nil
}

// Release ends the lease if it is still current and makes the item
// available at once, waking a waiter. It never deletes another holder's
// lock: a lost lease gives ErrLeaseLost, a second Release ErrLeaseReleased,
// and neither changes anything.
func (l *Lease) Release(ctx context.Context) error {
	return l.end(ctx, "Release", 0)
}

// Quarantine ends the lease if it is still current and keeps the item
// unavailable for d (the spec's Unavailable status), e.g. after repeated
// task failures. Errors are those of Release.
func (l *Lease) Quarantine(ctx context.Context, d time.Duration) error {
	if d < time.Millisecond {
		return fmt.Errorf("allocator: Quarantine %q: %w: duration %v (want >= 1ms)", l.item, ErrInvalidConfig, d)
	}
	return l.end(ctx, "Quarantine", d)
}

func (l *Lease) end(ctx context.Context, op string, hold time.Duration) error {
	l.endMu.Lock() // a concurrent end that won must not make this one report the lease lost
	defer l.endMu.Unlock()
	if err := l.usable(op); err != nil {
		return err
	}
	v, rep, err := l.a.store.release(ctx, l, hold)
	if err != nil {
		return fmt.Errorf("allocator: %s %q: %w", op, l.item, err)
	}
	if v != verdictHeld {
		lerr := l.a.lostError(l, v, rep)
		l.markLost(lerr)
		return fmt.Errorf("allocator: %s %q: %w", op, l.item, lerr)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state = leaseReleased
	return nil
}

// usable reports a lease known locally to be released or lost.
func (l *Lease) usable(op string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch l.state {
	case leaseReleased:
		return fmt.Errorf("allocator: %s %q: %w", op, l.item, ErrLeaseReleased)
	case leaseLost:
		return fmt.Errorf("allocator: %s %q: %w", op, l.item, l.lostErr)
	}
	return nil
}

func (l *Lease) isReleased() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state == leaseReleased
}

// markLost records that the lease is lost, and why (err matches
// ErrLeaseLost).
func (l *Lease) markLost(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state == leaseHeld {
		l.state = leaseLost
		l.lostErr = err
	}
}

// extended records a confirmed refresh sent at sent, which found the
// lease current in dataset generation gen (0: unknown).
func (l *Lease) extended(deadline, sent time.Time, gen int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deadline = deadline
	if sent.After(l.confirmed) {
		l.confirmed = sent
	}
	l.gen = max(l.gen, gen)
}

// safeUntil is the local monotonic time until which the lease is certainly
// still held, less margin.
func (l *Lease) safeUntil(margin time.Duration) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.confirmed.Add(l.ttl - margin)
}
