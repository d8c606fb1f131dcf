// Package keyspace names every Redis key and pub/sub channel of a lockpool
// pool, in one place. Nothing else in lockpool concatenates or trims key
// names: the lock pool, the allocator, the worker run state and the runner
// all ask a [Pool] for theirs.
//
// A pool is named by a prefix and a suffix (the Python package's
// redis_allocator names its keys the same way), and every key starts with
// its base "<prefix>|<suffix>":
//
//	key                             type     owner      holds
//	<base>:<item>                   STRING   lock       the holder's value; the key's TTL is the lease
//	<base>|pool                     SET      lock       the pool's member items
//	<base>|pool:assign:<random>     SET      lock       an Assign's staging set (1 minute TTL)
//	<base>|epoch                    HASH     allocator  the dataset's identity and quiet period (see below)
//	<base>|alloc:idx                ZSET     allocator  the availability index's heads: bucket -> its earliest ms
//	<base>|alloc:idx:<b>            ZSET     allocator  bucket <b> of the index: item -> server ms from which it is available
//	<base>|alloc:idx:count          HASH     allocator  items -> how many items the index's buckets hold
//	<base>|alloc:index              ZSET     allocator  the index before it had buckets: emptied by sync steps
//	<base>|alloc:fence              STRING   allocator  the fencing token counter
//	<base>|alloc:bindings           HASH     allocator  binding name -> item it had last
//	<base>|alloc:waiters            ZSET     allocator  "<proc>:<waiter>" -> ms registered
//	<base>|alloc:reserved           HASH     allocator  waiter -> item a release handed to it
//	<base>|alloc:foreign            ZSET     allocator  items seen held by locks it did not grant
//	<base>|alloc:sync               HASH     allocator  sweep cursors
//	<base>|alloc:wake:<proc>        channel  allocator  sharded pub/sub: releases wake the waiters of process <proc>
//	<base>|alloc:control            HASH     allocator  fleet-wide controls: paused -> server ms since the pool is paused
//	<base>|alloc:wake:cancel        channel  allocator  sharded pub/sub: "<item> <token>", a lease an operator cancelled, to its holder
//	<base>|run:failures             HASH     worker     item -> consecutive failures (loop mode)
//	<base>|batch:<id>:todo          SET      worker     a batch's pending items
//	<base>|batch:<id>:done          SET      worker     a batch's items done
//	<base>|batch:<id>:failed        SET      worker     a batch's items failed
//	<base>|batch:<id>:failures      HASH     worker     item -> consecutive failures in the batch
//	<base>|batch:<id>:meta          HASH     worker     total, started_ms, finished_ms, gen, rollbacks
//	<base>|batch:<id>:errors        HASH     worker     failed item -> its last error
//	<base>|hist:last                HASH     worker     item -> its last run's outcome (see below)
//	<base>|hist:expiry              ZSET     worker     item -> server ms its record's retention ends
//	<base>|hist:tail:<item>         STRING   worker     the stderr tail of item's last failed run (TTL: the retention)
//	<base>|fleet:runners            ZSET     worker     registered process id -> server ms its registration expires
//	<base>|fleet:info               HASH     worker     registered process id -> what it reported at its last heartbeat
//	<base>|fleet:rate               HASH     worker     10 s bucket mod 360 -> "<bucket>:<grants>:<runs>" of the fleet, last hour
//	<base>|runner:items             STRING   runner     set once the runner added pool.items
//
// (TestDocumentedLayout checks this table against the methods below.)
//
// Two groups of keys are bounded without anyone deleting them. Item
// history: hist:last and hist:expiry hold one entry per item whose last
// run's record is within its retention (every write drops up to a few entries older
// than it, and both keys expire a retention after the last write); a
// tail key exists only for an item whose last failure is within the
// retention, and expires on its own. The runner registry: fleet:runners
// and fleet:info hold one entry per process whose heartbeat has not
// expired, and those of processes that died since the last few heartbeats
// (every heartbeat and every read drop up to 16 expired ones; both keys
// expire with the latest heartbeat), so neither grows with the number of
// processes that ever ran. The fleet's throughput ring, fleet:rate, has
// one field per 10-second bucket of an hour (360 at most, each bucket's
// field overwritten an hour later) and expires an hour after the last
// heartbeat that counted a grant or a run.
//
// The epoch HASH records the Redis dataset the pool's state lives in (the
// server's replication id), a generation counter bumped at every
// discontinuity (restart, failover, restore), and until when no item may be
// granted after one; see pkg/allocator.
//
// # Redis Cluster
//
// Lockpool's scripts touch several keys of a pool at once, and "any free
// item" cannot name its lock key before the script runs, so on a Redis
// Cluster every key of a pool must live in one hash slot. That is the case
// when the prefix carries a hash tag: a "{", then at least one character,
// then a "}", as in "{acme}" or "jobs:{acme}". Redis hashes only the text of
// the first such tag, and since every key starts with the prefix, every key
// and channel of the pool hashes to the tag's slot. A Python service using
// the same prefix sees the same keys: the tag is part of the prefix.
package keyspace

import (
	"strconv"
	"strings"
)

// Pool names the keys of one pool. The zero value is not usable; create it
// with New.
type Pool struct {
	prefix, suffix, base string
}

// New returns the keyspace of the pool "<prefix>|<suffix>". It does not
// validate: pkg/lock's Config does (non-empty prefix, no NUL byte, length).
func New(prefix, suffix string) Pool {
	return Pool{prefix: prefix, suffix: suffix, base: prefix + "|" + suffix}
}

// Prefix is the pool's prefix.
func (p Pool) Prefix() string { return p.prefix }

// Suffix is the pool's suffix.
func (p Pool) Suffix() string { return p.suffix }

// Base is "<prefix>|<suffix>", the start of every key of the pool.
func (p Pool) Base() string { return p.base }

// LockPrefix is what every lock key starts with: "<base>:".
func (p Pool) LockPrefix() string { return p.base + ":" }

// Lock is the lock key of item (or of a plain lock's key).
func (p Pool) Lock(item string) string { return p.base + ":" + item }

// Members is the pool's member SET.
func (p Pool) Members() string { return p.base + "|pool" }

// Staging is the staging SET of one Assign, named by a random id.
func (p Pool) Staging(id string) string { return p.base + "|pool:assign:" + id }

// Epoch is the HASH recording the dataset the pool's state lives in.
func (p Pool) Epoch() string { return p.base + "|epoch" }

// Index is the heads ZSET of the allocator's availability index (bucket
// number -> the earliest time in the bucket); the buckets and the item
// count are keys under it: see IndexBucket and IndexCount, and
// pkg/allocator's scripts/index.lua for the layout.
func (p Pool) Index() string { return p.base + "|alloc:idx" }

// IndexBucket is bucket b of the allocator's availability index: a small
// ZSET, item -> server ms from which it is available.
func (p Pool) IndexBucket(b int) string { return p.Index() + ":" + strconv.Itoa(b) }

// IndexCount is the HASH whose field "items" counts the items in the
// index's buckets.
func (p Pool) IndexCount() string { return p.Index() + ":count" }

// LegacyIndex is the availability index of lockpool before its index had
// buckets: one ZSET, item -> ms. The allocator's sync steps empty it.
func (p Pool) LegacyIndex() string { return p.base + "|alloc:index" }

// Fence is the allocator's fencing token counter.
func (p Pool) Fence() string { return p.base + "|alloc:fence" }

// Bindings is the allocator's binding HASH.
func (p Pool) Bindings() string { return p.base + "|alloc:bindings" }

// Waiters is the allocator's waiter ZSET.
func (p Pool) Waiters() string { return p.base + "|alloc:waiters" }

// Reserved is the allocator's hand-off HASH.
func (p Pool) Reserved() string { return p.base + "|alloc:reserved" }

// Foreign is the allocator's ZSET of items held by foreign locks.
func (p Pool) Foreign() string { return p.base + "|alloc:foreign" }

// SyncState is the allocator's sweep cursor HASH.
func (p Pool) SyncState() string { return p.base + "|alloc:sync" }

// WakePrefix is what every wake-up channel starts with.
func (p Pool) WakePrefix() string { return p.base + "|alloc:wake:" }

// Wake is the sharded pub/sub channel of the allocator process proc.
func (p Pool) Wake(proc string) string { return p.WakePrefix() + proc }

// Control is the allocator's HASH of fleet-wide controls (a paused pool).
func (p Pool) Control() string { return p.base + "|alloc:control" }

// Cancels is the sharded pub/sub channel on which a cancelled lease's
// holder is told: every allocator process of the pool listens. It is one
// of the wake channels (a process id is 16 hex digits, never "cancel"), so
// an ACL rule granting the pool's wake channels grants it too.
func (p Pool) Cancels() string { return p.WakePrefix() + "cancel" }

// Failures is the worker's loop-mode failure count HASH.
func (p Pool) Failures() string { return p.base + "|run:failures" }

// Batch holds the keys of one batch.
type Batch struct {
	Todo, Done, Failed, Failures, Meta, Errors string
}

// Batch returns the keys of batch id. Every batch key ends in ":<name>"
// with a name that has no colon, so two ids never share a key.
func (p Pool) Batch(id string) Batch {
	b := p.base + "|batch:" + id + ":"
	return Batch{Todo: b + "todo", Done: b + "done", Failed: b + "failed", Failures: b + "failures", Meta: b + "meta", Errors: b + "errors"}
}

// BatchPattern is a SCAN MATCH pattern for every batch key of the pool,
// with the base glob-escaped.
func (p Pool) BatchPattern() string { return GlobEscape(p.base) + "|batch:*" }

// History is the HASH of every item's last outcome.
func (p Pool) History() string { return p.base + "|hist:last" }

// HistoryExpiry is the ZSET of when each item's record's retention ends,
// by which the history's writers drop what is past it.
func (p Pool) HistoryExpiry() string { return p.base + "|hist:expiry" }

// TailPrefix is what every stderr tail key starts with.
func (p Pool) TailPrefix() string { return p.base + "|hist:tail:" }

// Tail is the STRING holding the stderr tail of item's last failed run.
func (p Pool) Tail(item string) string { return p.TailPrefix() + item }

// Runners is the runner registry's ZSET: process ids by when their
// registration expires.
func (p Pool) Runners() string { return p.base + "|fleet:runners" }

// RunnerInfo is the runner registry's HASH: process id -> its report.
func (p Pool) RunnerInfo() string { return p.base + "|fleet:info" }

// Throughput is the fleet's throughput ring: grants and finished runs
// per 10-second bucket over the last hour, added to by heartbeats.
func (p Pool) Throughput() string { return p.base + "|fleet:rate" }

// ItemsMarker is the key the runner sets once it added pool.items.
func (p Pool) ItemsMarker() string { return p.base + "|runner:items" }

// HashTag returns the text of the prefix's hash tag and true when every
// key of the pool hashes to one Redis Cluster slot (see the package
// comment), or "" and false.
func (p Pool) HashTag() (string, bool) { return HashTag(p.prefix) }

// HashTag returns the hash tag Redis Cluster would use for every key that
// starts with prefix, and true, or "" and false when keys starting with
// prefix may hash to different slots: the prefix has no "{", or its first
// "{" is not closed within the prefix, or the tag is empty ("{}"), in which
// case Redis hashes the whole key.
func HashTag(prefix string) (string, bool) {
	open := strings.IndexByte(prefix, '{')
	if open < 0 {
		return "", false
	}
	end := strings.IndexByte(prefix[open+1:], '}')
	if end <= 0 { // not closed within the prefix, or "{}"
		return "", false
	}
	return prefix[open+1 : open+1+end], true
}

// Slot is the Redis Cluster hash slot of key (CRC16/XMODEM of the key, or
// of its hash tag, modulo 16384), as the server's CLUSTER KEYSLOT computes it.
func Slot(key string) int {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			key = key[open+1 : open+1+end]
		}
	}
	return int(crc16(key) & 16383)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial 0), Redis Cluster's.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// GlobEscape escapes s for a Redis glob pattern (SCAN MATCH, KEYS), so
// that it matches only itself.
func GlobEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(`*?[]\^-`, s[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Memory is the keyspace an in-memory pool (pkg/lock's MemoryLockPool,
// which has no prefix) names its state by: the memory twins of the keys
// above that packages share (a batch's todo SET, failure count HASHes)
// are kept under these names, so the allocator and the worker store agree
// on them as they do on Redis.
func Memory() Pool { return New("memory", "pool") }
