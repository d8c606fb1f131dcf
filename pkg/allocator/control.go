package allocator

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/lockpool/lockpool/pkg/lock"
)

// Fleet-wide controls: an operator's actions on a whole pool or one item,
// kept in the pool's shared state (Redis, or the memory pool's twin), so
// that they act on every allocator of the pool, in every process, at once.

// intervention is an operator's action on one item (intervene.lua).
type intervention string

const (
	opUnquarantine intervention = "unquarantine"
	opCancel       intervention = "cancel"
)

// Intervention outcomes (intervene.lua's first reply element).
const (
	intervened = 1  // done
	nothingTo  = 0  // the item was not in the state the action acts on
	heldByLock = -1 // the item is held by something the action leaves alone
)

// Pause stops every allocator of the pool, in every process, from granting
// leases until Resume: Acquire waits, TryAcquire and Lease.Next find
// nothing (ErrNoFreeItem joined with ErrPaused). Leases granted before
// stay current; their holders refresh and release them as usual. Pausing
// a paused pool changes nothing. It returns since when the pool is paused.
func (a *Allocator) Pause(ctx context.Context) (time.Time, error) {
	since, err := a.store.pause(ctx, true)
	if err != nil {
		return time.Time{}, fmt.Errorf("allocator: Pause: %w", err)
	}
	return since, nil
}

// Resume lets the pool's allocators grant again and wakes their waiting
// Acquire calls (Config.WakeWaiters of them at once; others within their
// Config.MaxWait). Resuming a pool that is not paused changes nothing.
func (a *Allocator) Resume(ctx context.Context) error {
	if _, err := a.store.pause(ctx, false); err != nil {
		return fmt.Errorf("allocator: Resume: %w", err)
	}
	return nil
}

// PausedSince reports since when the pool is paused (by the server's
// clock), or the zero Time when it is not.
func (a *Allocator) PausedSince(ctx context.Context) (time.Time, error) {
	since, err := a.store.paused(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("allocator: PausedSince: %w", err)
	}
	return since, nil
}

// Unquarantine ends item's quarantine or cooldown now: it is available at
// once, and waiting Acquire calls are woken. It returns ErrNotHeldBack
// when the item is not held back (free already, leased, or locked by a
// lock the allocator did not grant: those are left alone).
func (a *Allocator) Unquarantine(ctx context.Context, item string) error {
	return a.intervene(ctx, "Unquarantine", opUnquarantine, item)
}

// Cancel takes the current lease on item away from its holder, whichever
// process holds it: the holder's keep-alive (Lease.KeepAlive) ends at once
// with a LostError of reason LostCancelled, as for a lost lease (a
// pkg/worker task is stopped), and its refreshes and release find the
// lease lost. The item is not granted to anyone before the cancelled lease
// would have expired, since a holder that is not keeping the lease alive
// learns of it only at its next refresh; Unquarantine makes it available
// earlier. It returns ErrNotLeased when no lease holds the item.
func (a *Allocator) Cancel(ctx context.Context, item string) error {
	return a.intervene(ctx, "Cancel", opCancel, item)
}

func (a *Allocator) intervene(ctx context.Context, name string, op intervention, item string) error {
	if item == "" || len(item) > lock.MaxKeyLen || strings.IndexByte(item, 0) >= 0 {
		return fmt.Errorf("allocator: %s: %w: %q", name, lock.ErrInvalidKey, item)
	}
	code, err := a.store.intervene(ctx, op, item)
	switch {
	case err != nil:
		return fmt.Errorf("allocator: %s %q: %w", name, item, err)
	case code == intervened:
		return nil
	case op == opUnquarantine && code == nothingTo:
		return fmt.Errorf("allocator: %s %q: %w: it is not held", name, item, ErrNotHeldBack)
	case op == opUnquarantine:
		return fmt.Errorf("allocator: %s %q: %w: it is leased or locked", name, item, ErrNotHeldBack)
	case code == nothingTo:
		return fmt.Errorf("allocator: %s %q: %w: it is free or held back", name, item, ErrNotLeased)
	default:
		return fmt.Errorf("allocator: %s %q: %w: it is locked by a lock the allocator did not grant", name, item, ErrNotLeased)
	}
}

// cancelled ends this process's keep-alives of the lease on item with
// token, which an operator cancelled (in any process).
func (a *Allocator) cancelled(item string, token int64) {
	for _, k := range a.keeper.holding(item, token) {
		k.cancel(&LostError{Item: item, Reason: LostCancelled})
	}
}

// holding returns the keep-alives of the lease on item with token.
func (kp *keeper) holding(item string, token int64) []*KeepAlive {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	var out []*KeepAlive
	for _, g := range kp.groups {
		for k := range g.members {
			if k.lease.item == item && k.lease.token == token {
				out = append(out, k)
			}
		}
	}
	return out
}
