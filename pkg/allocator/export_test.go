package allocator

import "github.com/lockpool/lockpool/pkg/lock"

// QueuedWaiters is how many Acquire calls of the allocators over pool wait
// for a wake-up: the length of the memory store's twin of the waiter ZSET,
// which the black-box tests read through the Redis client for the Redis
// store.
func QueuedWaiters(pool *lock.MemoryLockPool) int {
	st := memoryStateOf(pool)
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.queue.Len()
}
