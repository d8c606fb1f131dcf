package allocator

import (
	"cmp"
	"context"
	"errors"
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
	// failures is the item's failure count Next found when granting, or
	// -1.
	failures int
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
		failures:  -1,
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
	if i <= 0 || v == QuarantineValue || v == CooldownValue {
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
	return l.end(ctx, "Release", 0, "")
}

// Quarantine ends the lease if it is still current and keeps the item
// unavailable for d (the spec's Unavailable status), e.g. after repeated
// task failures. Errors are those of Release.
func (l *Lease) Quarantine(ctx context.Context, d time.Duration) error {
	if d < time.Millisecond {
		return fmt.Errorf("allocator: Quarantine %q: %w: duration %v (want >= 1ms)", l.item, ErrInvalidConfig, d)
	}
	return l.end(ctx, "Quarantine", d, quarantineMarker)
}

// Cooldown ends the lease if it is still current and lets the item rest
// for d before anyone is granted it: a worker's cooldown after a run or
// backoff before a retry. It differs from Quarantine only in the lock value
// the item holds meanwhile (CooldownValue), so that operators can tell the
// two apart. Errors are those of Release.
func (l *Lease) Cooldown(ctx context.Context, d time.Duration) error {
	if d < time.Millisecond {
		return fmt.Errorf("allocator: Cooldown %q: %w: duration %v (want >= 1ms)", l.item, ErrInvalidConfig, d)
	}
	return l.end(ctx, "Cooldown", d, cooldownMarker)
}

// CountOp says what Lease.Next does to the ended item's failure count.
type CountOp int

// Count operations.
const (
	// CountKeep leaves the count as it is.
	CountKeep CountOp = iota
	// CountAdd adds one failure.
	CountAdd
	// CountClear forgets the item's failures.
	CountClear
)

// arg is the op as next.lua takes it.
func (c CountOp) arg() string {
	switch c {
	case CountAdd:
		return "add"
	case CountClear:
		return "clear"
	}
	return ""
}

// EndOptions says how Lease.Next ends a lease.
type EndOptions struct {
	// Hold keeps the item unavailable that long, as Cooldown does (or
	// Quarantine, with Quarantine set); 0 frees it at once, as Release does.
	Hold time.Duration
	// Quarantine makes the hold a quarantine (QuarantineValue) rather than
	// a cooldown (CooldownValue).
	Quarantine bool
	// Count changes the item's consecutive-failure count, kept beside the
	// pool in the HASH AcquireOptions.Failures names (default pkg/keyspace's
	// Failures HASH: the count pkg/worker keeps in loop mode; the in-memory
	// twin for the memory backend). It changes only when the lease is still
	// current.
	Count CountOp
	// Record, when set, records how the run under the lease ended in the
	// item's history, in the same step, while the lease is current (see
	// RunRecord). Default nil: nothing is recorded.
	Record *RunRecord
}

// Next ends the lease as Release does (or, with end.Hold, as Quarantine
// does) and, in the same round trip and atomic step, leases a free item to
// owner as TryAcquire(ctx, owner, opts) would: a worker going from one item
// to the next pays one round trip instead of two. The new lease's Failures
// says the item's failure count.
//
// ended reports how the lease ended: nil when it was current and is now
// ended, otherwise the error Release would have returned (ErrLeaseLost,
// ErrLeaseReleased); the next item is leased either way. err is
// ErrNoFreeItem when no item was free (next is nil, and the lease is ended
// all the same), or the call's failure; then next is nil and, when the call
// may not have reached Redis, ended is the same error. Next does not wait:
// call Acquire after an ErrNoFreeItem to wait for an item.
//
// opts.From limits the candidates to a SET's members, and opts.Failures
// names the count HASH (see AcquireOptions). With From, a lease that had
// already ended gives ErrNoFreeItem without a look: only the step's grant
// draws from From.
func (l *Lease) Next(ctx context.Context, end EndOptions, owner string, opts AcquireOptions) (next *Lease, ended, err error) {
	const op = "Next"
	a := l.a
	if end.Hold < 0 || (end.Hold > 0 && end.Hold < time.Millisecond) || end.Count < CountKeep || end.Count > CountClear {
		err := fmt.Errorf("allocator: %s %q: %w: hold %v, count %d", op, l.item, ErrInvalidConfig, end.Hold, end.Count)
		return nil, err, err
	}
	ttl, err := a.checkAcquire(op, owner, opts)
	if err != nil {
		return nil, err, err
	}
	l.endMu.Lock()
	defer l.endMu.Unlock()
	if ended := l.usable(op); ended != nil {
		// Nothing to end: only the grant is left to do.
		if opts.From != "" {
			return nil, ended, fmt.Errorf("allocator: %s: %w", op, ErrNoFreeItem)
		}
		next, err := a.TryAcquire(ctx, owner, opts.plain())
		return next, ended, err
	}
	opts.Failures = cmp.Or(opts.Failures, a.store.names().Failures())
	sent := time.Now()
	r, err := a.store.next(ctx, l, end, owner, ttl, opts)
	if err != nil {
		err = fmt.Errorf("allocator: %s %q: %w", op, l.item, err)
		return nil, err, err
	}
	if r.ended == verdictHeld {
		l.mu.Lock()
		l.state = leaseReleased
		l.mu.Unlock()
	} else {
		lerr := a.lostError(l, r.ended, r.rep)
		l.markLost(lerr)
		ended = fmt.Errorf("allocator: %s %q: %w", op, l.item, lerr)
	}
	switch {
	case r.granted:
		next = a.newLease(owner, ttl, r.g, sent)
		next.failures = r.failures
		return next, ended, nil
	case r.grantErr != nil:
		return nil, ended, fmt.Errorf("allocator: %s: %w", op, r.grantErr)
	case r.m.quiet.Gen > 0:
		return nil, ended, fmt.Errorf("allocator: %s: %w", op, a.quietErr(r.m.quiet))
	case r.m.paused:
		return nil, ended, fmt.Errorf("allocator: %s: %w (%w)", op, ErrNoFreeItem, ErrPaused)
	case opts.Exact:
		return nil, ended, fmt.Errorf("allocator: %s %q: %w", op, opts.Prefer, ErrNoFreeItem)
	case r.fromEmpty:
		return nil, ended, fmt.Errorf("allocator: %s: %w", op, errors.Join(ErrNoFreeItem, ErrFromEmpty))
	case opts.From != "":
		// The index played no part: nothing to sync or look at again.
		return nil, ended, fmt.Errorf("allocator: %s: %w", op, ErrNoFreeItem)
	case r.m.behind || r.m.retryNow():
		// The index needs a sync step or a second look: TryAcquire does
		// both.
		next, err := a.TryAcquire(ctx, owner, opts.plain())
		return next, ended, err
	}
	return nil, ended, fmt.Errorf("allocator: %s: %w", op, ErrNoFreeItem)
}

// plain is opts without the options only Next takes.
func (o AcquireOptions) plain() AcquireOptions {
	o.From, o.Failures = "", ""
	return o
}

// Failures is the item's consecutive-failure count (see EndOptions.Count)
// as Next found it when it granted the lease in its step; -1 when unknown:
// the lease came from Acquire or TryAcquire, or Next had to fall back to
// TryAcquire (after a lease already ended, or to sync the index first).
func (l *Lease) Failures() int { return l.failures }

func (l *Lease) end(ctx context.Context, op string, hold time.Duration, marker string) error {
	l.endMu.Lock() // a concurrent end that won must not make this one report the lease lost
	defer l.endMu.Unlock()
	if err := l.usable(op); err != nil {
		return err
	}
	v, rep, err := l.a.store.release(ctx, l, hold, marker)
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
