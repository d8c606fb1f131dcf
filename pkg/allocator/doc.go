// Package allocator hands out free items of a lock pool to workers as
// fenced, expiring leases: "give me any free item, and tell me if I lose
// it".
//
// It draws from a pkg/lock pool and shares its keyspace: a lease is the
// item's ordinary lock key holding "<owner>#<token>" with the lease as its
// TTL, so an allocated item is locked to pkg/lock users and Python services
// on the same keys, and an item they lock directly is never handed out.
//
// Beside the pool it keeps an availability index: item -> the server time
// from which it is available (when it was freed, when its lease ends, or
// when its quarantine ends). Choosing an item is one bounded script that
// takes the lowest score not in the future, so the item free longest goes
// first, an item whose holder crashed is allocatable the moment its lease
// expires, and the cost does not grow with the pool. Every time comes from
// the Redis server's clock. In Redis the index is kept in sorted sets of
// about 20-40 items each, addressed by the item's hash, plus one sorted set
// of each bucket's earliest time (scripts/index.lua): small sorted sets are
// stored as listpacks, so the index costs ~16-25 bytes an item where one
// large sorted set costs ~100.
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
// # Dataset discontinuities
//
// One holder per item rests on Redis keeping every grant and refresh it
// acknowledged. A discontinuity of the dataset breaks that: a restart from
// an RDB snapshot or from an AOF that lost its last second, a replica
// promoted by Sentinel before it received the last writes, an operator's
// restore, keys deleted or evicted. Every script that grants, refreshes or
// syncs checks the dataset's identity (the server's replication id, INFO
// replication, about 4 µs; and its run id when that changed) against the
// pool's epoch record (pkg/keyspace). On a mismatch, or a missing record
// where the pool was used before, it starts a new generation:
//   - nothing is granted until the quiet period ends, one longest lease TTL
//     after the discontinuity was noticed (the TTLs in use are recorded in
//     the epoch record, and every process that calls during the quiet
//     period lengthens it to its own longest TTL): every lease granted
//     before it has then expired, or was confirmed on the new dataset by a
//     refresh; TryAcquire reports ErrQuietPeriod, Acquire waits;
//   - leases that survived in the dataset keep refreshing (a refresh is not
//     a grant); lost ones are reported with LostDiscontinuity;
//   - the fencing counter is lifted to max(counter + 1,000,000, server time
//     in µs), above every token issued before: tokens never repeat or go
//     back, assuming fewer than a million tokens were lost, or that tokens
//     are issued at under a million a second on average since the counter
//     was seeded from the clock, and that a promoted replica's clock is not
//     behind the old master's by more than that margin.
//
// Every allocator runs a sync step per SyncInterval, so a discontinuity is
// noticed within one even when nobody acquires. Config.MinReplicasAcked
// makes grants and refreshes wait for replicas (WAIT), so that a failover
// to an acknowledging replica loses no confirmed lease.
//
// A server that may evict keys (maxmemory with a policy other than
// noeviction) is refused by NewRedis unless Config.AllowEviction; on a
// Redis Cluster the pool's prefix must carry a hash tag (see CheckServer).
//
// Items added to the pool by any client are found by a sync step every
// Config.SyncInterval: at once when the member count grows, and by a
// rolling scan (about 1,000 members per interval, fleet-wide) or the full
// sweep every Config.FullSyncInterval when an addition is hidden by an
// equal removal. Removed items are never handed out: every candidate's
// membership is checked when it is chosen.
package allocator
