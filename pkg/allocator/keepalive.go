package allocator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// KeepAliveOptions tune Lease.KeepAlive. Zero values mean the defaults.
type KeepAliveOptions struct {
	// Interval between refreshes. Default TTL/3.
	Interval time.Duration
	// Margin is how long before the lease could expire, with no refresh
	// confirmed, that the keep-alive gives up and reports the lease lost.
	// Default TTL/5.
	Margin time.Duration
	// OnRefresh, when set, is called after every refresh attempt with its
	// result (nil when the lease was extended), e.g. to count refreshes.
	// It runs on the keep-alive's goroutine and must not block.
	OnRefresh func(err error)
}

// KeepAlive keeps one lease alive in the background and reports its loss,
// in the style of etcd's Session: select on Done, or run work under
// Context, which is cancelled with cause ErrLeaseLost when the lease is
// lost.
type KeepAlive struct {
	lease            *Lease
	interval, margin time.Duration
	onRefresh        func(error)
	ctx              context.Context
	cancel           context.CancelCauseFunc
	done             chan struct{}
	// results carries the outcome of each refresh the allocator's keeper
	// sent for the lease (nil: extended).
	results chan error
}

// errStopped is the cause when the keep-alive was stopped by its owner.
var errStopped = errors.New("allocator: keep-alive stopped")

// KeepAlive starts refreshing the lease every Interval until ctx ends, Stop
// is called, or the lease is lost.
//
// The lease counts as lost when a refresh reports it lost, or when no
// refresh has been confirmed for TTL - Margin since the last confirmed one
// was sent, measured on this process's monotonic clock. A confirmed refresh
// ran on the server after it was sent, so the lease lives at least TTL past
// the send; giving up Margin earlier stops the work before any other
// holder can be granted the item, provided the clocks of this host and the
// server run at rates that differ by less than Margin/TTL.
//
// The refreshes are batched: every keep-alive of one Allocator with the
// same Interval is refreshed on one ticker, by one script per 1,000 leases
// of one TTL (Allocator.RefreshAll's step), so a process holding 10,000
// leases sends 10 scripts per interval, not 10,000. Each lease keeps its
// own guard and is cancelled on its own.
func (l *Lease) KeepAlive(ctx context.Context, opts KeepAliveOptions) (*KeepAlive, error) {
	interval := opts.Interval
	if interval == 0 {
		interval = l.ttl / 3
	}
	margin := opts.Margin
	if margin == 0 {
		margin = l.ttl / 5
	}
	if interval <= 0 || margin <= 0 || margin >= l.ttl || interval >= l.ttl-margin {
		return nil, fmt.Errorf("allocator: KeepAlive %q: %w: interval %v, margin %v for TTL %v", l.item, ErrInvalidConfig, interval, margin, l.ttl)
	}
	if err := l.usable("KeepAlive"); err != nil {
		return nil, err
	}
	kctx, cancel := context.WithCancelCause(ctx)
	k := &KeepAlive{lease: l, interval: interval, margin: margin, onRefresh: opts.OnRefresh,
		ctx: kctx, cancel: cancel, done: make(chan struct{}), results: make(chan error, 1)}
	l.a.keeper.add(l.a, k)
	go k.run()
	return k, nil
}

// run is the lease's guard: it waits for the keeper's refresh results, and
// gives the lease up when none was confirmed in time.
func (k *KeepAlive) run() {
	defer close(k.done)
	defer k.lease.a.keeper.remove(k)
	guard := time.NewTimer(time.Until(k.lease.safeUntil(k.margin)))
	defer guard.Stop()
	var lastErr error
	for {
		var err error
		select {
		case <-k.ctx.Done():
			return
		case <-guard.C:
			e := &LostError{Item: k.lease.item, Reason: LostUnconfirmed, Detail: fmt.Sprintf("none for %v", k.lease.ttl-k.margin)}
			if lastErr != nil {
				e.Detail += "; last error: " + lastErr.Error()
			}
			k.cancel(e)
			return
		case err = <-k.results:
		}
		if k.onRefresh != nil {
			k.onRefresh(err)
		}
		switch {
		case err == nil:
			guard.Reset(time.Until(k.lease.safeUntil(k.margin)))
		case errors.Is(err, ErrLeaseLost), errors.Is(err, ErrLeaseReleased):
			k.cancel(err)
			return
		default:
			lastErr = err
		}
		// Other errors (Redis unreachable): the keeper tries again next
		// tick; the guard decides when the lease must be given up.
	}
}

// deliver hands the keep-alive a refresh's outcome; an outcome the guard
// has not read yet is replaced, unless it reported the lease gone.
func (k *KeepAlive) deliver(err error) {
	for {
		select {
		case k.results <- err:
			return
		case <-k.done:
			return
		default:
		}
		select {
		case old := <-k.results:
			if old != nil && (errors.Is(old, ErrLeaseLost) || errors.Is(old, ErrLeaseReleased)) {
				err = old
			}
		default:
		}
	}
}

// keeper refreshes the leases of an allocator's keep-alives: one group per
// interval, each with one ticker and one goroutine while it has members.
type keeper struct {
	mu     sync.Mutex
	groups map[time.Duration]*keepGroup
}

type keepGroup struct {
	members map[*KeepAlive]struct{}
}

// add makes the group of k's interval refresh k's lease from its next tick
// on, at most one interval away: the first refresh comes no later than a
// keep-alive of its own would send it.
func (kp *keeper) add(a *Allocator, k *KeepAlive) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	g := kp.groups[k.interval]
	if g == nil {
		if kp.groups == nil {
			kp.groups = map[time.Duration]*keepGroup{}
		}
		g = &keepGroup{members: map[*KeepAlive]struct{}{}}
		kp.groups[k.interval] = g
		go kp.run(a, k.interval, g)
	}
	g.members[k] = struct{}{}
}

func (kp *keeper) remove(k *KeepAlive) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	if g := kp.groups[k.interval]; g != nil {
		delete(g.members, k)
	}
}

// run ticks for one group until it has no member left at a tick.
func (kp *keeper) run(a *Allocator, interval time.Duration, g *keepGroup) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for range tick.C {
		kp.mu.Lock()
		if len(g.members) == 0 {
			delete(kp.groups, interval)
			kp.mu.Unlock()
			return
		}
		members := make([]*KeepAlive, 0, len(g.members))
		for k := range g.members {
			members = append(members, k)
		}
		kp.mu.Unlock()
		a.refreshKept(members)
	}
}

// refreshKept refreshes the leases of members, one script per 1,000 leases
// of one TTL, and tells each keep-alive its outcome.
func (a *Allocator) refreshKept(members []*KeepAlive) {
	byTTL := map[time.Duration][]*KeepAlive{}
	for _, k := range members {
		if err := k.lease.usable("Refresh"); err != nil {
			k.deliver(err)
			continue
		}
		byTTL[k.lease.ttl] = append(byTTL[k.lease.ttl], k)
	}
	// Up to keeperScripts scripts at once, so that a round over many
	// leases takes about one script's time, not one per 1,000 leases.
	var g errgroup.Group
	g.SetLimit(keeperScripts)
	for ttl, group := range byTTL {
		for part := range slices.Chunk(group, refreshChunk) {
			g.Go(func() error { a.refreshChunk(ttl, part); return nil })
		}
	}
	_ = g.Wait()
}

// keeperScripts bounds how many refresh scripts one keeper round runs at
// once.
const keeperScripts = 4

// refreshChunk is one refresh script for the leases of part, all of TTL
// ttl. Its deadline is the latest until which one of them is still safe:
// a refresh confirmed after every guard fired is worthless.
func (a *Allocator) refreshChunk(ttl time.Duration, part []*KeepAlive) {
	leases := make([]*Lease, len(part))
	var deadline time.Time
	for i, k := range part {
		leases[i] = k.lease
		if d := k.lease.safeUntil(k.margin); d.After(deadline) {
			deadline = d
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	lost, err := a.refreshBatch(ctx, ttl, leases)
	for i, k := range part {
		switch {
		case err != nil:
			k.deliver(fmt.Errorf("allocator: Refresh %q: %w", k.lease.item, err))
		case lost[i] != nil:
			k.deliver(fmt.Errorf("allocator: Refresh %q: %w", k.lease.item, lost[i]))
		default:
			k.deliver(nil)
		}
	}
}

// Done is closed when the keep-alive ends: the lease was lost, Stop was
// called, or the context given to KeepAlive ended.
func (k *KeepAlive) Done() <-chan struct{} { return k.done }

// Context is cancelled when the keep-alive ends; context.Cause tells why
// (ErrLeaseLost when the lease was lost).
func (k *KeepAlive) Context() context.Context { return k.ctx }

// Err returns nil while the keep-alive runs, then why it ended.
func (k *KeepAlive) Err() error {
	select {
	case <-k.done:
		return context.Cause(k.ctx)
	default:
		return nil
	}
}

// Stop ends the refreshing and waits for it; the lease itself is not
// released.
func (k *KeepAlive) Stop() {
	k.cancel(errStopped)
	<-k.done
}
