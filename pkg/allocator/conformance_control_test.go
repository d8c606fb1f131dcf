package allocator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// Fleet-wide controls: pause and resume, ending a hold early, cancelling a
// lease. Each acts through the pool's shared state, so one allocator's
// action is checked from another (a peer: another process on Redis).
var controlBehaviours = []behaviour{
	{"pause-stops-grants-of-every-allocator", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b", "c")
		peer := e.peer(allocator.Config{LeaseTTL: long})
		held := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		if since, err := e.a.PausedSince(e.ctx); err != nil || !since.IsZero() {
			t.Fatalf("PausedSince before a pause = %v, %v; want zero", since, err)
		}
		since, err := e.a.Pause(e.ctx)
		must(t, err)
		if again, err := peer.Pause(e.ctx); err != nil || !again.Equal(since) {
			t.Fatalf("second Pause = %v, %v; want the first one's time %v", again, err, since)
		}
		if got, err := peer.PausedSince(e.ctx); err != nil || !got.Equal(since) {
			t.Fatalf("peer's PausedSince = %v, %v; want %v", got, err, since)
		}
		for _, opts := range []allocator.AcquireOptions{{}, {Prefer: "b"}, {Prefer: "b", Exact: true}, {Binding: "job"}} {
			_, err := tryOn(t, e.ctx, peer, "w", opts)
			wantErr(t, "TryAcquire on a paused pool", err, allocator.ErrNoFreeItem, allocator.ErrPaused)
		}
		// The lease granted before goes on: refreshed, then ended by Next,
		// which grants nothing.
		must(t, held.Refresh(e.ctx))
		next, ended, err := held.Next(e.ctx, allocator.EndOptions{}, "w", allocator.AcquireOptions{})
		must(t, ended)
		if next != nil {
			t.Fatalf("Next on a paused pool granted %q", next.Item())
		}
		wantErr(t, "Next on a paused pool", err, allocator.ErrNoFreeItem, allocator.ErrPaused)

		// A blocked Acquire waits through the pause and is woken by the
		// resume, from the other allocator.
		ch := acquireAsync(t, e.ctx, peer, "w", allocator.AcquireOptions{})
		e.waitWaiters(1)
		wantBlocked(t, "Acquire on a paused pool", ch)
		resumed := time.Now()
		must(t, e.a.Resume(e.ctx))
		r := waitResult(t, "Acquire after Resume", ch, handoffBound())
		must(t, r.err)
		t.Logf("Acquire returned %v after Resume", r.at.Sub(resumed))
		if got, err := peer.PausedSince(e.ctx); err != nil || !got.IsZero() {
			t.Fatalf("PausedSince after Resume = %v, %v; want zero", got, err)
		}
		must(t, peer.Resume(e.ctx)) // resuming a running pool changes nothing
		e.mustTry("w", allocator.AcquireOptions{})
	}},
	{"unquarantine-ends-a-hold-now", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a", "b")
		peer := e.peer(allocator.Config{LeaseTTL: long})
		lb := e.mustTry("w", allocator.AcquireOptions{Prefer: "b"})
		must(t, e.a.Quarantine(e.ctx, "a", long))
		// Cooldown: a hold a lease ends with, Lease.Next's EndOptions.Hold.
		_, ended, _ := lb.Next(e.ctx, allocator.EndOptions{Hold: long}, "w", allocator.AcquireOptions{Exact: true, Prefer: "b"})
		must(t, ended)
		e.wantNoFree("w", allocator.AcquireOptions{})

		ch := acquireAsync(t, e.ctx, e.a, "w", allocator.AcquireOptions{})
		e.waitWaiters(1)
		freed := time.Now()
		must(t, peer.Unquarantine(e.ctx, "a"))
		r := waitResult(t, "Acquire behind a quarantine ended early", ch, handoffBound())
		must(t, r.err)
		if r.l.Item() != "a" {
			t.Fatalf("Acquire got %q, want a", r.l.Item())
		}
		t.Logf("Acquire returned %v after Unquarantine", r.at.Sub(freed))
		must(t, peer.Unquarantine(e.ctx, "b"))
		e.mustTry("w", allocator.AcquireOptions{Prefer: "b", Exact: true})

		// Nothing held back: a leased item stays leased, a free one free.
		wantErr(t, "Unquarantine of a leased item", peer.Unquarantine(e.ctx, "a"), allocator.ErrNotHeldBack)
		e.wantHeld(r.l)
		must(t, e.pool.Extend(e.ctx, []string{"c"}))
		must(t, e.a.Sync(e.ctx))
		wantErr(t, "Unquarantine of a free item", peer.Unquarantine(e.ctx, "c"), allocator.ErrNotHeldBack)
		wantErr(t, "Unquarantine of an empty name", peer.Unquarantine(e.ctx, ""), lock.ErrInvalidKey)
	}},
	{"cancel-stops-the-holder", func(t *testing.T, b backend) {
		const ttl = 3 * time.Second
		e := setup(t, b, allocator.Config{LeaseTTL: ttl}, "a", "b")
		peer := e.peer(allocator.Config{LeaseTTL: ttl})
		l := e.mustTry("w", allocator.AcquireOptions{Prefer: "a"})
		ka, err := l.KeepAlive(e.ctx, allocator.KeepAliveOptions{})
		must(t, err)
		defer ka.Stop()
		cancelled := time.Now()
		must(t, peer.Cancel(e.ctx, "a"))
		select {
		case <-ka.Done():
		case <-time.After(handoffBound()):
			t.Fatalf("keep-alive still running %v after Cancel (%s)", handoffBound(), redistest.SchedDelay())
		}
		t.Logf("keep-alive ended %v after Cancel", time.Since(cancelled))
		var lost *allocator.LostError
		if !errors.As(ka.Err(), &lost) || lost.Reason != allocator.LostCancelled || lost.Item != "a" {
			t.Fatalf("keep-alive ended with %v; want a LostError of reason %q for a", ka.Err(), allocator.LostCancelled)
		}
		wantErr(t, "Refresh of a cancelled lease", l.Refresh(e.ctx), allocator.ErrLeaseLost)
		wantErr(t, "Release of a cancelled lease", l.Release(e.ctx), allocator.ErrLeaseLost)
		// Nobody gets the item before the cancelled lease would have ended.
		if time.Now().Before(l.Deadline().Add(-100 * time.Millisecond)) {
			e.wantNoFree("w", allocator.AcquireOptions{Prefer: "a", Exact: true})
		}
		wantErr(t, "Cancel of a cancelled lease", peer.Cancel(e.ctx, "a"), allocator.ErrNotLeased)
		wantErr(t, "Cancel of a free item", peer.Cancel(e.ctx, "b"), allocator.ErrNotLeased)
		// An operator who knows the holder stopped hands the item out now.
		must(t, peer.Unquarantine(e.ctx, "a"))
		e.mustTry("w", allocator.AcquireOptions{Prefer: "a", Exact: true})

		// A lock the allocator did not grant is not a lease to cancel.
		must(t, e.pool.Shrink(e.ctx, []string{"b"}))
		if ok, err := e.pool.Lock(e.ctx, "b", "someone", long); err != nil || !ok {
			t.Fatalf("Lock(b) = %v, %v", ok, err)
		}
		wantErr(t, "Cancel of a foreign lock", peer.Cancel(e.ctx, "b"), allocator.ErrNotLeased)
		e.wantValue("b", "someone", true)
		wantErr(t, "Cancel of an empty name", peer.Cancel(e.ctx, ""), lock.ErrInvalidKey)
	}},
	{"controls-wait-for-nothing-when-ctx-ended", func(t *testing.T, b backend) {
		e := setup(t, b, allocator.Config{LeaseTTL: long}, "a")
		ctx, cancel := context.WithCancel(e.ctx)
		cancel()
		_, err := e.a.Pause(ctx)
		wantErr(t, "Pause with an ended context", err, context.Canceled)
		if got, err := e.a.PausedSince(e.ctx); err != nil || !got.IsZero() {
			t.Fatalf("a failed Pause paused the pool: %v, %v", got, err)
		}
	}},
}
