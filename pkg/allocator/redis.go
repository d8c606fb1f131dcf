package allocator

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/pkg/lock"
)

var (
	//go:embed scripts/acquire.lua
	acquireLua    string
	acquireScript = redis.NewScript(acquireLua)

	//go:embed scripts/release.lua
	releaseLua    string
	releaseScript = redis.NewScript(releaseLua)

	//go:embed scripts/refresh.lua
	refreshLua    string
	refreshScript = redis.NewScript(refreshLua)

	//go:embed scripts/sync.lua
	syncLua    string
	syncScript = redis.NewScript(syncLua)

	//go:embed scripts/quarantine.lua
	quarantineLua    string
	quarantineScript = redis.NewScript(quarantineLua)
)

// maxCandidates bounds how many index entries one acquire examines.
const maxCandidates = 64

// redisStore keeps the allocator's state beside the lock pool's keys:
//
//	<base>:<item>            lock STRING (pkg/lock): "<owner>#<token>", PX = lease
//	<base>|pool              member SET (pkg/lock)
//	<base>|alloc:index       ZSET item -> ms when available (server time)
//	<base>|alloc:fence       fencing counter
//	<base>|alloc:bindings    HASH binding name -> item
//	<base>|alloc:waiters     ZSET "<proc>:<waiter>" -> ms registered
//	<base>|alloc:sync        HASH sweep cursors
//	<base>|alloc:foreign     ZSET items seen held by locks not granted here
//	<base>|alloc:reserved    HASH waiter -> item a release handed to it
//	<base>|alloc:wake:<proc> pub/sub channel of one allocator process
type redisStore struct {
	client  redis.UniversalClient
	pool    *lock.RedisLockPool
	lockPfx string
	keys    []string // pool, index, fence, bindings, waiters
	syncKey string
	wakePfx string
	proc    string
	wakeN   int
	// syncEvery spaces the rolling sync steps fleet-wide.
	syncEvery time.Duration
	// handoff is how long a released item is kept for the waiter it woke.
	handoff  time.Duration
	pubsub   *redis.PubSub
	nextID   atomic.Int64
	mu       sync.Mutex
	waiters  map[string]chan struct{}
	stopSubs chan struct{}
	subsDone chan struct{}
}

// NewRedis returns an allocator over the Redis lock pool at prefix/suffix
// (the pool's Suffix defaults to "lock-pool", as in pkg/lock). Items come
// from the pool's member set, and leases are the pool's ordinary lock keys.
func NewRedis(client redis.UniversalClient, pool lock.Config, cfg Config) (*Allocator, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("allocator: NewRedis: %w", err)
	}
	p, err := lock.NewRedisLockPool(client, pool)
	if err != nil {
		return nil, fmt.Errorf("allocator: NewRedis: %w", err)
	}
	base := strings.TrimSuffix(p.PoolKey(), "|pool")
	var id [8]byte
	_, _ = rand.Read(id[:])
	s := &redisStore{
		client:    client,
		pool:      p,
		lockPfx:   p.Key(""),
		keys:      []string{p.PoolKey(), base + "|alloc:index", base + "|alloc:fence", base + "|alloc:bindings", base + "|alloc:waiters", base + "|alloc:foreign", base + "|alloc:reserved"},
		syncKey:   base + "|alloc:sync",
		wakePfx:   base + "|alloc:wake:",
		proc:      hex.EncodeToString(id[:]),
		wakeN:     cfg.WakeWaiters,
		syncEvery: cfg.SyncInterval,
		handoff:   cfg.HandoffWindow,
		waiters:   map[string]chan struct{}{},
		stopSubs:  make(chan struct{}),
		subsDone:  make(chan struct{}),
	}
	// Subscribe before any waiter registers, so no wake-up is published
	// to a channel nobody listens on yet.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.pubsub = client.Subscribe(ctx, s.wakePfx+s.proc)
	if _, err := s.pubsub.Receive(ctx); err != nil {
		s.pubsub.Close()
		return nil, fmt.Errorf("allocator: NewRedis: subscribe %q: %w", s.wakePfx+s.proc, err)
	}
	go s.dispatch()
	return newAllocator(cfg, s), nil
}

// dispatch hands each wake-up to the waiter it names, or to any other local
// waiter when that one has gone.
func (s *redisStore) dispatch() {
	defer close(s.subsDone)
	ch := s.pubsub.Channel()
	for {
		select {
		case <-s.stopSubs:
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			s.mu.Lock()
			w, found := s.waiters[msg.Payload]
			if !found {
				for _, other := range s.waiters {
					w, found = other, true
					break
				}
			}
			s.mu.Unlock()
			if found {
				select {
				case w <- struct{}{}:
				default:
				}
			}
		}
	}
}

func (s *redisStore) waiter() (string, <-chan struct{}, func()) {
	local := strconv.FormatInt(s.nextID.Add(1), 10)
	id := s.proc + ":" + local
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.waiters[local] = ch
	s.mu.Unlock()
	return id, ch, func() {
		s.mu.Lock()
		delete(s.waiters, local)
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// Best effort: a stale entry only costs one skipped wake-up, and a
		// stale hand-off keeps an item aside for one HandoffWindow.
		pipe := s.client.Pipeline()
		pipe.ZRem(ctx, s.keys[4], id)
		pipe.HDel(ctx, s.keys[6], id)
		pipe.Exec(ctx)
	}
}

func (s *redisStore) close() error {
	close(s.stopSubs)
	err := s.pubsub.Close()
	<-s.subsDone
	return err
}

// mapErr turns a WRONGTYPE reply into lock.ErrWrongType naming the keys.
func (s *redisStore) mapErr(op string, err error) error {
	var rerr redis.Error
	if errors.As(err, &rerr) && strings.Contains(rerr.Error(), "WRONGTYPE") {
		return fmt.Errorf("%s on pool %q: %w: %w", op, s.keys[0], lock.ErrWrongType, err)
	}
	return fmt.Errorf("%s on pool %q: %w", op, s.keys[0], err)
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms) }

func (s *redisStore) acquire(ctx context.Context, owner string, ttl time.Duration, prefer, binding, waiter string, exact bool) (grant, miss, bool, error) {
	only := ""
	if exact {
		only = "1"
	}
	res, err := acquireScript.Run(ctx, s.client, s.keys, s.lockPfx, owner, ttl.Milliseconds(), prefer, binding, waiter, maxCandidates, only).Slice()
	if err != nil {
		return grant{}, miss{}, false, s.mapErr("acquire", err)
	}
	if len(res) == 5 && res[0] == int64(1) {
		item, _ := res[1].(string)
		tokStr, _ := res[2].(string)
		token, err := strconv.ParseInt(tokStr, 10, 64)
		deadline, _ := res[3].(int64)
		if err != nil {
			return grant{}, miss{}, false, fmt.Errorf("acquire: bad token %q: %w", tokStr, err)
		}
		return grant{item: item, token: token, deadline: msTime(deadline)}, miss{}, true, nil
	}
	if len(res) != 4 {
		return grant{}, miss{}, false, fmt.Errorf("acquire: acquire.lua answered %v", res)
	}
	next, _ := res[1].(int64)
	now, _ := res[2].(int64)
	m := miss{now: msTime(now), behind: res[3] == int64(1)}
	if next >= 0 {
		m.next = msTime(next)
	}
	return grant{}, m, false, nil
}

func (s *redisStore) refresh(ctx context.Context, leases []*Lease, ttl time.Duration) (time.Time, []bool, error) {
	keys := make([]string, 0, len(leases)+1)
	args := make([]any, 0, 2*len(leases)+1)
	keys = append(keys, s.keys[1])
	args = append(args, ttl.Milliseconds())
	for _, l := range leases {
		keys = append(keys, s.lockPfx+l.Item)
		args = append(args, l.Value)
	}
	for _, l := range leases {
		args = append(args, l.Item)
	}
	res, err := refreshScript.Run(ctx, s.client, keys, args...).Int64Slice()
	if err != nil {
		return time.Time{}, nil, s.mapErr("refresh", err)
	}
	if len(res) != len(leases)+1 {
		return time.Time{}, nil, fmt.Errorf("refresh: refresh.lua answered %d values for %d leases", len(res), len(leases))
	}
	held := make([]bool, len(leases))
	for i := range leases {
		held[i] = res[i+1] == 1
	}
	return msTime(res[0]), held, nil
}

func (s *redisStore) release(ctx context.Context, l *Lease, hold time.Duration) (bool, error) {
	n, err := releaseScript.Run(ctx, s.client, []string{s.lockPfx + l.Item, s.keys[1], s.keys[4], s.keys[6]},
		l.Value, l.Item, s.wakePfx, s.wakeN, hold.Milliseconds(), quarantineMarker, s.handoff.Milliseconds()).Int()
	if err != nil {
		return false, s.mapErr("release", err)
	}
	return n == 1, nil
}

func (s *redisStore) quarantine(ctx context.Context, item string, d time.Duration) error {
	err := quarantineScript.Run(ctx, s.client, []string{s.lockPfx + item, s.keys[1]}, item, d.Milliseconds(), quarantineMarker).Err()
	if err != nil {
		return s.mapErr("quarantine", err)
	}
	return nil
}

func (s *redisStore) sync(ctx context.Context, full bool) (bool, error) {
	fullArg := "0"
	if full {
		fullArg = "1"
	}
	res, err := syncScript.Run(ctx, s.client, []string{s.keys[0], s.keys[1], s.syncKey, s.keys[4]}, 1000, fullArg, s.wakePfx, s.wakeN, s.syncEvery.Milliseconds()).Int64Slice()
	if err != nil {
		return false, s.mapErr("sync", err)
	}
	if len(res) != 3 {
		return false, fmt.Errorf("sync: sync.lua answered %v", res)
	}
	return res[2] == 1, nil
}
