// Package lock provides expiring, owner-valued locks and lock pools with a
// Redis backend and an in-memory backend that behave the same.
//
// It is the Go version of the lock module of the Python package
// redis_allocator. A lock is a key holding an owner value with a time to
// live: whoever sets the key owns it until it expires, is refreshed, or is
// removed. A lock pool adds a set of member items, so a fleet can ask which
// items exist and which of them are locked.
//
// The Redis keyspace is byte-compatible with the Python package, so Go and
// Python services sharing a Redis honour each other's locks:
//
//	<prefix>|<suffix>:<key>   STRING holding the owner value, TTL = the lease
//	<prefix>|<suffix>|pool    SET of pool members (pools only)
//
// pkg/keyspace defines these and every other key lockpool keeps beside a
// pool; [RedisLock.Keys] returns a lock's.
//
// The default suffix is "lock" for a [Locker] and "lock-pool" for a [Pool].
//
// # The spec's API
//
// Every operation of the Python package's BaseLock and BaseLockPool is a
// method of [RedisLock] and [MemoryLock] (and of their pools):
//
//	Python                         Go
//	lock(key, value, timeout)      Locker.Lock
//	update(key, value, timeout)    Locker.Update      (forceful)
//	rlock(key, value, timeout)     Locker.RLock       (re-entrant)
//	unlock(key)                    Locker.Unlock      (forceful)
//	lock_value(key)                Locker.LockValue
//	key_status(key, timeout)       Ops.KeyStatus
//	is_locked(key)                 Ops.IsLocked
//	setgt/setlt/setge/setle/...    Ops.SetGT, SetLT, SetGE, SetLE, SetEQ, SetNE
//	delgt/dellt/delge/delle/...    Ops.DelGT, DelLT, DelGE, DelLE, DelEQ, DelNE
//	extend/shrink/assign/clear     Pool.Extend, Shrink, Assign, Clear
//	items_locked_status            Pool.ItemLocks
//	health_check                   Pool.HealthCheck
//
// [Locker] holds the primitives a backend implements, [Ops] the operations
// written once over them (both backends embed it), and [Pool] adds the
// member set. Beyond the spec, holders get [Locker.Refresh], which extends
// a lock only while it still holds the caller's value, [Locker.Release],
// which deletes it only then, and [Locker.Replace], the holder's
// compare-and-set. Update and Unlock are forceful by design: a holder that
// stalled past its TTL can clobber the next holder with them, so holders
// should use the safe operations instead.
//
// TTLs are [time.Duration] values with millisecond precision. A TTL below one
// millisecond is an error ([ErrInvalidTTL]); a lock that never expires must be
// asked for by name with [NoExpiry].
//
// Every error a method returns is, or wraps, one of this package's sentinel
// errors or the Redis client's error, with the operation and the full Redis
// key in its text; use [errors.Is] to tell them apart.
package lock
