// Package keyed keeps state beside a memory pool by Redis key name: the
// in-memory twins of keys that more than one package reads and writes
// (internal/failcount's counts, internal/memberset's sets), so that each
// package reaching for a key, say a batch's todo SET, gets the same value,
// and forgetting the key drops it for all, as an expired key does.
package keyed

import (
	"fmt"
	"sync"

	"github.com/lockpool/lockpool/pkg/lock"
)

// registry is one kind's values by key. Its mutex is taken after any
// other lock of its callers, and calls nothing.
type registry struct {
	mu sync.Mutex
	m  map[string]any
}

func registryOf(pool *lock.MemoryLockPool, kind string) *registry {
	return lock.Shared(pool, "keyed:"+kind, func() *registry { return &registry{m: map[string]any{}} })
}

// Of returns the value of kind kept beside pool under key, made by create
// on first use.
func Of[T any](pool *lock.MemoryLockPool, kind, key string, create func() *T) *T {
	r := registryOf(pool, kind)
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.m[key]; ok {
		return as[T](kind, key, v)
	}
	t := create()
	r.m[key] = t
	return t
}

// Lookup returns the value of kind kept under key, if any, without making
// one.
func Lookup[T any](pool *lock.MemoryLockPool, kind, key string) (*T, bool) {
	r := registryOf(pool, kind)
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.m[key]
	if !ok {
		return nil, false
	}
	return as[T](kind, key, v), true
}

// Forget drops the value of kind kept under key: a later Of makes a new
// one.
func Forget(pool *lock.MemoryLockPool, kind, key string) {
	r := registryOf(pool, kind)
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, key)
}

// as is v as a *T; another type is a programming error.
func as[T any](kind, key string, v any) *T {
	t, ok := v.(*T)
	if !ok {
		panic(fmt.Sprintf("keyed: %s %q is a %T, not a %T", kind, key, v, t))
	}
	return t
}
