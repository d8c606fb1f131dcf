package main

// The pool's items can be walked two ways. Its member SET (SSCAN) names
// every item, free or held, so the walk grows with the pool. The
// keyspace's lock keys (SCAN MATCH "<base>:*") name only the held items
// (an item is free exactly when it has no lock key), so that walk grows
// with the database's keys: at 1,000,000 members of which 50 are held it
// reads 50 locks, not a million. Counting the pool's states, and every
// search that only held items can match (leased, cooldown, quarantine,
// locked, error; a runner's leases), take the lock keys when the server
// lets the runner SCAN and the database holds at most half as many keys as
// the pool has members (planWalk).

import (
	"cmp"
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/keyspace"
	"github.com/lockpool/lockpool/pkg/lock"
)

// maxScanCount is the largest COUNT of a SCAN or SSCAN step, the one of a
// status read's walk of the lock keys: about that many keys per step,
// each step some 10 ms of the server's time at most (a step holds up
// every other client of the server while it runs).
const maxScanCount = 10_000

// walkPlan is how the pool's items are to be walked: its member count,
// and where SCAN runs when the lock keys are to be walked.
type walkPlan struct {
	members int64
	// scanner runs SCAN over the lock keys: the pool's master on a
	// cluster, else the client; nil when the members are walked instead.
	scanner redis.Cmdable
}

// planWalk reads the pool's size and the database's, and picks the walk:
// the lock keys unless the server refuses DBSIZE (an ACL user without
// +dbsize +scan, see README: then no SCAN is tried) or the database holds
// more than half as many keys as the pool has members. Visiting a key in
// SCAN costs the server about what visiting a member in SSCAN does, but a
// held member's lock costs more from the keyspace walk (SMISMEMBER besides
// GET and PTTL): up to 1.6 times as much per key as the members' walk per
// member, measured with nearly every key a held member's lock. With at
// most half as many keys, the keyspace walk is never the slower one, and
// takes a small part of the members' walk's time when few items are held.
func planWalk(ctx context.Context, client redis.UniversalClient, pool *lock.RedisLockPool) (walkPlan, error) {
	var plan walkPlan
	node, err := poolNode(ctx, client, pool.Keys())
	if err != nil {
		return plan, err
	}
	if plan.members, err = pool.Len(ctx); err != nil { // names the key, and a wrong type
		return plan, err
	}
	size, err := node.DBSize(ctx).Result()
	var refused redis.Error
	switch {
	case errors.As(err, &refused): // NOPERM: walk the members
	case err != nil:
		return plan, err
	case 2*size <= plan.members:
		plan.scanner = node
	}
	return plan, nil
}

// poolNode is the server that holds the pool's keys: on a Redis Cluster
// the master of the pool's slot (every key of a pool lives in it, see
// pkg/keyspace), as SCAN and DBSIZE name no key and a cluster client would
// send them to any node; else the client (a Sentinel client's is the
// master).
func poolNode(ctx context.Context, client redis.UniversalClient, keys keyspace.Pool) (redis.Cmdable, error) {
	if cc, ok := client.(*redis.ClusterClient); ok {
		return cc.MasterForKey(ctx, keys.Members())
	}
	return client, nil
}

// lockPattern is the SCAN MATCH pattern of the lock keys of the items
// whose names match glob ("" for all).
func lockPattern(keys keyspace.Pool, glob string) string {
	return keyspace.GlobEscape(keys.LockPrefix()) + cmp.Or(glob, "*")
}

// scanLocks is one step of the walk of the lock keys: a SCAN step from
// cursor over those matching pattern (lockPattern), then, in a pipelined
// round trip per 1,000 keys, which of their items are members of the
// pool (a lock key of a non-member, or of another pool whose name extends
// this one's, is not the pool's) and the members' lock states. A key
// gone since SCAN named it reads as a free item. It returns the next
// cursor, 0 at the end; SCAN may name a key twice.
func scanLocks(ctx context.Context, client redis.UniversalClient, scanner redis.Cmdable, pool *lock.RedisLockPool, cursor uint64, pattern string, count int64) ([]itemInfo, uint64, error) {
	lockKeys, next, err := scanner.Scan(ctx, cursor, pattern, count).Result()
	if err != nil {
		return nil, 0, err
	}
	var out []itemInfo
	for len(lockKeys) > 0 {
		part := lockKeys[:min(chunk, len(lockKeys))]
		lockKeys = lockKeys[len(part):]
		items := make([]any, len(part))
		for i, k := range part {
			items[i], _ = strings.CutPrefix(k, pool.Keys().LockPrefix())
		}
		pipe := client.Pipeline()
		member := pipe.SMIsMember(ctx, pool.PoolKey(), items...)
		gets := make([]*redis.StringCmd, len(part))
		ttls := make([]*redis.DurationCmd, len(part))
		for i, k := range part {
			gets[i] = pipe.Get(ctx, k)
			ttls[i] = pipe.PTTL(ctx, k)
		}
		if err := execReads(ctx, pipe); err != nil {
			return nil, 0, err
		}
		if err := member.Err(); err != nil {
			return nil, 0, err
		}
		for i, is := range member.Val() {
			if is {
				out = append(out, classify(items[i].(string), gets[i], ttls[i]))
			}
		}
	}
	return out, next, nil
}

// execReads runs a pipeline of reads of items' locks. A server's reply to
// one command (WRONGTYPE at one item's key) is that item's status, read
// from its command; anything else (the connection) fails the pipeline.
func execReads(ctx context.Context, pipe redis.Pipeliner) error {
	if _, err := pipe.Exec(ctx); err != nil {
		var rerr redis.Error // redis.Nil is one
		if !errors.As(err, &rerr) {
			return err
		}
	}
	return nil
}

// classify is an item's state from its lock key's GET and PTTL replies:
// free (no key), error (the key is not a string: WRONGTYPE), leased (a
// lease value), quarantine, cooldown, or locked by something else.
func classify(item string, get *redis.StringCmd, ttl *redis.DurationCmd) itemInfo {
	info := itemInfo{Item: item, Status: "free"}
	v, err := get.Result()
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil:
		info.Status, info.Error = "error", err.Error()
	default:
		info.TTLMillis = ttl.Val().Milliseconds()
		if ttl.Val() < 0 {
			info.TTLMillis = -1
		}
		if owner, token, ok := allocator.ParseLeaseValue(v); ok {
			info.Status, info.Owner, info.Token = "leased", owner, token
		} else if v == allocator.QuarantineValue {
			info.Status = "quarantine"
		} else if v == allocator.CooldownValue {
			info.Status = "cooldown"
		} else {
			info.Status, info.Owner = "locked", v
		}
	}
	return info
}

// countStates counts the pool's members by state into r (whose Items is
// the member count): walking the lock keys when plan says so, else every
// member's lock. Free is what is left, so the counts add up to Items
// even when members change during the walk.
func countStates(ctx context.Context, client redis.UniversalClient, pool *lock.RedisLockPool, plan walkPlan, r *statusReport) error {
	r.Items = plan.members
	if plan.scanner == nil {
		if err := countMembers(ctx, client, pool, r); err != nil {
			return err
		}
	} else {
		// A key SCAN names twice must count once: the held members seen
		// are remembered (a few bytes each, only held ones).
		seen := map[string]struct{}{}
		pattern := lockPattern(pool.Keys(), "")
		for cursor := uint64(0); ; {
			infos, next, err := scanLocks(ctx, client, plan.scanner, pool, cursor, pattern, maxScanCount)
			if err != nil {
				return err
			}
			for _, in := range infos {
				if _, dup := seen[in.Item]; !dup && in.Status != "free" {
					seen[in.Item] = struct{}{}
					r.count(in.Status)
				}
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	r.Free = max(0, r.Items-r.Leased-r.Cooldown-r.Quarantine-r.Locked-r.Errors)
	return nil
}

// countMembers counts the held members by reading every member's lock
// (one pipelined round trip per 1,000 members): the walk for a server
// that does not let the runner SCAN.
func countMembers(ctx context.Context, client redis.UniversalClient, pool *lock.RedisLockPool, r *statusReport) error {
	batch := make([]string, 0, chunk)
	count := func() error {
		infos, err := describe(ctx, client, pool, batch)
		if err != nil {
			return err
		}
		for _, in := range infos {
			r.count(in.Status)
		}
		batch = batch[:0]
		return nil
	}
	for it, err := range pool.Items(ctx) {
		if err != nil {
			return err
		}
		if batch = append(batch, it); len(batch) == chunk {
			if err := count(); err != nil {
				return err
			}
		}
	}
	return count()
}

// count adds one held item in status to r's counts (free is derived).
func (r *statusReport) count(status string) {
	switch status {
	case "free":
	case "leased":
		r.Leased++
	case "quarantine":
		r.Quarantine++
	case "cooldown":
		r.Cooldown++
	case "locked":
		r.Locked++
	default:
		r.Errors++
	}
}
