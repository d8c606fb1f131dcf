package worker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/lockpool/lockpool/internal/failcount"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// MemoryStore is the in-memory backend of [Store]: the twin of RedisStore
// for a lock.MemoryLockPool, with the process clock in place of the
// server's. Stores over the same pool share their state, as Redis stores
// over the same keys do. A finished batch is forgotten once its retain
// period has passed, noticed by the next call. It is safe for concurrent
// use.
type MemoryStore struct {
	pool *lock.MemoryLockPool
	st   *memStoreState
	// loop is run:failures, the loop-mode counts, which pkg/allocator's
	// Lease.Next changes too.
	loop *failcount.Counts
}

var _ Store = (*MemoryStore)(nil)

// memStoreState is what Redis keeps under <base>|run:* and <base>|batch:*,
// for one pool.
//
// Lock order: mu, then the pool's own mutex (any pool method). Pool users
// never take mu, so calling the pool while holding mu cannot deadlock, and
// holding mu makes each method one atomic step among stores, as a Lua
// script is.
type memStoreState struct {
	mu sync.Mutex
	// failures is batch id -> item -> consecutive failures:
	// batch:<id>:failures (loop mode's run:failures is failcount's).
	failures map[string]map[string]int
	batches  map[string]*memBatch
	// nextExpiry is the earliest expires of any batch (zero: none), so
	// calls before it skip the sweep.
	nextExpiry time.Time
}

// memBatch is one batch: batch:<id>:todo, the done and failed counts, and
// meta.
type memBatch struct {
	// todo holds the pending items; at[item] is the item's index in it, so
	// sampling and removal are O(1).
	todo []string
	at   map[string]int

	total, done, failed int64
	started, finished   time.Time
	// expires is when the finished batch is forgotten; zero while running
	// or when kept forever.
	expires time.Time
}

// memStoreStateOf returns the run state kept beside pool (see
// lock.Shared), shared by every store over the pool.
func memStoreStateOf(pool *lock.MemoryLockPool) *memStoreState {
	return lock.Shared(pool, "worker", func() *memStoreState {
		return &memStoreState{failures: map[string]map[string]int{}, batches: map[string]*memBatch{}}
	})
}

// NewMemoryStore keeps run state in this process beside an in-memory pool.
func NewMemoryStore(pool *lock.MemoryLockPool) *MemoryStore {
	return &MemoryStore{pool: pool, st: memStoreStateOf(pool), loop: failcount.Of(pool)}
}

// enter takes the state's mutex after checking ctx, and forgets the
// batches whose retain period has passed. The caller unlocks.
func (s *MemoryStore) enter(ctx context.Context, op, subject string) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, fmt.Errorf("worker: %s %s: %w", op, subject, err)
	}
	s.st.mu.Lock()
	now := time.Now()
	if st := s.st; !st.nextExpiry.IsZero() && !now.Before(st.nextExpiry) {
		st.nextExpiry = time.Time{}
		for id, b := range st.batches {
			switch {
			case b.expires.IsZero():
			case !now.Before(b.expires):
				delete(st.batches, id)
				delete(st.failures, id)
			case st.nextExpiry.IsZero() || b.expires.Before(st.nextExpiry):
				st.nextExpiry = b.expires
			}
		}
	}
	return now, nil
}

// Failures implements [Store].
func (s *MemoryStore) Failures(ctx context.Context, scope, item string) (int, error) {
	const op = "Failures"
	if err := checkScopeItem(op, scope, item); err != nil {
		return 0, err
	}
	if _, err := s.enter(ctx, op, itemSubject(scope, item)); err != nil {
		return 0, err
	}
	defer s.st.mu.Unlock()
	if scope == "" {
		return s.loop.Get(item), nil
	}
	return s.st.failures[scope][item], nil
}

// AddFailure implements [Store].
func (s *MemoryStore) AddFailure(ctx context.Context, scope, item string) (int, error) {
	const op = "AddFailure"
	if err := checkScopeItem(op, scope, item); err != nil {
		return 0, err
	}
	if _, err := s.enter(ctx, op, itemSubject(scope, item)); err != nil {
		return 0, err
	}
	defer s.st.mu.Unlock()
	if scope == "" {
		return s.loop.Apply(item, true), nil
	}
	m := s.st.failures[scope]
	if m == nil {
		m = map[string]int{}
		s.st.failures[scope] = m
	}
	m[item]++
	return m[item], nil
}

// ClearFailures implements [Store].
func (s *MemoryStore) ClearFailures(ctx context.Context, scope, item string) error {
	const op = "ClearFailures"
	if err := checkScopeItem(op, scope, item); err != nil {
		return err
	}
	if _, err := s.enter(ctx, op, itemSubject(scope, item)); err != nil {
		return err
	}
	defer s.st.mu.Unlock()
	if scope == "" {
		s.loop.Apply(item, false)
		return nil
	}
	s.st.clearFailure(scope, item)
	return nil
}

// clearFailure forgets one count, and the scope once it has none, as
// Redis deletes an emptied hash.
func (st *memStoreState) clearFailure(scope, item string) {
	m := st.failures[scope]
	delete(m, item)
	if len(m) == 0 {
		delete(st.failures, scope)
	}
}

// StartBatch implements [Store]. The pool's members are read while the
// store's mutex is held, so concurrent starts of one batch create it once.
func (s *MemoryStore) StartBatch(ctx context.Context, id string) (Progress, error) {
	const op = "StartBatch"
	if err := checkBatch(op, id); err != nil {
		return Progress{}, err
	}
	now, err := s.enter(ctx, op, batchSubject(id))
	if err != nil {
		return Progress{}, err
	}
	defer s.st.mu.Unlock()
	if b := s.st.batches[id]; b != nil {
		return b.progress(), nil
	}
	b := &memBatch{at: map[string]int{}, started: msClock(now)}
	for item, err := range s.pool.Items(ctx) {
		if err != nil {
			return Progress{}, fmt.Errorf("worker: %s %s: %w", op, batchSubject(id), err)
		}
		if _, dup := b.at[item]; !dup {
			b.at[item] = len(b.todo)
			b.todo = append(b.todo, item)
		}
	}
	b.total = int64(len(b.todo))
	if b.total == 0 {
		// An empty pool makes no batch (as start.lua).
		return Progress{Started: b.started, Finished: b.started}, nil
	}
	// Counts left from an earlier batch of this id must not carry over.
	delete(s.st.failures, id)
	s.st.batches[id] = b
	return b.progress(), nil
}

// Pending implements [Store]. n is clamped to 1..1000.
func (s *MemoryStore) Pending(ctx context.Context, id string, n int) ([]string, error) {
	const op = "Pending"
	if err := checkBatch(op, id); err != nil {
		return nil, err
	}
	if _, err := s.enter(ctx, op, batchSubject(id)); err != nil {
		return nil, err
	}
	defer s.st.mu.Unlock()
	b := s.st.batches[id]
	if b == nil {
		return []string{}, nil
	}
	return b.sample(clampPending(n)), nil
}

// IsPending implements [Store].
func (s *MemoryStore) IsPending(ctx context.Context, id, item string) (bool, error) {
	const op = "IsPending"
	if err := checkBatchItem(op, id, item); err != nil {
		return false, err
	}
	if _, err := s.enter(ctx, op, itemSubject(id, item)); err != nil {
		return false, err
	}
	defer s.st.mu.Unlock()
	b := s.st.batches[id]
	if b == nil {
		return false, nil
	}
	_, ok := b.at[item]
	return ok, nil
}

// Finish implements [Store]. A retain below zero keeps the batch forever,
// as 0 does.
//
// The lease is checked with the pool's LockValue while the store's mutex
// is held, and the item is moved under the same hold. The pool may change
// between the two steps, but not in a way that matters: if the lease was
// current at the check, any other lease on the item is granted after it,
// and its holder runs the item only after IsPending, which waits for this
// mutex and so sees the item already moved. A lease that ends right after
// the check had still run the item to this result.
func (s *MemoryStore) Finish(ctx context.Context, id string, lease *allocator.Lease, ok bool, retain time.Duration) (bool, error) {
	const op = "Finish"
	if err := checkFinish(op, id, lease); err != nil {
		return false, err
	}
	subject := itemSubject(id, lease.Item())
	now, err := s.enter(ctx, op, subject)
	if err != nil {
		return false, err
	}
	defer s.st.mu.Unlock()
	b := s.st.batches[id]
	if b == nil {
		return false, nil
	}
	if _, pending := b.at[lease.Item()]; !pending {
		return false, nil
	}
	v, held, err := s.pool.LockValue(ctx, lease.Item())
	if err != nil {
		return false, fmt.Errorf("worker: %s %s: %w", op, subject, err)
	}
	if !held || v != lease.Value() {
		return false, nil
	}
	b.remove(lease.Item())
	if ok {
		b.done++
	} else {
		b.failed++
	}
	s.st.clearFailure(id, lease.Item())
	s.st.finishIfDone(b, now, retain)
	return true, nil
}

// DropRemoved implements [Store].
func (s *MemoryStore) DropRemoved(ctx context.Context, id string, items []string, retain time.Duration) (int, error) {
	const op = "DropRemoved"
	if err := checkBatch(op, id); err != nil {
		return 0, err
	}
	if len(items) > maxPending {
		return 0, fmt.Errorf("worker: %s %s: %w: %d items, limit %d", op, batchSubject(id), ErrInvalidConfig, len(items), maxPending)
	}
	for _, it := range items {
		if err := checkBatchItem(op, id, it); err != nil {
			return 0, err
		}
	}
	now, err := s.enter(ctx, op, batchSubject(id))
	if err != nil {
		return 0, err
	}
	defer s.st.mu.Unlock()
	b := s.st.batches[id]
	if b == nil {
		return 0, nil
	}
	dropped := 0
	for _, it := range items {
		if _, pending := b.at[it]; !pending {
			continue
		}
		member, err := s.pool.Contains(ctx, it)
		if err != nil {
			return dropped, fmt.Errorf("worker: %s %s: %w", op, itemSubject(id, it), err)
		}
		if member {
			continue
		}
		b.remove(it)
		b.total--
		s.st.clearFailure(id, it)
		dropped++
	}
	if dropped > 0 {
		s.st.finishIfDone(b, now, retain)
	}
	return dropped, nil
}

// Progress implements [Store].
func (s *MemoryStore) Progress(ctx context.Context, id string) (Progress, bool, error) {
	const op = "Progress"
	if err := checkBatch(op, id); err != nil {
		return Progress{}, false, err
	}
	if _, err := s.enter(ctx, op, batchSubject(id)); err != nil {
		return Progress{}, false, err
	}
	defer s.st.mu.Unlock()
	b := s.st.batches[id]
	if b == nil {
		return Progress{}, false, nil
	}
	return b.progress(), true, nil
}

func (b *memBatch) progress() Progress {
	return Progress{Total: b.total, Done: b.done, Failed: b.failed, Started: b.started, Finished: b.finished}
}

// sample returns up to n distinct pending items in random order.
func (b *memBatch) sample(n int) []string {
	if n >= len(b.todo) {
		out := append([]string{}, b.todo...)
		rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		return out
	}
	// n < len(todo) and n <= maxPending: at most a few thousand draws.
	picked := make(map[int]struct{}, n)
	out := make([]string, 0, n)
	for len(out) < n {
		i := rand.IntN(len(b.todo))
		if _, dup := picked[i]; dup {
			continue
		}
		picked[i] = struct{}{}
		out = append(out, b.todo[i])
	}
	return out
}

// remove takes a pending item out of todo by swapping the last one into
// its place.
func (b *memBatch) remove(item string) {
	i := b.at[item]
	last := len(b.todo) - 1
	b.todo[i] = b.todo[last]
	b.at[b.todo[i]] = i
	b.todo[last] = ""
	b.todo = b.todo[:last]
	delete(b.at, item)
}

// msClock is t in whole milliseconds without its monotonic reading, as
// the Redis backend reports times.
func msClock(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()) }

// finishIfDone marks b finished once nothing is pending, and schedules its
// expiry after retain (kept forever when retain <= 0), as finish.lua and
// drop.lua do. The caller holds st.mu.
func (st *memStoreState) finishIfDone(b *memBatch, now time.Time, retain time.Duration) {
	if len(b.todo) > 0 {
		return
	}
	b.finished = msClock(now)
	if retain > 0 {
		b.expires = now.Add(retain)
		if st.nextExpiry.IsZero() || b.expires.Before(st.nextExpiry) {
			st.nextExpiry = b.expires
		}
	}
}
