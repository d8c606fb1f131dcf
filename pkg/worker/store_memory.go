package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/lockpool/lockpool/internal/failcount"
	"github.com/lockpool/lockpool/internal/history"
	"github.com/lockpool/lockpool/internal/memberset"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/keyspace"
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
	// keys name the state shared with pkg/allocator's memory backend
	// (keyspace.Memory): run:failures, the loop-mode counts, and each
	// batch's todo set and failure counts, which Lease.Next reads and
	// changes too.
	keys keyspace.Pool
	loop *failcount.Counts
}

var _ Store = (*MemoryStore)(nil)

// memStoreState is what Redis keeps under <base>|run:* and <base>|batch:*,
// for one pool.
//
// Lock order: mu, then the pool's own mutex (any pool method), then the
// mutexes of the small shared twins (internal/failcount,
// internal/memberset), which call nothing. Pool users never take mu, so calling the pool while holding mu cannot deadlock, and
// holding mu makes each method one atomic step among stores, as a Lua
// script is.
type memStoreState struct {
	mu sync.Mutex
	// batches holds the batches; their failure counts
	// (batch:<id>:failures) and todo sets are failcount's and memberset's,
	// shared with the allocator.
	batches map[string]*memBatch
	// nextExpiry is the earliest expires of any batch (zero: none), so
	// calls before it skip the sweep.
	nextExpiry time.Time
	// runners is the registry (fleet:runners and fleet:info) by id.
	runners map[string]Runner
	// rate is the fleet's throughput (fleet:rate) by bucket number.
	rate map[int64]ThroughputPoint
}

// memBatch is one batch: batch:<id>:todo, the done and failed counts, and
// meta.
type memBatch struct {
	// todo holds the pending items (batch:<id>:todo), shared with the
	// allocator's grants from it (AcquireOptions.From).
	todo *memberset.Set

	total, done, failed int64
	// errors holds the failed items with their errors (batch:<id>:failed
	// and batch:<id>:errors).
	errors            map[string]string
	started, finished time.Time
	// expires is when the finished batch is forgotten; zero while running
	// or when kept forever.
	expires time.Time
}

// memStoreStateOf returns the run state kept beside pool (see
// lock.Shared), shared by every store over the pool.
func memStoreStateOf(pool *lock.MemoryLockPool) *memStoreState {
	return lock.Shared(pool, "worker", func() *memStoreState {
		return &memStoreState{batches: map[string]*memBatch{}, runners: map[string]Runner{}, rate: map[int64]ThroughputPoint{}}
	})
}

// NewMemoryStore keeps run state in this process beside an in-memory pool.
func NewMemoryStore(pool *lock.MemoryLockPool) *MemoryStore {
	keys := keyspace.Memory()
	return &MemoryStore{pool: pool, st: memStoreStateOf(pool), keys: keys, loop: failcount.Of(pool, keys.Failures())}
}

// enter takes the state's mutex after checking ctx, and forgets the
// batches whose retain period has passed, with their shared todo set and
// failure counts. The caller unlocks.
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
				s.forget(id)
			case st.nextExpiry.IsZero() || b.expires.Before(st.nextExpiry):
				st.nextExpiry = b.expires
			}
		}
	}
	return now, nil
}

// forget drops batch id's shared state, as its keys expiring do on Redis.
func (s *MemoryStore) forget(id string) {
	k := s.keys.Batch(id)
	memberset.Forget(s.pool, k.Todo)
	failcount.Forget(s.pool, k.Failures)
}

// counts is the failure counts of scope: "" for loop mode, else a batch
// id.
func (s *MemoryStore) counts(scope string) *failcount.Counts {
	if scope == "" {
		return s.loop
	}
	return failcount.Of(s.pool, s.keys.Batch(scope).Failures)
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
	return s.counts(scope).Get(item), nil
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
	return s.counts(scope).Apply(item, true), nil
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
	s.counts(scope).Apply(item, false)
	return nil
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
	// A todo set or counts left from an earlier batch of this id must not
	// carry over.
	s.forget(id)
	b := &memBatch{todo: memberset.Of(s.pool, s.keys.Batch(id).Todo), errors: map[string]string{}, started: msClock(now)}
	for item, err := range s.pool.Items(ctx) {
		if err != nil {
			s.forget(id)
			return Progress{}, fmt.Errorf("worker: %s %s: %w", op, batchSubject(id), err)
		}
		b.todo.Add(item)
	}
	b.total = int64(b.todo.Len())
	if b.total == 0 {
		// An empty pool makes no batch (as start.lua).
		s.forget(id)
		return Progress{Started: b.started, Finished: b.started}, nil
	}
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
	return b.todo.Sample(clampPending(n)), nil
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
	return b.todo.Has(item), nil
}

// Finish implements [Store]. A retain below zero keeps the batch forever,
// as 0 does.
//
// The lease is checked with the pool's LockValue while the store's mutex
// is held, and the item is moved under the same hold. The pool may change
// between the two steps, but not in a way that matters: if the lease was
// current at the check, any other lease on the item is granted after it
// ends, and so after the item left todo: the allocator's grant from todo
// (AcquireOptions.From) no longer sees it, and a worker's IsPending waits
// for this mutex and sees it moved. A lease that ends right after the
// check had still run the item to this result.
func (s *MemoryStore) Finish(ctx context.Context, id string, lease *allocator.Lease, ok bool, retain time.Duration, rec *allocator.RunRecord) (bool, error) {
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
	if !b.todo.Has(lease.Item()) {
		return false, nil
	}
	v, held, err := s.pool.LockValue(ctx, lease.Item())
	if err != nil {
		return false, fmt.Errorf("worker: %s %s: %w", op, subject, err)
	}
	if !held || v != lease.Value() {
		return false, nil
	}
	b.todo.Remove(lease.Item())
	if ok {
		b.done++
	} else {
		b.failed++
		e := ""
		if rec != nil {
			e = history.Head(rec.Error, history.MaxError)
		}
		b.errors[lease.Item()] = e
	}
	if rec != nil {
		s.history().Write(lease.Item(), lease.Token(), history.Entry(*rec), now)
	}
	s.counts(id).Apply(lease.Item(), false)
	s.st.finishIfDone(b, now, retain)
	return true, nil
}

// DropRemoved implements [Store].
// RetryFailed implements [Store].
func (s *MemoryStore) RetryFailed(ctx context.Context, id string) (int, error) {
	const op = "RetryFailed"
	if err := checkBatch(op, id); err != nil {
		return 0, err
	}
	if _, err := s.enter(ctx, op, batchSubject(id)); err != nil {
		return 0, err
	}
	defer s.st.mu.Unlock()
	b := s.st.batches[id]
	if b == nil || len(b.errors) == 0 {
		return 0, nil
	}
	n := len(b.errors)
	for it := range b.errors {
		b.todo.Add(it)
	}
	b.errors = map[string]string{}
	b.failed = 0
	b.finished, b.expires = time.Time{}, time.Time{}
	return n, nil
}

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
		if !b.todo.Has(it) {
			continue
		}
		member, err := s.pool.Contains(ctx, it)
		if err != nil {
			return dropped, fmt.Errorf("worker: %s %s: %w", op, itemSubject(id, it), err)
		}
		if member {
			continue
		}
		b.todo.Remove(it)
		b.total--
		s.counts(id).Apply(it, false)
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

// msClock is t in whole milliseconds without its monotonic reading, as
// the Redis backend reports times.
func msClock(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()) }

// finishIfDone marks b finished once nothing is pending, and schedules its
// expiry after retain (kept forever when retain <= 0), as finish.lua and
// drop.lua do. The caller holds st.mu.
func (st *memStoreState) finishIfDone(b *memBatch, now time.Time, retain time.Duration) {
	if b.todo.Len() > 0 {
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
