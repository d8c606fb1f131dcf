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

	"github.com/lockpool/lockpool/internal/epoch"
	"github.com/lockpool/lockpool/internal/history"
	"github.com/lockpool/lockpool/internal/luascript"
	"github.com/lockpool/lockpool/pkg/keyspace"
	"github.com/lockpool/lockpool/pkg/lock"
)

var (
	//go:embed scripts/wake.lua
	wakeLua string
	//go:embed scripts/index.lua
	indexLua string
	//go:embed scripts/grant.lua
	grantLua string
	//go:embed scripts/free.lua
	freeLua string
	// pieces are what the allocator's scripts may use (their "-- uses:"
	// lines say which): the shared ones, epoch, wake, and grant and free,
	// the bodies of acquire and release, which next runs back to back.
	pieces = luascript.Pieces(epoch.Piece, luascript.NewPiece("wake", wakeLua),
		luascript.NewPiece("index", indexLua), luascript.NewPiece("grant", grantLua), luascript.NewPiece("free", freeLua), history.Piece)

	//go:embed scripts/acquire.lua
	acquireLua    string
	acquireScript = pieces.New("allocator/acquire.lua", acquireLua)

	//go:embed scripts/release.lua
	releaseLua    string
	releaseScript = pieces.New("allocator/release.lua", releaseLua)

	//go:embed scripts/next.lua
	nextLua    string
	nextScript = pieces.New("allocator/next.lua", nextLua)

	//go:embed scripts/refresh.lua
	refreshLua    string
	refreshScript = pieces.New("allocator/refresh.lua", refreshLua)

	//go:embed scripts/sync.lua
	syncLua    string
	syncScript = pieces.New("allocator/sync.lua", syncLua)

	//go:embed scripts/pause.lua
	pauseLua    string
	pauseScript = pieces.New("allocator/pause.lua", pauseLua)

	//go:embed scripts/intervene.lua
	interveneLua    string
	interveneScript = pieces.New("allocator/intervene.lua", interveneLua)

	//go:embed scripts/quarantine.lua
	quarantineLua    string
	quarantineScript = pieces.New("allocator/quarantine.lua", quarantineLua)
)

// maxCandidates bounds how many index entries one acquire examines.
const maxCandidates = 64

// fromSample is how many members of AcquireOptions.From one grant draws
// (grant.lua's SRANDMEMBER count).
const fromSample = 16

// redisStore keeps the allocator's state beside the lock pool's keys (the
// "<base>|alloc:*" keys and the epoch HASH of pkg/keyspace), and listens on
// one sharded pub/sub channel per process for wake-ups.
type redisStore struct {
	client redis.UniversalClient
	keys   keyspace.Pool
	// acquireKeys and syncKeys are the KEYS of acquire.lua and sync.lua,
	// the same for every call.
	acquireKeys, syncKeys []string
	proc                  string
	wakeN                 int
	// syncEvery spaces the rolling sync steps fleet-wide.
	syncEvery time.Duration
	// handoff is how long a released item is kept for the waiter it woke.
	handoff time.Duration
	// acks and ackTimeout: see Config.MinReplicasAcked.
	acks       int
	ackTimeout time.Duration
	epochs     *epoch.Tracker
	pubsub     *redis.PubSub
	nextID     atomic.Int64
	mu         sync.Mutex
	waiters    map[string]chan struct{}
	// cancelled is told of leases an operator cancelled (onCancel).
	cancelled func(item string, token int64)
	stopSubs  chan struct{}
	subsDone  chan struct{}
}

// NewRedis returns an allocator over a Redis lock pool. Items come from
// the pool's member set, leases are the pool's ordinary lock keys, and the
// allocator keeps its state beside them (pool.Keys(), see pkg/keyspace),
// using the pool's client.
//
// It first checks the server (see CheckServer): a Redis that may evict
// keys is refused with ErrUnsafeServer unless Config.AllowEviction is set,
// and on a Redis Cluster the pool's prefix must carry a hash tag and the
// client must be a *redis.ClusterClient. Then it subscribes to its wake-up
// channel. It waits at most 10 seconds for the server.
func NewRedis(pool *lock.RedisLockPool, cfg Config) (*Allocator, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("allocator: NewRedis: %w", err)
	}
	if pool == nil {
		return nil, fmt.Errorf("allocator: NewRedis: %w: nil pool", ErrInvalidConfig)
	}
	client := pool.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := CheckServer(ctx, client, pool.Keys(), ServerOptions{AllowEviction: cfg.AllowEviction})
	if err != nil {
		return nil, fmt.Errorf("allocator: NewRedis: %w", err)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	s := &redisStore{
		client:     client,
		keys:       pool.Keys(),
		proc:       hex.EncodeToString(id[:]),
		wakeN:      cfg.WakeWaiters,
		syncEvery:  cfg.SyncInterval,
		handoff:    cfg.HandoffWindow,
		acks:       cfg.MinReplicasAcked,
		ackTimeout: cfg.ReplicaAckTimeout,
		waiters:    map[string]chan struct{}{},
		stopSubs:   make(chan struct{}),
		subsDone:   make(chan struct{}),
	}
	k := s.keys
	s.acquireKeys = []string{k.Members(), k.Index(), k.Fence(), k.Bindings(), k.Waiters(), k.Foreign(), k.Reserved(), k.Epoch(), k.Control()}
	s.syncKeys = []string{k.Members(), k.Index(), k.SyncState(), k.Waiters(), k.Reserved(), k.Epoch(), k.Fence(), k.LegacyIndex()}
	s.epochs = newTracker(cfg)
	// Subscribe before any waiter registers, so no wake-up is published
	// to a channel nobody listens on yet. Sharded pub/sub: on a Redis
	// Cluster the channel lives in the pool's hash slot, where the
	// scripts publish, and SPUBLISH counts its receivers there.
	// The pool's cancel channel too: an operator's Cancel tells the
	// holder's process at once (Allocator.Cancel).
	s.pubsub = client.SSubscribe(ctx, s.keys.Wake(s.proc), s.keys.Cancels())
	for range 2 { // one confirmation a channel
		if _, err := s.pubsub.Receive(ctx); err != nil {
			s.pubsub.Close()
			return nil, fmt.Errorf("allocator: NewRedis: subscribe %q: %w", s.keys.Wake(s.proc), err)
		}
	}
	go s.dispatch()
	a := newAllocator(cfg, s, s.epochs)
	if !info.Cluster { // on a cluster, the node read may not own the pool's slot
		a.evicted, a.evictedGen = info.EvictedKeys, 0
	}
	return a, nil
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
			if msg.Channel == s.keys.Cancels() {
				s.tellCancel(msg.Payload)
				continue
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
		// stale hand-off keeps an item aside for one HandoffWindow; sync
		// steps forget those of processes that are gone.
		pipe := s.client.Pipeline()
		pipe.ZRem(ctx, s.keys.Waiters(), id)
		pipe.HDel(ctx, s.keys.Reserved(), id)
		pipe.Exec(ctx)
	}
}

func (s *redisStore) names() keyspace.Pool { return s.keys }

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
		return fmt.Errorf("%s on pool %q: %w: %w", op, s.keys.Members(), lock.ErrWrongType, err)
	}
	return fmt.Errorf("%s on pool %q: %w", op, s.keys.Members(), err)
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms) }

// run runs script. With Config.MinReplicasAcked it then sends WAIT on the
// same connection (WAIT counts the writes of its own connection), and
// reports whether enough replicas acknowledged the script's writes;
// otherwise acked is true. The two are sent one after the other, not
// pipelined: a pipelined WAIT would block for ReplicaAckTimeout behind a
// NOSCRIPT reply, and a promoted replica has no script loaded.
func (s *redisStore) run(ctx context.Context, script *redis.Script, keys []string, args ...any) (res []any, acked bool, err error) {
	if s.acks == 0 {
		res, err = script.Run(ctx, s.client, keys, args...).Slice()
		return res, true, err
	}
	// On a cluster the pair goes straight to the master of the pool's
	// slot: go-redis would send a keyless WAIT to any node.
	node, ok := s.client.(*redis.Client)
	if cc, isCluster := s.client.(*redis.ClusterClient); isCluster {
		if node, err = cc.MasterForKey(ctx, s.keys.Members()); err != nil {
			return nil, false, err
		}
		ok = true
	}
	if !ok {
		return nil, false, fmt.Errorf("%w: MinReplicasAcked needs a *redis.Client or *redis.ClusterClient, got %T", ErrInvalidConfig, s.client)
	}
	cn := node.Conn()
	defer cn.Close()
	if res, err = script.Run(ctx, cn, keys, args...).Slice(); err != nil {
		if cc, isCluster := s.client.(*redis.ClusterClient); isCluster && isRedirect(err) {
			cc.ReloadState(ctx)
		}
		return nil, false, err
	}
	n, err := cn.Do(ctx, "wait", s.acks, s.ackTimeout.Milliseconds()).Int64()
	if err != nil {
		return res, false, fmt.Errorf("WAIT %d replicas: %w", s.acks, err)
	}
	return res, n >= int64(s.acks), nil
}

// isRedirect reports a cluster MOVED or ASK reply.
func isRedirect(err error) bool {
	return redis.HasErrorPrefix(err, "MOVED") || redis.HasErrorPrefix(err, "ASK")
}

// seen records the epoch fields a script returned at res[i:].
func (s *redisStore) seen(res []any, i int) (epoch.State, error) {
	st, id, err := epoch.Parse(res, i)
	if err != nil {
		return epoch.State{}, err
	}
	s.epochs.Seen(st, id)
	return st, nil
}

func (s *redisStore) acquire(ctx context.Context, owner string, ttl time.Duration, prefer, binding, waiter string, exact bool) (grant, miss, bool, error) {
	only := ""
	if exact {
		only = "1"
	}
	known, longest := s.epochs.Args(ttl)
	res, acked, waitErr := s.run(ctx, acquireScript, s.acquireKeys, s.keys.LockPrefix(), owner, ttl.Milliseconds(), prefer, binding, waiter, maxCandidates, only, known, longest)
	if waitErr != nil && res == nil {
		return grant{}, miss{}, false, s.mapErr("acquire", waitErr)
	}
	// With res, waitErr is WAIT's own failure: a grant is undone below.
	g, m, ok, err := s.granted(res, owner)
	if err != nil {
		return grant{}, miss{}, false, fmt.Errorf("acquire: %w", err)
	}
	if ok && (!acked || waitErr != nil) {
		return grant{}, miss{}, false, fmt.Errorf("acquire: %w", s.unconfirmed(ctx, g, owner, waitErr))
	}
	if waitErr != nil { // a miss whose WAIT failed: nothing to undo
		return grant{}, miss{}, false, s.mapErr("acquire", waitErr)
	}
	return g, m, ok, nil
}

// unconfirmed ends a grant that not enough replicas acknowledged now
// rather than at its expiry, and says so.
func (s *redisStore) unconfirmed(ctx context.Context, g grant, owner string, waitErr error) error {
	undo := s.undo(ctx, g.item, leaseValue(owner, g.token))
	return fmt.Errorf("grant of %q: %w%s%s", g.item, ErrNotReplicated, errSuffix(waitErr), undo)
}

// granted reads grant.lua's reply.
func (s *redisStore) granted(res []any, owner string) (grant, miss, bool, error) {
	st, err := s.seen(res, 1)
	if err != nil {
		return grant{}, miss{}, false, err
	}
	if len(res) == 9 && res[0] == int64(1) {
		item, _ := res[5].(string)
		tokStr, _ := res[6].(string)
		token, err := strconv.ParseInt(tokStr, 10, 64)
		deadline, _ := res[7].(int64)
		if err != nil {
			return grant{}, miss{}, false, fmt.Errorf("bad token %q: %w", tokStr, err)
		}
		return grant{item: item, token: token, deadline: msTime(deadline), gen: st.Gen}, miss{}, true, nil
	}
	if len(res) != 8 && (len(res) != 9 || res[8] != int64(1)) {
		return grant{}, miss{}, false, fmt.Errorf("grant.lua answered %v", res)
	}
	next, _ := res[5].(int64)
	now, _ := res[6].(int64)
	m := miss{now: msTime(now), behind: res[7] == int64(1), paused: len(res) == 9}
	if next >= 0 {
		m.next = msTime(next)
	}
	if st.QuietUntil.After(m.now) {
		m.quiet = st
	}
	return grant{}, m, false, nil
}

// undo releases a grant that was not acknowledged, retrying for up to 5
// seconds, and says so when it could not: the item then comes back when
// the lease expires.
func (s *redisStore) undo(ctx context.Context, item, value string) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var err error
	for ctx.Err() == nil {
		var v verdict
		if v, _, err = s.release(ctx, &Lease{item: item, value: value}, 0, ""); err == nil {
			if v != verdictHeld {
				return "; the grant was gone already"
			}
			return ""
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Sprintf("; the grant could not be undone (%v): it ends at its TTL", err)
}

// errSuffix is ": err" or "".
func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return ": " + err.Error()
}

func (s *redisStore) refresh(ctx context.Context, leases []*Lease, ttl time.Duration) (time.Time, []verdict, report, error) {
	known, longest := s.epochs.Args(ttl)
	keys := make([]string, 0, len(leases)+3)
	args := make([]any, 0, 2*len(leases)+3)
	keys = append(keys, s.keys.Index(), s.keys.Epoch(), s.keys.Fence())
	args = append(args, ttl.Milliseconds(), known, longest)
	for _, l := range leases {
		keys = append(keys, s.keys.Lock(l.item))
		args = append(args, l.value)
	}
	for _, l := range leases {
		args = append(args, l.item)
	}
	res, acked, err := s.run(ctx, refreshScript, keys, args...)
	if err != nil {
		return time.Time{}, nil, report{}, s.mapErr("refresh", err)
	}
	if len(res) != len(leases)+6 {
		return time.Time{}, nil, report{}, fmt.Errorf("refresh: refresh.lua answered %d values for %d leases", len(res), len(leases))
	}
	st, err := s.seen(res, 1)
	if err != nil {
		return time.Time{}, nil, report{}, fmt.Errorf("refresh: %w", err)
	}
	if !acked {
		return time.Time{}, nil, report{}, fmt.Errorf("refresh: %w", ErrNotReplicated)
	}
	now, _ := res[0].(int64)
	rep := report{state: st, evicted: -1}
	rep.evicted, _ = res[5].(int64)
	vs := make([]verdict, len(leases))
	for i := range leases {
		v, _ := res[i+6].(int64)
		vs[i] = verdict(v)
	}
	return msTime(now), vs, rep, nil
}

func (s *redisStore) release(ctx context.Context, l *Lease, hold time.Duration, marker string) (verdict, report, error) {
	known, longest := s.epochs.Args(0)
	keys := []string{s.keys.Lock(l.item), s.keys.Index(), s.keys.Waiters(), s.keys.Reserved(), s.keys.Epoch(), s.keys.Fence()}
	res, err := releaseScript.Run(ctx, s.client, keys,
		l.value, l.item, s.keys.WakePrefix(), s.wakeN, hold.Milliseconds(), marker, s.handoff.Milliseconds(), known, longest).Slice()
	if err != nil {
		return 0, report{}, s.mapErr("release", err)
	}
	v, rep, err := s.released(res)
	if err != nil {
		return 0, report{}, fmt.Errorf("release: %w", err)
	}
	return v, rep, nil
}

// released reads free.lua's reply.
func (s *redisStore) released(res []any) (verdict, report, error) {
	if len(res) == 1 && res[0] == int64(1) {
		return verdictHeld, report{}, nil
	}
	if len(res) != 6 {
		return 0, report{}, fmt.Errorf("free.lua answered %v", res)
	}
	st, err := s.seen(res, 1)
	if err != nil {
		return 0, report{}, err
	}
	code, _ := res[0].(int64)
	evicted, _ := res[5].(int64)
	return verdict(code), report{state: st, evicted: evicted}, nil
}

func (s *redisStore) next(ctx context.Context, l *Lease, end EndOptions, owner string, ttl time.Duration, opts AcquireOptions) (nextResult, error) {
	only, from, fromFlag := "", s.keys.Members(), ""
	if opts.Exact {
		only = "1"
	}
	if opts.From != "" {
		from, fromFlag = opts.From, "1"
	}
	known, longest := s.epochs.Args(ttl)
	k := s.keys
	keys := []string{k.Lock(l.item), k.Members(), k.Index(), k.Fence(), k.Bindings(), k.Waiters(), k.Foreign(), k.Reserved(), k.Epoch(), opts.Failures, from,
		k.History(), k.HistoryExpiry(), k.Tail(l.item), k.Control()}
	args := append([]any{l.value, l.item, k.WakePrefix(), s.wakeN, end.Hold.Milliseconds(), holdMarker(end.Quarantine), s.handoff.Milliseconds(), known, longest,
		end.Count.arg(), k.LockPrefix(), owner, ttl.Milliseconds(), opts.Prefer, opts.Binding, maxCandidates, only, fromFlag},
		historyArgs(l, end.Record)...)
	res, acked, waitErr := s.run(ctx, nextScript, keys, args...)
	if waitErr != nil && res == nil {
		return nextResult{}, s.mapErr("next", waitErr)
	}
	if len(res) != 4 {
		return nextResult{}, fmt.Errorf("next: next.lua answered %v", res)
	}
	ended, _ := res[0].([]any)
	granted, _ := res[1].([]any)
	var r nextResult
	var err error
	if r.ended, r.rep, err = s.released(ended); err != nil {
		return nextResult{}, fmt.Errorf("next: %w", err)
	}
	if r.g, r.m, r.granted, err = s.granted(granted, owner); err != nil {
		return nextResult{}, fmt.Errorf("next: %w", err)
	}
	if r.granted && (!acked || waitErr != nil) {
		// The end stands (a release needs no acknowledgement); the grant
		// does not.
		err := s.unconfirmed(ctx, r.g, owner, waitErr)
		r.g, r.granted, r.grantErr = grant{}, false, err
		return r, nil
	}
	n, _ := res[2].(int64)
	r.failures = int(n)
	r.fromEmpty = res[3] == int64(1)
	return r, nil
}

// resumeWake is how many waiters a Resume wakes at once.
const resumeWake = 64

func (s *redisStore) pause(ctx context.Context, on bool) (time.Time, error) {
	flag := ""
	if on {
		flag = "1"
	}
	ms, err := pauseScript.Run(ctx, s.client, []string{s.keys.Control(), s.keys.Waiters()}, flag, s.keys.WakePrefix(), resumeWake).Int64()
	if err != nil {
		return time.Time{}, s.mapErr("pause", err)
	}
	if ms == 0 {
		return time.Time{}, nil
	}
	return msTime(ms), nil
}

func (s *redisStore) paused(ctx context.Context) (time.Time, error) {
	ms, err := s.client.HGet(ctx, s.keys.Control(), "paused").Int64()
	switch {
	case errors.Is(err, redis.Nil):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, s.mapErr("paused", err)
	}
	return msTime(ms), nil
}

func (s *redisStore) intervene(ctx context.Context, op intervention, item string) (int, error) {
	res, err := interveneScript.Run(ctx, s.client, []string{s.keys.Lock(item), s.keys.Index(), s.keys.Waiters()},
		string(op), item, quarantineMarker, s.keys.WakePrefix(), s.wakeN, s.keys.Cancels(), cooldownMarker).Slice()
	if err != nil {
		return 0, s.mapErr(string(op), err)
	}
	code, ok := res[0].(int64)
	if !ok {
		return 0, fmt.Errorf("%s: intervene.lua answered %v", op, res)
	}
	return int(code), nil
}

// onCancel sets f to be told of every lease of the pool an operator
// cancels (from the cancel channel).
func (s *redisStore) onCancel(f func(item string, token int64)) {
	s.mu.Lock()
	s.cancelled = f
	s.mu.Unlock()
}

// tellCancel hands a cancel message, "<item> <token>", to the allocator.
func (s *redisStore) tellCancel(payload string) {
	sp := strings.LastIndexByte(payload, ' ')
	if sp < 0 {
		return
	}
	token, err := strconv.ParseInt(payload[sp+1:], 10, 64)
	if err != nil {
		return
	}
	s.mu.Lock()
	f := s.cancelled
	s.mu.Unlock()
	if f != nil {
		f(payload[:sp], token)
	}
}

func (s *redisStore) quarantine(ctx context.Context, item string, d time.Duration) error {
	err := quarantineScript.Run(ctx, s.client, []string{s.keys.Lock(item), s.keys.Index()}, item, d.Milliseconds(), quarantineMarker).Err()
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
	known, longest := s.epochs.Args(0)
	res, err := syncScript.Run(ctx, s.client, s.syncKeys, 1000, fullArg, s.keys.WakePrefix(), s.wakeN, s.syncEvery.Milliseconds(), known, longest).Slice()
	if err != nil {
		return false, s.mapErr("sync", err)
	}
	if len(res) != 7 {
		return false, fmt.Errorf("sync: sync.lua answered %v", res)
	}
	if _, err := s.seen(res, 3); err != nil {
		return false, fmt.Errorf("sync: %w", err)
	}
	return res[2] == int64(1), nil
}
