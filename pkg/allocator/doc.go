// Package allocator hands out free items of a lock pool to workers as
// fenced, expiring leases: "give me any free item, and tell me if I lose
// it".
//
// It draws from a pkg/lock pool and shares its keyspace: a lease is the
// item's ordinary lock key holding "<owner>#<token>" with the lease as its
// TTL, so an allocated item is locked to pkg/lock users and Python services
// on the same keys, and an item they lock directly is never handed out.
//
// Beside the pool it keeps an availability index (a sorted set of item ->
// the server time from which it is available: when it was freed, when its
// lease ends, or when its quarantine ends). Choosing an item is one bounded
// script that takes the lowest score not in the future, so the item free
// longest goes first, an item whose holder crashed is allocatable the
// moment its lease expires, and the cost does not grow with the pool.
// Every time comes from the Redis server's clock.
//
// Each lease carries a fencing token, strictly increasing per pool across
// all hosts. Pass it to whatever the work writes so that writes from a
// holder whose lease has passed can be refused: a process that stalls
// (GC pause, SIGSTOP) cannot notice its own lease expiring.
//
// Blocked Acquire calls register as waiters; a release wakes a bounded
// number of them through one pub/sub channel per allocator process, and
// otherwise a waiter sleeps until the earliest lease deadline.
//
// Work in progress: see the allocator issue for what is still open.
package allocator
