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
// The default suffix is "lock" for a [Locker] and "lock-pool" for a [Pool].
//
// The spec's operations are all here ([Locker.Update], [Locker.Lock],
// [Locker.RLock], the forceful [Locker.Unlock] and the twelve conditional
// set/delete operations). Update and Unlock are forceful by design: a holder
// that stalled past its TTL can clobber the next holder with them. Holders
// should use the safe operations instead: [Locker.Refresh] extends a lock
// only while it still holds the caller's value, and [Locker.Release] deletes
// it only then.
//
// TTLs are [time.Duration] values with millisecond precision. A TTL below one
// millisecond is an error ([ErrInvalidTTL]); a lock that never expires must be
// asked for by name with [NoExpiry].
//
// Every error a method returns is, or wraps, one of this package's sentinel
// errors or the Redis client's error, with the operation and the full Redis
// key in its text; use [errors.Is] to tell them apart.
package lock
