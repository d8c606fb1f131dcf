// Package failcount keeps the consecutive failures of a memory pool's items
// in loop mode: the in-memory counterpart of the pool's "<base>|run:failures"
// HASH (pkg/keyspace). pkg/allocator's Lease.Next changes and reads it in
// the step that ends one lease and grants the next, as next.lua does on
// Redis; pkg/worker's MemoryStore reads and writes it as its loop-mode
// failure counts. Both reach the same Counts through lock.Shared.
package failcount

import (
	"sync"

	"github.com/lockpool/lockpool/pkg/lock"
)

// Counts is item -> consecutive failures. It is safe for concurrent use;
// its mutex is taken last, after any other lock of its callers.
type Counts struct {
	mu sync.Mutex
	m  map[string]int
}

// Of returns the counts kept beside pool.
func Of(pool *lock.MemoryLockPool) *Counts {
	return lock.Shared(pool, "failures", func() *Counts { return &Counts{m: map[string]int{}} })
}

// Get returns item's count.
func (c *Counts) Get(item string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[item]
}

// Apply adds one to item's count when add, and forgets it otherwise; it
// returns the new count.
func (c *Counts) Apply(item string, add bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !add {
		delete(c.m, item)
		return 0
	}
	c.m[item]++
	return c.m[item]
}
