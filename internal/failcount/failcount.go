// Package failcount keeps the consecutive failures of a memory pool's
// items: the in-memory counterpart of a failure count HASH of pkg/keyspace,
// "<base>|run:failures" in loop mode or "<base>|batch:<id>:failures" in a
// batch, named by that key (with keyspace.Memory's base). pkg/allocator's
// Lease.Next changes and reads it in the step that ends one lease and
// grants the next, as next.lua does on Redis; pkg/worker's MemoryStore
// reads and writes it as its failure counts. Both reach the same Counts
// through internal/keyed.
package failcount

import (
	"sync"

	"github.com/lockpool/lockpool/internal/keyed"
	"github.com/lockpool/lockpool/pkg/lock"
)

// Counts is item -> consecutive failures. It is safe for concurrent use;
// its mutex is taken last, after any other lock of its callers.
type Counts struct {
	mu sync.Mutex
	m  map[string]int
}

// Of returns the counts kept beside pool under key, made empty on first
// use.
func Of(pool *lock.MemoryLockPool, key string) *Counts {
	return keyed.Of(pool, "failures", key, func() *Counts { return &Counts{m: map[string]int{}} })
}

// Lookup returns the counts kept under key, if any, without making them.
func Lookup(pool *lock.MemoryLockPool, key string) (*Counts, bool) {
	return keyed.Lookup[Counts](pool, "failures", key)
}

// Forget drops the counts kept under key, as Redis drops an expired or
// deleted HASH: a later Of starts from none.
func Forget(pool *lock.MemoryLockPool, key string) { keyed.Forget(pool, "failures", key) }

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
