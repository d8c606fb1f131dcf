package allocator

import (
	"context"
	"errors"
	"fmt"
	"time"
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

// KeepAlive refreshes one lease in the background and reports its loss, in
// the style of etcd's Session: select on Done, or run work under Context,
// which is cancelled with cause ErrLeaseLost when the lease is lost.
type KeepAlive struct {
	lease  *Lease
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}
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
	k := &KeepAlive{lease: l, ctx: kctx, cancel: cancel, done: make(chan struct{})}
	go k.run(interval, margin, opts.OnRefresh)
	return k, nil
}

func (k *KeepAlive) run(interval, margin time.Duration, onRefresh func(error)) {
	defer close(k.done)
	ttl := k.lease.ttl
	guard := time.NewTimer(time.Until(k.lease.safeUntil(margin)))
	defer guard.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var lastErr error
	for {
		select {
		case <-k.ctx.Done():
			return
		case <-guard.C:
			e := &LostError{Item: k.lease.item, Reason: LostUnconfirmed, Detail: fmt.Sprintf("none for %v", ttl-margin)}
			if lastErr != nil {
				e.Detail += "; last error: " + lastErr.Error()
			}
			k.cancel(e)
			return
		case <-tick.C:
		}
		// A refresh confirmed after the guard would fire is worthless.
		rctx, cancel := context.WithDeadline(k.ctx, k.lease.safeUntil(margin))
		err := k.lease.Refresh(rctx)
		cancel()
		if onRefresh != nil {
			onRefresh(err)
		}
		switch {
		case err == nil:
			guard.Reset(time.Until(k.lease.safeUntil(margin)))
		case errors.Is(err, ErrLeaseLost), errors.Is(err, ErrLeaseReleased):
			k.cancel(err)
			return
		default:
			lastErr = err
		}
		// Other errors (Redis unreachable): try again next tick; the guard
		// decides when the lease must be given up.
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
