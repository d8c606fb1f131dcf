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
// Blocked Acquire calls register as waiters, oldest first; a release wakes
// a bounded number of them (Config.WakeWaiters) through one pub/sub channel
// per allocator process and keeps the item for the first for
// Config.HandoffWindow, so callers looping straight back cannot starve
// them. Otherwise a waiter sleeps until the earliest time the server says
// an item may become available. Two cases need a bounded re-check instead:
// locks taken and removed outside the allocator (pkg/lock or Python users)
// publish nothing, so while such locks are known waiters look again every
// second; and Config.MaxWait (5s) bounds any sleep in case a wake-up was
// lost with a dropped connection.
//
// Items added to the pool by any client are found by a sync step every
// Config.SyncInterval: at once when the member count grows, and by a
// rolling scan (about 1,000 members per interval, fleet-wide) or the full
// sweep every Config.FullSyncInterval when an addition is hidden by an
// equal removal. Removed items are never handed out: every candidate's
// membership is checked when it is chosen.
package allocator
