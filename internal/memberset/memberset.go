// Package memberset keeps sets of item names beside a memory pool: the
// in-memory counterpart of a SET of pkg/keyspace other than the pool's
// members, such as a batch's "<base>|batch:<id>:todo", named by that key
// (with keyspace.Memory's base). pkg/worker's MemoryStore keeps a batch's
// pending items in one, and pkg/allocator's memory grant samples it for
// AcquireOptions.From, as next.lua samples the SET on Redis. Both reach the
// same Set through internal/keyed.
package memberset

import (
	"math/rand/v2"
	"sync"

	"github.com/lockpool/lockpool/internal/keyed"
	"github.com/lockpool/lockpool/pkg/lock"
)

// Set is a set of items with O(1) add, remove, membership and random
// draw. It is safe for concurrent use; its mutex is taken last, after any
// other lock of its callers.
type Set struct {
	mu sync.Mutex
	// items holds the members; at[item] is the item's index in it.
	items []string
	at    map[string]int
}

// Of returns the set kept beside pool under key, made empty on first use.
func Of(pool *lock.MemoryLockPool, key string) *Set {
	return keyed.Of(pool, "sets", key, func() *Set { return &Set{at: map[string]int{}} })
}

// Lookup returns the set kept under key, if any, without making one: a
// missing set reads as empty, as a missing Redis key does.
func Lookup(pool *lock.MemoryLockPool, key string) (*Set, bool) {
	return keyed.Lookup[Set](pool, "sets", key)
}

// Forget drops the set kept under key, as Redis drops an expired or
// deleted key.
func Forget(pool *lock.MemoryLockPool, key string) { keyed.Forget(pool, "sets", key) }

// Add adds item and reports whether it was new.
func (s *Set) Add(item string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.at[item]; ok {
		return false
	}
	s.at[item] = len(s.items)
	s.items = append(s.items, item)
	return true
}

// Remove takes item out and reports whether it was there, by swapping the
// last member into its place.
func (s *Set) Remove(item string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.at[item]
	if !ok {
		return false
	}
	last := len(s.items) - 1
	s.items[i] = s.items[last]
	s.at[s.items[i]] = i
	s.items[last] = ""
	s.items = s.items[:last]
	delete(s.at, item)
	return true
}

// Has reports whether item is a member.
func (s *Set) Has(item string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.at[item]
	return ok
}

// Len is how many members the set has.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items)
}

// Sample returns up to n distinct members in random order
// (SRANDMEMBER with a positive count).
func (s *Set) Sample(n int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n >= len(s.items) {
		out := append([]string{}, s.items...)
		rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		return out
	}
	// n < len(items): draw distinct indexes; callers ask for a few.
	picked := make(map[int]struct{}, n)
	out := make([]string, 0, n)
	for len(out) < n {
		i := rand.IntN(len(s.items))
		if _, dup := picked[i]; dup {
			continue
		}
		picked[i] = struct{}{}
		out = append(out, s.items[i])
	}
	return out
}
