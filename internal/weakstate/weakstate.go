// Package weakstate keeps state beside objects it does not own: one value
// per object, shared by everyone who asks with the same object, and
// forgotten once the object is garbage collected. The in-memory backends
// use it so that every allocator (or store) over one MemoryLockPool shares
// one state, as Redis clients over the same keys do.
package weakstate

import (
	"runtime"
	"sync"
	"weak"
)

// Table maps objects of type K, by identity, to values of type V. The keys
// are weak: a value must not reference its key, or the key never dies.
type Table[K, V any] struct {
	mu sync.Mutex
	m  map[weak.Pointer[K]]*V
}

// Get returns the value of key, made with create on first use.
func (t *Table[K, V]) Get(key *K, create func() *V) *V {
	wk := weak.Make(key)
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.m[wk]; ok {
		return v
	}
	if t.m == nil {
		t.m = map[weak.Pointer[K]]*V{}
	}
	v := create()
	t.m[wk] = v
	runtime.AddCleanup(key, func(wk weak.Pointer[K]) {
		t.mu.Lock()
		defer t.mu.Unlock()
		delete(t.m, wk)
	}, wk)
	return v
}

// Holds reports whether the object behind key still has a value, for
// tests that check a collected object's state is dropped.
func (t *Table[K, V]) Holds(key weak.Pointer[K]) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.m[key]
	return ok
}
