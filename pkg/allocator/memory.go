package allocator

import (
	"cmp"
	"container/heap"
	"container/list"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lockpool/lockpool/internal/epoch"
	"github.com/lockpool/lockpool/internal/failcount"
	"github.com/lockpool/lockpool/internal/memberset"
	"github.com/lockpool/lockpool/pkg/keyspace"
	"github.com/lockpool/lockpool/pkg/lock"
)

// NewMemory returns an allocator over an in-memory lock pool. Items come
// from the pool's members, and leases are the pool's ordinary locks, so
// pkg/lock users of the same pool see allocated items as locked, and an
// item they lock directly is never handed out.
//
// It behaves like the Redis allocator (see NewRedis), with the process's
// clock in place of the server's. Allocators created over the same pool
// share their index, fencing counter, bindings and waiters (kept beside
// the pool: see lock.Shared), as Redis allocators over the same keys do.
func NewMemory(pool *lock.MemoryLockPool, cfg Config) (*Allocator, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("allocator: NewMemory: %w", err)
	}
	if pool == nil {
		return nil, fmt.Errorf("allocator: NewMemory: %w: nil pool", ErrInvalidConfig)
	}
	s := newMemoryStore(pool, cfg.WakeWaiters)
	s.handoffMs = cfg.HandoffWindow.Milliseconds()
	t := newTracker(cfg)
	t.Seen(epoch.State{Gen: 1}, "") // one generation: process memory has no discontinuity
	return newAllocator(cfg, s, t), nil
}

// memoryStore is the in-memory store: the twin of redisStore, each method
// the twin of its Lua script. The allocator's state (memoryState) is shared
// by every store over the same pool; the locks are the pool's.
type memoryStore struct {
	pool  *lock.MemoryLockPool
	st    *memoryState
	wakeN int
	// handoffMs keeps a released item for the waiter it woke (0: off).
	handoffMs int64
}

func newMemoryStore(pool *lock.MemoryLockPool, wakeN int) *memoryStore {
	return &memoryStore{pool: pool, st: memoryStateOf(pool), wakeN: wakeN}
}

// names is keyspace.Memory(): the names the memory twins of the keys
// options name (failure counts, From sets) are kept under.
func (s *memoryStore) names() keyspace.Pool { return keyspace.Memory() }

// memoryState is what Redis keeps under <base>|alloc:*, for one pool.
//
// Lock order: mu, then the pool's own mutex (any pool method), then the
// mutexes of the small shared twins (internal/failcount,
// internal/memberset), which call nothing. Pool users never take mu, so calling the pool while holding mu cannot deadlock, and
// holding mu makes each store method one atomic step among allocators, as
// a Lua script is. Against direct users of the pool, each step relies on
// the pool's own atomic operations (Lock, Refresh, Release, Replace).
type memoryState struct {
	mu       sync.Mutex
	index    availIndex        // alloc:index
	fence    int64             // alloc:fence
	bindings map[string]string // alloc:bindings
	foreign  map[string]int64  // alloc:foreign: item -> ms when last looked at
	reserved map[string]string // alloc:reserved: waiter -> item handed to it
	waiters  map[string]*memWaiter
	queue    list.List // alloc:waiters: registered waiters, oldest first
	nextID   int64
	synced   bool   // a reconcile has run
	gen      uint64 // the pool's Generation read before the last reconcile
	// pausedMs is alloc:control's paused: server ms since the pool is
	// paused, 0 when it is not.
	pausedMs int64
	// cancels are alloc:wake:cancel's listeners: every store over the pool.
	cancels map[*memoryStore]func(item string, token int64)
}

// memWaiter is one wake-up registration.
type memWaiter struct {
	id   string
	ch   chan struct{}
	elem *list.Element // position in the queue; nil when not queued
}

// memoryStateOf returns the allocator state kept beside pool (see
// lock.Shared), shared by every allocator over the pool.
func memoryStateOf(pool *lock.MemoryLockPool) *memoryState {
	return lock.Shared(pool, "allocator", func() *memoryState {
		return &memoryState{index: newAvailIndex(), bindings: map[string]string{}, foreign: map[string]int64{}, reserved: map[string]string{}, waiters: map[string]*memWaiter{}}
	})
}

// heldForeverMs is how far ahead an item whose lock never expires is
// looked at again, as in acquire.lua.
const heldForeverMs = 3_600_000

// step begins one store step, atomic among allocators as a Lua script is:
// a done ctx fails it before anything is read or written, as the Redis
// store's failed script call does; then it takes the state's mutex, which
// done releases. Once started, a step runs to its end, as a script does,
// so it uses the returned context, which ctx's cancellation does not reach.
func (s *memoryStore) step(ctx context.Context, op string) (context.Context, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	s.st.mu.Lock()
	return context.WithoutCancel(ctx), s.st.mu.Unlock, nil
}

// msDuration is a whole number of milliseconds as a Duration.
func msDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }

// acquire is acquire.lua.
func (s *memoryStore) acquire(ctx context.Context, owner string, ttl time.Duration, prefer, binding, waiter string, exact bool) (grant, miss, bool, error) {
	bg, done, err := s.step(ctx, "acquire")
	if err != nil {
		return grant{}, miss{}, false, err
	}
	defer done()
	return s.grant(bg, owner, ttl, prefer, binding, waiter, exact, "")
}

// grant is acquire's step (grant.lua), with the state's mutex held. With
// from, the candidates after prefer and binding are a random few members
// of that set (internal/memberset).
func (s *memoryStore) grant(bg context.Context, owner string, ttl time.Duration, prefer, binding, waiter string, exact bool, from string) (grant, miss, bool, error) {
	const op = "acquire"
	st := s.st

	t := time.Now()
	now, nowUs := t.UnixMilli(), t.UnixMicro()
	ttlMs := ttl.Milliseconds()
	// The token the lease gets if one is taken now; the counter moves only
	// then.
	token := max(st.fence+1, nowUs)
	value := leaseValue(owner, token)
	if st.pausedMs != 0 { // grant.lua's paused check
		if waiter != "" {
			st.enqueue(waiter)
		}
		return grant{}, miss{now: msTime(now), paused: true}, false, nil
	}

	// take takes item when it is free, in one atomic Lock; on the way it
	// drops items that left the pool from the index and re-scores items
	// someone holds to when their lock expires.
	take := func(item string) (bool, error) {
		member, err := s.pool.Contains(bg, item)
		if err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		if !member {
			st.index.remove(item)
			delete(st.foreign, item)
			return false, nil
		}
		for range 3 {
			ok, err := s.pool.Lock(bg, item, value, msDuration(ttlMs))
			if err != nil {
				return false, fmt.Errorf("%s: %w", op, err)
			}
			if ok {
				return true, nil
			}
			rem, found, err := s.pool.TTL(bg, item)
			if err != nil {
				return false, fmt.Errorf("%s: %w", op, err)
			}
			if found {
				pttl := rem.Milliseconds()
				if rem == lock.NoExpiry {
					pttl = heldForeverMs
				}
				st.index.set(item, now+pttl)
				st.foreign[item] = now
				return false, nil
			}
			// The lock expired between Lock and TTL: try again.
		}
		st.index.set(item, now)
		return false, nil
	}
	granted := func(item string) grant {
		st.fence = token
		st.index.set(item, now+ttlMs)
		if binding != "" {
			st.bindings[binding] = item
		}
		if waiter != "" {
			st.unqueue(waiter)
		}
		return grant{item: item, token: token, deadline: msTime(now + ttlMs)}
	}

	// An item a release handed to this waiter first, then affinity: the
	// named item, then the binding's previous item.
	var wanted []string
	if waiter != "" {
		if handed, ok := st.reserved[waiter]; ok {
			delete(st.reserved, waiter)
			wanted = append(wanted, handed)
		}
	}
	if prefer != "" {
		wanted = append(wanted, prefer)
	}
	if binding != "" {
		if bound, ok := st.bindings[binding]; ok {
			wanted = append(wanted, bound)
		}
	}
	for _, item := range wanted {
		ok, err := take(item)
		if err != nil {
			return grant{}, miss{}, false, err
		}
		if ok {
			return granted(item), miss{}, true, nil
		}
	}
	if exact {
		// Only the preferred item would do: report when it may be available.
		m := miss{now: msTime(now)}
		if score, ok := st.index.score(prefer); ok {
			m.next = msTime(score)
		}
		return grant{}, m, false, nil
	}
	if from != "" {
		// Only members of the From set will do, as in grant.lua; the
		// index plays no part, and a miss says nothing of when.
		var sample []string
		if set, ok := memberset.Lookup(s.pool, from); ok {
			sample = set.Sample(fromSample)
		}
		for _, item := range sample {
			ok, err := take(item)
			if err != nil {
				return grant{}, miss{}, false, err
			}
			if ok {
				return granted(item), miss{}, true, nil
			}
		}
		return grant{}, miss{now: msTime(now)}, false, nil
	}

	// Then the longest-available items, oldest score first, in batches as
	// acquire.lua reads them.
	for seen := 0; seen < maxCandidates; {
		batch := st.index.first(min(16, maxCandidates-seen), now)
		if len(batch) == 0 {
			break
		}
		for _, item := range batch {
			seen++
			ok, err := take(item)
			if err != nil {
				return grant{}, miss{}, false, err
			}
			if ok {
				return granted(item), miss{}, true, nil
			}
		}
	}

	// Items held by foreign locks may have been unlocked early, which the
	// index cannot see: look at a few, least recently looked at first, and
	// forget those held by a lease of ours (acquire.lua does the same).
	for _, item := range st.leastProbedForeign(8) {
		ok, err := take(item)
		if err != nil {
			return grant{}, miss{}, false, err
		}
		if ok {
			delete(st.foreign, item)
			return granted(item), miss{}, true, nil
		}
		if v, found, err := s.pool.LockValue(bg, item); err == nil && found && isLeaseValue(v) {
			delete(st.foreign, item)
		}
	}

	if waiter != "" {
		st.enqueue(waiter)
	}
	members, err := s.pool.Len(bg)
	if err != nil {
		return grant{}, miss{}, false, fmt.Errorf("%s: %w", op, err)
	}
	m := miss{now: msTime(now), behind: members > int64(st.index.len())}
	if e, ok := st.index.min(); ok {
		m.next = msTime(e.score)
	}
	if len(st.foreign) > 0 && (m.next.IsZero() || m.next.After(msTime(now+1000))) {
		m.next = msTime(now + 1000) // foreign unlocks wake nobody
	}
	return grant{}, m, false, nil
}

// leastProbedForeign returns up to k foreign items, least recently looked
// at first (ties by name, as a sorted set orders them).
func (st *memoryState) leastProbedForeign(k int) []string {
	items := make([]string, 0, len(st.foreign))
	for it := range st.foreign {
		items = append(items, it)
	}
	slices.SortFunc(items, func(a, b string) int {
		return cmp.Or(cmp.Compare(st.foreign[a], st.foreign[b]), strings.Compare(a, b))
	})
	return items[:min(k, len(items))]
}

// leaseToken is the token of a lock value with the shape of a lease's
// (isLeaseValue), as intervene.lua's pattern '#(%d+)$' reads it.
func leaseToken(v string) (int64, bool) {
	if !isLeaseValue(v) {
		return 0, false
	}
	token, err := strconv.ParseInt(v[strings.LastIndexByte(v, '#')+1:], 10, 64)
	return token, err == nil
}

// isLeaseValue reports whether a lock value has the shape of a lease's,
// "<owner>#<token>", as acquire.lua's pattern '#%d+$' does.
func isLeaseValue(v string) bool {
	i := strings.LastIndexByte(v, '#')
	if i < 0 || i == len(v)-1 {
		return false
	}
	for _, c := range v[i+1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// refresh is refresh.lua.
func (s *memoryStore) refresh(ctx context.Context, leases []*Lease, ttl time.Duration) (time.Time, []verdict, report, error) {
	const op = "refresh"
	bg, done, err := s.step(ctx, op)
	if err != nil {
		return time.Time{}, nil, report{}, err
	}
	defer done()
	st := s.st
	now := time.Now().UnixMilli()
	ttlMs := ttl.Milliseconds()
	vs := make([]verdict, len(leases))
	for i, l := range leases {
		ok, err := s.pool.Refresh(bg, l.item, l.value, msDuration(ttlMs))
		if err != nil {
			return time.Time{}, nil, report{}, fmt.Errorf("%s: %w", op, err)
		}
		if ok {
			st.index.set(l.item, now+ttlMs)
			vs[i] = verdictHeld
		} else if vs[i], err = s.lost(bg, l.item); err != nil {
			return time.Time{}, nil, report{}, fmt.Errorf("%s: %w", op, err)
		}
	}
	return msTime(now), vs, memoryReport, nil
}

// memoryReport is what the memory store reports of its dataset: one
// generation, nothing evicted.
var memoryReport = report{state: epoch.State{Gen: 1}, evicted: -1}

// lost tells a lease whose lock holds another value from one whose lock
// is gone.
func (s *memoryStore) lost(ctx context.Context, item string) (verdict, error) {
	_, found, err := s.pool.LockValue(ctx, item)
	switch {
	case err != nil:
		return 0, err
	case found:
		return verdictTaken, nil
	}
	return verdictGone, nil
}

// release is release.lua. The check of the lease value and the write that
// ends the lease are one atomic pool operation (Release, or Replace for a
// quarantine), so a direct pool user can never slip in between.
func (s *memoryStore) release(ctx context.Context, l *Lease, hold time.Duration, marker string) (verdict, report, error) {
	bg, done, err := s.step(ctx, "release")
	if err != nil {
		return 0, report{}, err
	}
	defer done()
	return s.free(bg, l, hold, marker, CountKeep, "")
}

// free is release's step (free.lua), with the state's mutex held: it ends
// l if it is current, applying count to the item's failure count in the
// counts kept under tally first.
func (s *memoryStore) free(bg context.Context, l *Lease, hold time.Duration, marker string, count CountOp, tally string) (verdict, report, error) {
	const op = "release"
	st := s.st
	if count != CountKeep {
		// The count changes only under a current lease, as in free.lua.
		if v, _, err := s.pool.LockValue(bg, l.item); err != nil || v != l.value {
			return s.releaseFailed(bg, op, l.item, err)
		}
		failcount.Of(s.pool, tally).Apply(l.item, count == CountAdd)
	}
	now := time.Now().UnixMilli()
	if holdMs := hold.Milliseconds(); holdMs > 0 {
		ok, err := s.pool.Replace(bg, l.item, l.value, marker, msDuration(holdMs))
		if err != nil || !ok {
			return s.releaseFailed(bg, op, l.item, err)
		}
		st.index.set(l.item, now+holdMs)
		return verdictHeld, report{}, nil
	}
	ok, err := s.pool.Release(bg, l.item, l.value)
	if err != nil || !ok {
		return s.releaseFailed(bg, op, l.item, err)
	}
	score := now
	if first := st.wake(s.wakeN); first != "" && s.handoffMs > 0 {
		st.reserved[first] = l.item
		score = now + s.handoffMs
	}
	st.index.set(l.item, score)
	return verdictHeld, report{}, nil
}

// releaseFailed reports a release that found the lease not current, or
// failed with err.
func (s *memoryStore) next(ctx context.Context, l *Lease, end EndOptions, owner string, ttl time.Duration, opts AcquireOptions) (nextResult, error) {
	bg, done, err := s.step(ctx, "next")
	if err != nil {
		return nextResult{}, err
	}
	defer done()
	var r nextResult
	if r.ended, r.rep, err = s.free(bg, l, end.Hold, holdMarker(end.Quarantine), end.Count, opts.Failures); err != nil {
		return nextResult{}, err
	}
	if r.ended == verdictHeld {
		s.writeHistory(l, end.Record)
	}
	if r.g, r.m, r.granted, err = s.grant(bg, owner, ttl, opts.Prefer, opts.Binding, "", opts.Exact, opts.From); err != nil {
		return nextResult{}, err
	}
	switch {
	case r.granted:
		r.failures = failcount.Of(s.pool, opts.Failures).Get(r.g.item)
	case opts.From != "":
		set, ok := memberset.Lookup(s.pool, opts.From)
		r.fromEmpty = !ok || set.Len() == 0
	}
	return r, nil
}

func (s *memoryStore) releaseFailed(ctx context.Context, op, item string, err error) (verdict, report, error) {
	if err != nil {
		return 0, report{}, wrapOp(op, err)
	}
	v, err := s.lost(ctx, item)
	if err != nil {
		return 0, report{}, wrapOp(op, err)
	}
	return v, memoryReport, nil
}

// wrapOp adds op to a non-nil error.
func wrapOp(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", op, err)
}

// quarantine is quarantine.lua.
func (s *memoryStore) quarantine(ctx context.Context, item string, d time.Duration) error {
	const op = "quarantine"
	bg, done, err := s.step(ctx, op)
	if err != nil {
		return err
	}
	defer done()
	st := s.st
	now := time.Now().UnixMilli()
	dMs := d.Milliseconds()
	if err := s.pool.Update(bg, item, quarantineMarker, msDuration(dMs)); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	st.index.set(item, now+dMs)
	return nil
}

// sync is sync.lua, done in one step: the pool changes its members only
// through its own methods, which move its Generation, so the index needs
// reconciling only when that moved, when the counts disagree (releases and
// quarantines of items that left the pool re-add them to the index), or
// when a full sweep is asked for. Members missing from the index are added
// as available since the epoch, so they go first; entries that are no
// longer members are dropped.
func (s *memoryStore) sync(ctx context.Context, full bool) (bool, error) {
	const op = "sync"
	bg, done, err := s.step(ctx, op)
	if err != nil {
		return false, err
	}
	defer done()
	st := s.st
	// Read the generation before the members: a change in between makes
	// the next sync reconcile again.
	gen := s.pool.Generation()
	n, err := s.pool.Len(bg)
	if err != nil {
		return false, fmt.Errorf("%s: %w", op, err)
	}
	if !full && st.synced && gen == st.gen && n == int64(st.index.len()) {
		return false, nil
	}
	members := make(map[string]struct{}, n)
	for item, err := range s.pool.Items(bg) {
		if err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		members[item] = struct{}{}
	}
	added := 0
	for item := range members {
		if !st.index.has(item) {
			st.index.set(item, 0)
			added++
		}
	}
	var gone []string
	for item := range st.index.entries {
		if _, ok := members[item]; !ok {
			gone = append(gone, item)
		}
	}
	for _, item := range gone {
		st.index.remove(item)
	}
	st.gen, st.synced = gen, true
	if added > 0 {
		st.wake(min(added*s.wakeN, 64)) // as sync.lua: each added item wakes a release's worth
	}
	return false, nil
}

// waiter registers a waiter. It joins the wake-up queue when an acquire
// with its id misses, and leaves it when woken, when such an acquire
// succeeds, or when done is called.
func (s *memoryStore) waiter() (string, <-chan struct{}, func()) {
	st := s.st
	st.mu.Lock()
	st.nextID++
	id := strconv.FormatInt(st.nextID, 10)
	w := &memWaiter{id: id, ch: make(chan struct{}, 1)}
	st.waiters[id] = w
	st.mu.Unlock()
	return id, w.ch, func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		st.unqueue(id)
		delete(st.waiters, id)
		delete(st.reserved, id)
	}
}

func (s *memoryStore) close() error {
	s.st.mu.Lock()
	delete(s.st.cancels, s)
	s.st.mu.Unlock()
	return nil
}

// pause is pause.lua.
func (s *memoryStore) pause(ctx context.Context, on bool) (time.Time, error) {
	_, done, err := s.step(ctx, "pause")
	if err != nil {
		return time.Time{}, err
	}
	defer done()
	st := s.st
	if on {
		if st.pausedMs == 0 {
			st.pausedMs = time.Now().UnixMilli()
		}
		return msTime(st.pausedMs), nil
	}
	if st.pausedMs != 0 {
		st.pausedMs = 0
		st.wake(resumeWake)
	}
	return time.Time{}, nil
}

func (s *memoryStore) paused(ctx context.Context) (time.Time, error) {
	_, done, err := s.step(ctx, "paused")
	if err != nil {
		return time.Time{}, err
	}
	defer done()
	if s.st.pausedMs == 0 {
		return time.Time{}, nil
	}
	return msTime(s.st.pausedMs), nil
}

// intervene is intervene.lua.
func (s *memoryStore) intervene(ctx context.Context, op intervention, item string) (int, error) {
	bg, done, err := s.step(ctx, string(op))
	if err != nil {
		return 0, err
	}
	st := s.st
	code, token, err := s.interveneLocked(bg, op, item)
	var tell []func(string, int64)
	if code == intervened && op == opCancel {
		for _, f := range st.cancels {
			tell = append(tell, f)
		}
	}
	done()
	// Told outside the state's mutex, as the cancel channel's messages
	// reach the Redis store's listeners after the script.
	for _, f := range tell {
		f(item, token)
	}
	return code, err
}

func (s *memoryStore) interveneLocked(bg context.Context, op intervention, item string) (int, int64, error) {
	v, found, err := s.pool.LockValue(bg, item)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", op, err)
	}
	if op == opUnquarantine {
		switch {
		case !found:
			return nothingTo, 0, nil
		case v != quarantineMarker && v != cooldownMarker:
			return heldByLock, 0, nil
		}
		if ok, err := s.pool.Release(bg, item, v); err != nil || !ok {
			return nothingTo, 0, err
		}
		s.st.index.set(item, time.Now().UnixMilli())
		s.st.wake(s.wakeN)
		return intervened, 0, nil
	}
	if !found || v == quarantineMarker || v == cooldownMarker {
		return nothingTo, 0, nil
	}
	token, ok := leaseToken(v)
	if !ok {
		return heldByLock, 0, nil
	}
	left, found, err := s.pool.TTL(bg, item)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", op, err)
	}
	if !found || left <= 0 {
		return nothingTo, 0, nil
	}
	if ok, err := s.pool.Replace(bg, item, v, quarantineMarker, left); err != nil || !ok {
		return nothingTo, 0, err
	}
	return intervened, token, nil
}

// onCancel listens on the memory twin of the cancel channel.
func (s *memoryStore) onCancel(f func(item string, token int64)) {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	if s.st.cancels == nil {
		s.st.cancels = map[*memoryStore]func(string, int64){}
	}
	s.st.cancels[s] = f
}

// The helpers below expect st.mu to be held.

// enqueue queues a registered waiter at the back unless it is queued
// already (acquire.lua's ZADD NX).
func (st *memoryState) enqueue(id string) {
	if w := st.waiters[id]; w != nil && w.elem == nil {
		w.elem = st.queue.PushBack(w)
	}
}

// unqueue takes a waiter out of the queue.
func (st *memoryState) unqueue(id string) {
	if w := st.waiters[id]; w != nil && w.elem != nil {
		st.queue.Remove(w.elem)
		w.elem = nil
	}
}

// wake wakes up to n queued waiters, oldest first, taking them out of the
// queue (release.lua's ZPOPMIN).
// wake wakes up to n waiters, oldest first, and returns the first one's id
// ("" when none waited).
func (st *memoryState) wake(n int) string {
	first := ""
	for range n {
		e := st.queue.Front()
		if e == nil {
			break
		}
		w := st.queue.Remove(e).(*memWaiter)
		w.elem = nil
		if first == "" {
			first = w.id
		}
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
	return first
}

// availIndex is the availability index, alloc:index: item -> ms since the
// Unix epoch when it is or was available. Like a Redis sorted set it orders
// by score, then by item bytes, so equal scores go in a fixed order.
type availIndex struct {
	heap    availHeap
	entries map[string]*availEntry
}

type availEntry struct {
	item  string
	score int64
	pos   int // position in the heap
}

func newAvailIndex() availIndex {
	return availIndex{entries: map[string]*availEntry{}}
}

func (x *availIndex) len() int { return len(x.heap) }

func (x *availIndex) has(item string) bool {
	_, ok := x.entries[item]
	return ok
}

// score is item's score (ZSCORE).
func (x *availIndex) score(item string) (int64, bool) {
	if e := x.entries[item]; e != nil {
		return e.score, true
	}
	return 0, false
}

// set adds item with score, or moves it there (ZADD).
func (x *availIndex) set(item string, score int64) {
	if e := x.entries[item]; e != nil {
		e.score = score
		heap.Fix(&x.heap, e.pos)
		return
	}
	e := &availEntry{item: item, score: score}
	x.entries[item] = e
	heap.Push(&x.heap, e)
}

// remove drops item (ZREM).
func (x *availIndex) remove(item string) {
	if e := x.entries[item]; e != nil {
		heap.Remove(&x.heap, e.pos)
		delete(x.entries, item)
	}
}

// min returns the first entry.
func (x *availIndex) min() (*availEntry, bool) {
	if len(x.heap) == 0 {
		return nil, false
	}
	return x.heap[0], true
}

// first returns up to k items with a score of at most maxScore, in index
// order (ZRANGE -inf maxScore BYSCORE LIMIT 0 k), in O(k log n).
func (x *availIndex) first(k int, maxScore int64) []string {
	var out []string
	var popped []*availEntry
	for len(out) < k && len(x.heap) > 0 && x.heap[0].score <= maxScore {
		e := heap.Pop(&x.heap).(*availEntry)
		popped = append(popped, e)
		out = append(out, e.item)
	}
	for _, e := range popped {
		heap.Push(&x.heap, e)
	}
	return out
}

// availHeap is a container/heap min-heap of entries by (score, item) that
// keeps every entry's position up to date.
type availHeap []*availEntry

func (h availHeap) Len() int { return len(h) }
func (h availHeap) Less(i, j int) bool {
	if h[i].score != h[j].score {
		return h[i].score < h[j].score
	}
	return h[i].item < h[j].item
}
func (h availHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos = i
	h[j].pos = j
}
func (h *availHeap) Push(x any) {
	e := x.(*availEntry)
	e.pos = len(*h)
	*h = append(*h, e)
}
func (h *availHeap) Pop() any {
	old := *h
	n := len(old) - 1
	e := old[n]
	old[n] = nil
	*h = old[:n]
	return e
}
