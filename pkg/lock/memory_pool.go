package lock

import (
	"context"
	"fmt"
	"iter"
	"sync"
)

// memCtxEvery is how many items Items and ItemLocks yield between checks of
// their context, as the Redis pool checks it once per SSCAN step.
const memCtxEvery = 1000

// MemoryLockPool is the in-memory backend of [Pool]: the spec's
// ThreadLockPool, a [MemoryLock] plus a set of member items. It behaves
// exactly like [RedisLockPool], but lives in this process only, and each
// MemoryLockPool is a store of its own. Create it with [NewMemoryLockPool];
// the zero value is not usable. It is safe for concurrent use: the members
// and the locks share one mutex, so every method sees both at one instant,
// and every write of members is atomic.
//
// Items and ItemLocks take a snapshot under the mutex and yield from it
// outside, so the loop body may call the pool; what they yield is the pool
// as it was when the iteration started.
type MemoryLockPool struct {
	*MemoryLock
	members map[string]struct{} // guarded by MemoryLock.mu
	gen     uint64              // membership generation; guarded by MemoryLock.mu

	sharedMu sync.Mutex
	shared   map[string]any // see Shared
}

var _ Pool = (*MemoryLockPool)(nil)

// NewMemoryLockPool returns an empty in-memory pool.
func NewMemoryLockPool(cfg MemoryConfig) (*MemoryLockPool, error) {
	l, err := newMemoryLock(cfg)
	if err != nil {
		return nil, fmt.Errorf("lock: NewMemoryLockPool: %w", err)
	}
	return &MemoryLockPool{MemoryLock: l, members: make(map[string]struct{})}, nil
}

// Shared returns the state that a package built on the pool keeps beside
// it under name, made by create on first use: the in-memory counterpart of
// the keys such a package adds to a Redis pool's keyspace (pkg/keyspace).
// Every caller naming the same pool and name gets the same value, as every
// Redis client over one prefix sees the same keys, so two allocators (or a
// runner's allocator and its worker store) over one MemoryLockPool share
// their index, tokens and run state. The state lives as long as the pool.
//
// The names in use are "allocator" (pkg/allocator), "worker"
// (pkg/worker) and "keyed:<kind>" (internal/keyed: state both share). Asking for a name with another type than it was made with
// panics: that is a programming error, not a runtime condition.
func Shared[T any](p *MemoryLockPool, name string, create func() *T) *T {
	p.sharedMu.Lock()
	defer p.sharedMu.Unlock()
	if v, ok := p.shared[name]; ok {
		t, ok := v.(*T)
		if !ok {
			panic(fmt.Sprintf("lock: Shared(%q): the state is a %T, not a %T", name, v, t))
		}
		return t
	}
	if p.shared == nil {
		p.shared = map[string]any{}
	}
	t := create()
	p.shared[name] = t
	return t
}

// poolCtxErr reports a done context for a pool-wide operation, which has no
// key to name.
func poolCtxErr(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("lock: %s: %w", op, err)
	}
	return nil
}

// Extend implements [Pool].
func (p *MemoryLockPool) Extend(ctx context.Context, items []string) error {
	return p.writeMembers(ctx, "Extend", items, true)
}

// Shrink implements [Pool].
func (p *MemoryLockPool) Shrink(ctx context.Context, items []string) error {
	return p.writeMembers(ctx, "Shrink", items, false)
}

// writeMembers adds items to the members (add) or removes them, bumping
// the generation when that changed anything.
func (p *MemoryLockPool) writeMembers(ctx context.Context, op string, items []string, add bool) error {
	if err := checkItems(op, items); err != nil {
		return err
	}
	if len(items) == 0 {
		return nil
	}
	if err := poolCtxErr(ctx, op); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reap(p.now())
	changed := false
	for _, it := range items {
		if _, ok := p.members[it]; ok != add {
			if add {
				p.members[it] = struct{}{}
			} else {
				delete(p.members, it)
			}
			changed = true
		}
	}
	if changed {
		p.gen++
	}
	return nil
}

// Assign implements [Pool]. The new set is built before the mutex is taken,
// so readers wait only for the swap.
func (p *MemoryLockPool) Assign(ctx context.Context, items []string) error {
	const op = "Assign"
	if err := checkItems(op, items); err != nil {
		return err
	}
	if err := poolCtxErr(ctx, op); err != nil {
		return err
	}
	members := make(map[string]struct{}, len(items))
	for _, it := range items {
		members[it] = struct{}{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reap(p.now())
	if !sameMembers(p.members, members) {
		p.gen++
	}
	p.members = members
	return nil
}

// Clear implements [Pool].
func (p *MemoryLockPool) Clear(ctx context.Context) error {
	if err := poolCtxErr(ctx, "Clear"); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reap(p.now())
	if len(p.members) > 0 {
		p.gen++
	}
	p.members = make(map[string]struct{})
	return nil
}

// sameMembers reports whether two member sets are equal.
func sameMembers(a, b map[string]struct{}) bool {
	if len(a) != len(b) {
		return false
	}
	for it := range b {
		if _, ok := a[it]; !ok {
			return false
		}
	}
	return true
}

// Generation returns the pool's membership generation: a counter that
// Extend, Shrink, Assign and Clear increment whenever they change the member
// set, and that nothing else changes. Two equal readings mean the members
// did not change in between, so a cache of the member set (such as the
// allocator's index) needs reconciling only when the reading moves. Locks
// do not affect it. It starts at zero.
func (p *MemoryLockPool) Generation() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

// Items implements [Pool]. It yields a snapshot taken when the iteration
// starts, so no item is yielded twice; a done context ends it with the
// context's error.
func (p *MemoryLockPool) Items(ctx context.Context) iter.Seq2[string, error] {
	const op = "Items"
	return func(yield func(string, error) bool) {
		if err := poolCtxErr(ctx, op); err != nil {
			yield("", err)
			return
		}
		p.mu.Lock()
		items := make([]string, 0, len(p.members))
		for it := range p.members {
			items = append(items, it)
		}
		p.mu.Unlock()
		for i, it := range items {
			if i > 0 && i%memCtxEvery == 0 {
				if err := poolCtxErr(ctx, op); err != nil {
					yield("", err)
					return
				}
			}
			if !yield(it, nil) {
				return
			}
		}
	}
}

// Contains implements [Pool].
func (p *MemoryLockPool) Contains(ctx context.Context, item string) (bool, error) {
	const op = "Contains"
	if err := checkKey(op, item); err != nil {
		return false, err
	}
	if err := poolCtxErr(ctx, op); err != nil {
		return false, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.members[item]
	return ok, nil
}

// Len implements [Pool].
func (p *MemoryLockPool) Len(ctx context.Context) (int64, error) {
	if err := poolCtxErr(ctx, "Len"); err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return int64(len(p.members)), nil
}

// LockStatus implements [Pool]. All items are checked at one instant.
func (p *MemoryLockPool) LockStatus(ctx context.Context, items []string) ([]bool, error) {
	const op = "LockStatus"
	if err := checkItems(op, items); err != nil {
		return nil, err
	}
	out := make([]bool, len(items))
	if len(items) == 0 {
		return out, nil
	}
	if err := ctxErr(ctx, op, items[0]); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for i, it := range items {
		out[i] = p.live(it, now) != nil
	}
	return out, nil
}

// ItemLocks implements [Pool]. Like Items it yields a snapshot, whose lock
// states are all read at the instant the iteration starts.
func (p *MemoryLockPool) ItemLocks(ctx context.Context) iter.Seq2[ItemLock, error] {
	const op = "ItemLocks"
	return func(yield func(ItemLock, error) bool) {
		if err := poolCtxErr(ctx, op); err != nil {
			yield(ItemLock{}, err)
			return
		}
		p.mu.Lock()
		now := p.now()
		snap := make([]ItemLock, 0, len(p.members))
		for it := range p.members {
			snap = append(snap, ItemLock{Item: it, Locked: p.live(it, now) != nil})
		}
		p.mu.Unlock()
		for i, il := range snap {
			if i > 0 && i%memCtxEvery == 0 {
				if err := poolCtxErr(ctx, op); err != nil {
					yield(ItemLock{}, err)
					return
				}
			}
			if !yield(il, nil) {
				return
			}
		}
	}
}

// HealthCheck implements [Pool]. The counts are taken at one instant.
func (p *MemoryLockPool) HealthCheck(ctx context.Context) (locked, free int64, err error) {
	if err := poolCtxErr(ctx, "HealthCheck"); err != nil {
		return 0, 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for it := range p.members {
		if p.live(it, now) != nil {
			locked++
		}
	}
	return locked, int64(len(p.members)) - locked, nil
}
