package lock

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"fmt"
	"iter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/pkg/keyspace"
)

var (
	//go:embed scripts/clear.lua
	clearLua    string
	clearScript = pieces.New("lock/clear.lua", clearLua)

	//go:embed scripts/assign.lua
	assignLua    string
	assignScript = pieces.New("lock/assign.lua", assignLua)

	//go:embed scripts/healthcheck.lua
	healthLua    string
	healthScript = pieces.New("lock/healthcheck.lua", healthLua)

	//go:embed scripts/lockscan.lua
	lockScanLua    string
	lockScanScript = pieces.New("lock/lockscan.lua", lockScanLua)

	//go:embed scripts/itemlocks.lua
	itemLocksLua    string
	itemLocksScript = pieces.New("lock/itemlocks.lua", itemLocksLua)
)

const (
	// scanCount is the SSCAN COUNT hint of every pool walk: it bounds the
	// work one round trip (or one script) does on the server.
	scanCount = 1000
	// writeChunk is the number of members per SADD or SREM, and
	// chunksPerTrip the number of those commands pipelined per round trip:
	// a million-item Extend is 10 round trips of 10 commands each.
	writeChunk    = 10_000
	chunksPerTrip = 10
	// stagingTTL bounds how long an interrupted Assign's staging set lives;
	// every round trip of staging renews it.
	stagingTTL = time.Minute
)

// RedisLockPool is the Redis backend of [Pool]: a [RedisLock] on keys
// "<Prefix>|<Suffix>:<item>" plus a member SET at "<Prefix>|<Suffix>|pool".
// Writes of many items are chunked and pipelined, so Extend and Assign take
// a million items; walks of the pool are SSCAN-based and bounded per round
// trip. It is safe for concurrent use.
//
// Assign renames a staging key onto the pool key, and the pool-wide walks
// read lock keys in the same script as the member set, so on a Redis
// Cluster the prefix must carry a hash tag ("{acme}"): every key of the
// pool then lives in one slot (see pkg/keyspace). Standalone and Sentinel
// deployments take any prefix.
type RedisLockPool struct {
	*RedisLock
	pool string
}

var _ Pool = (*RedisLockPool)(nil)

// NewRedisLockPool returns a pool whose Suffix defaults to "lock-pool".
func NewRedisLockPool(client redis.UniversalClient, cfg Config) (*RedisLockPool, error) {
	cfg = cfg.withDefaults(DefaultPoolSuffix)
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("lock: NewRedisLockPool: %w", err)
	}
	if client == nil {
		return nil, fmt.Errorf("lock: NewRedisLockPool: %w: nil client", ErrInvalidConfig)
	}
	l := newRedisLock(client, cfg)
	return &RedisLockPool{RedisLock: l, pool: l.keys.Members()}, nil
}

// PoolKey returns the Redis key of the member SET.
func (p *RedisLockPool) PoolKey() string { return p.pool }

func (p *RedisLockPool) Extend(ctx context.Context, items []string) error {
	const op = "Extend"
	if err := checkItems(op, items); err != nil {
		return err
	}
	if _, err := p.writeMembers(ctx, p.pool, items, false, 0); err != nil {
		return wrap(op, p.pool, err)
	}
	return nil
}

func (p *RedisLockPool) Shrink(ctx context.Context, items []string) error {
	_, err := p.ShrinkCount(ctx, items)
	return err
}

// ShrinkCount is Shrink, returning how many of items were members and are
// now removed (an item named twice, or not a member, counts nothing).
func (p *RedisLockPool) ShrinkCount(ctx context.Context, items []string) (int64, error) {
	const op = "Shrink"
	if err := checkItems(op, items); err != nil {
		return 0, err
	}
	n, err := p.writeMembers(ctx, p.pool, items, true, 0)
	if err != nil {
		return n, wrap(op, p.pool, err)
	}
	return n, nil
}

// writeMembers SADDs (or SREMs) items to key in pipelined chunks and
// returns how many members were added (removed). A ttl above zero renews
// the key's TTL with every trip (for staging sets).
func (p *RedisLockPool) writeMembers(ctx context.Context, key string, items []string, remove bool, ttl time.Duration) (int64, error) {
	var changed int64
	for trip := 0; trip < len(items); trip += writeChunk * chunksPerTrip {
		pipe := p.client.Pipeline()
		var counts []*redis.IntCmd
		end := min(trip+writeChunk*chunksPerTrip, len(items))
		for i := trip; i < end; i += writeChunk {
			chunk := items[i:min(i+writeChunk, end)]
			members := make([]any, len(chunk))
			for j, it := range chunk {
				members[j] = it
			}
			if remove {
				counts = append(counts, pipe.SRem(ctx, key, members...))
			} else {
				counts = append(counts, pipe.SAdd(ctx, key, members...))
			}
		}
		if ttl > 0 {
			pipe.PExpire(ctx, key, ttl)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return changed, err
		}
		for _, c := range counts {
			changed += c.Val()
		}
	}
	return changed, nil
}

func (p *RedisLockPool) Assign(ctx context.Context, items []string) error {
	const op = "Assign"
	if err := checkItems(op, items); err != nil {
		return err
	}
	// Stage the new members beside the pool, then swap them in with one
	// script: the old set stays whole until the swap, and a failure before
	// it leaves only a staging key that expires by itself.
	var id [16]byte
	_, _ = rand.Read(id[:])
	staging := p.keys.Staging(hex.EncodeToString(id[:]))
	_, err := p.writeMembers(ctx, staging, items, false, stagingTTL)
	if err == nil {
		err = assignScript.Run(ctx, p.client, []string{p.pool, staging}).Err()
	}
	if err != nil {
		// Best effort, within the caller's deadline: a staging set left
		// behind expires by itself after stagingTTL.
		if ctx.Err() == nil {
			p.client.Del(ctx, staging)
		}
		return wrap(op, p.pool, err)
	}
	return nil
}

func (p *RedisLockPool) Clear(ctx context.Context) error {
	if err := clearScript.Run(ctx, p.client, []string{p.pool}).Err(); err != nil {
		return wrap("Clear", p.pool, err)
	}
	return nil
}

func (p *RedisLockPool) Items(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		var cursor uint64
		for {
			members, next, err := p.client.SScan(ctx, p.pool, cursor, "", scanCount).Result()
			if err != nil {
				yield("", wrap("Items", p.pool, err))
				return
			}
			for _, m := range members {
				if !yield(m, nil) {
					return
				}
			}
			if next == 0 {
				return
			}
			cursor = next
		}
	}
}

func (p *RedisLockPool) Contains(ctx context.Context, item string) (bool, error) {
	const op = "Contains"
	if err := checkKey(op, item); err != nil {
		return false, err
	}
	ok, err := p.client.SIsMember(ctx, p.pool, item).Result()
	if err != nil {
		return false, wrap(op, p.pool, err)
	}
	return ok, nil
}

func (p *RedisLockPool) Len(ctx context.Context) (int64, error) {
	n, err := p.client.SCard(ctx, p.pool).Result()
	if err != nil {
		return 0, wrap("Len", p.pool, err)
	}
	return n, nil
}

func (p *RedisLockPool) LockStatus(ctx context.Context, items []string) ([]bool, error) {
	const op = "LockStatus"
	if err := checkItems(op, items); err != nil {
		return nil, err
	}
	out := make([]bool, 0, len(items))
	for start := 0; start < len(items); start += writeChunk {
		chunk := items[start:min(start+writeChunk, len(items))]
		pipe := p.client.Pipeline()
		cmds := make([]*redis.IntCmd, len(chunk))
		for i, it := range chunk {
			cmds[i] = pipe.Exists(ctx, p.Key(it))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, wrap(op, p.Key(chunk[0]), err)
		}
		for _, c := range cmds {
			out = append(out, c.Val() == 1)
		}
	}
	return out, nil
}

func (p *RedisLockPool) ItemLocks(ctx context.Context) iter.Seq2[ItemLock, error] {
	const op = "ItemLocks"
	return func(yield func(ItemLock, error) bool) {
		cursor := "0"
		for {
			res, err := itemLocksScript.Run(ctx, p.client, []string{p.pool}, cursor, scanCount, p.keys.LockPrefix()).Slice()
			if err == nil && len(res) != 3 {
				err = fmt.Errorf("itemlocks.lua answered %d values, want 3", len(res))
			}
			if err != nil {
				yield(ItemLock{}, wrap(op, p.pool, err))
				return
			}
			members, _ := res[1].([]any)
			flags, _ := res[2].([]any)
			for i, m := range members {
				item, _ := m.(string)
				locked := i < len(flags) && flags[i] == int64(1)
				if !yield(ItemLock{Item: item, Locked: locked}, nil) {
					return
				}
			}
			if cursor, _ = res[0].(string); cursor == "0" || cursor == "" {
				return
			}
		}
	}
}

// HealthCheck walks whichever is smaller, the pool's members or the
// database's keys, so its cost is O(min(pool size, database size)) bounded
// steps: with a million members of which few are locked, in a Redis used
// for locks, it visits the locks rather than every member.
func (p *RedisLockPool) HealthCheck(ctx context.Context) (locked, free int64, err error) {
	const op = "HealthCheck"
	pipe := p.client.Pipeline()
	card := pipe.SCard(ctx, p.pool)
	size := pipe.DBSize(ctx)
	// Only DBSIZE may fail on its own (an ACL user may lack it). A
	// connection that fails to authenticate fails the pipeline without
	// setting any command's error, so SCARD's error alone does not tell.
	if _, err := pipe.Exec(ctx); err != nil && (card.Err() != nil || size.Err() == nil) {
		return 0, 0, wrap(op, p.pool, err)
	}
	members := card.Val()
	if members == 0 {
		return 0, 0, nil
	}
	if size.Err() == nil && size.Val() < members {
		locked, err = p.countLockKeys(ctx)
	} else {
		locked, err = p.countLockedMembers(ctx)
	}
	if err != nil {
		return 0, 0, wrap(op, p.pool, err)
	}
	locked = min(locked, members) // members may change during the walk
	return locked, members - locked, nil
}

// countLockedMembers walks the member set, checking each member's lock.
func (p *RedisLockPool) countLockedMembers(ctx context.Context) (int64, error) {
	cursor := "0"
	var locked int64
	for {
		res, err := healthScript.Run(ctx, p.client, []string{p.pool}, cursor, scanCount, p.keys.LockPrefix()).Slice()
		if err == nil && len(res) != 3 {
			err = fmt.Errorf("healthcheck.lua answered %d values, want 3", len(res))
		}
		if err != nil {
			return 0, err
		}
		held, _ := res[2].(int64)
		locked += held
		if cursor, _ = res[0].(string); cursor == "0" || cursor == "" {
			return locked, nil
		}
	}
}

// countLockKeys walks the keyspace for this pool's lock keys and counts
// those whose item is a member.
func (p *RedisLockPool) countLockKeys(ctx context.Context) (int64, error) {
	match := keyspace.GlobEscape(p.keys.LockPrefix()) + "*"
	seen := map[string]struct{}{}
	cursor := "0"
	for {
		res, err := lockScanScript.Run(ctx, p.client, []string{p.pool}, cursor, scanCount, match, len(p.keys.LockPrefix())).Slice()
		if err == nil && len(res) != 2 {
			err = fmt.Errorf("lockscan.lua answered %d values, want 2", len(res))
		}
		if err != nil {
			return 0, err
		}
		items, _ := res[1].([]any)
		for _, it := range items {
			if s, ok := it.(string); ok {
				seen[s] = struct{}{}
			}
		}
		if cursor, _ = res[0].(string); cursor == "0" || cursor == "" {
			return int64(len(seen)), nil
		}
	}
}
