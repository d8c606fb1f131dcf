package worker

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/epoch"
	"github.com/lockpool/lockpool/internal/history"
	"github.com/lockpool/lockpool/internal/luascript"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/keyspace"
	"github.com/lockpool/lockpool/pkg/lock"
)

var (
	//go:embed scripts/rolled.lua
	rolledLua string
	//go:embed scripts/batchend.lua
	batchendLua string
	//go:embed scripts/counts.lua
	countsLua string
	// pieces are what the batch scripts may use (their "-- uses:" lines
	// say which): the shared ones, epoch, and the batch's own.
	pieces = luascript.Pieces(epoch.Piece, history.Piece,
		luascript.NewPiece("rolled", rolledLua),
		luascript.NewPiece("batchend", batchendLua),
		luascript.NewPiece("counts", countsLua))

	//go:embed scripts/start.lua
	startLua    string
	startScript = pieces.New("worker/start.lua", startLua)

	//go:embed scripts/finish.lua
	finishLua    string
	finishScript = pieces.New("worker/finish.lua", finishLua)

	//go:embed scripts/drop.lua
	dropLua    string
	dropScript = pieces.New("worker/drop.lua", dropLua)

	//go:embed scripts/retry.lua
	retryLua    string
	retryScript = pieces.New("worker/retry.lua", retryLua)

	//go:embed scripts/progress.lua
	progressLua    string
	progressScript = pieces.New("worker/progress.lua", progressLua)
)

// maxPending bounds how many items one Pending call returns.
const maxPending = 1000

// RedisStore is the Redis backend of [Store]. It keeps run state beside
// the lock pool's keys, so every runner over the same pool shares it: the
// "run:failures" and "batch:<id>:*" keys of pkg/keyspace, with the item
// history (hist:*) and the runner registry (fleet:*). Times are the Redis
// server's, in ms since the epoch. When a batch's last item finishes, its
// six keys expire together after the retain period given to Finish.
//
// The scripts that write a batch check the dataset as the allocator's do
// (see pkg/allocator): when a batch's state went through a discontinuity
// (a restart from a snapshot, a failover that lost the last writes), its
// Progress counts it in Rollbacks, because items recorded done just before
// may be pending again and will run again.
//
// StartBatch, Finish, DropRemoved, Progress and the RunHistory and
// Registry methods are one script each; the other methods are single
// commands. A key holding another type than its
// own gives an error wrapping lock.ErrWrongType that names the key, and
// nothing is overwritten. On a Redis Cluster the pool's prefix needs a
// hash tag (see pkg/keyspace), as for the allocator. It is safe for
// concurrent use.
type RedisStore struct {
	client redis.UniversalClient
	keys   keyspace.Pool
	epochs *epoch.Tracker
}

var _ Store = (*RedisStore)(nil)

// StoreOption tunes NewRedisStore.
type StoreOption func(*storeOptions)

type storeOptions struct{ allowEviction bool }

// AllowEviction accepts a Redis that may evict keys, as
// allocator.Config.AllowEviction does.
func AllowEviction() StoreOption { return func(o *storeOptions) { o.allowEviction = true } }

// NewRedisStore keeps run state beside a Redis lock pool (the pool the
// allocator was given; the keys are pool.Keys(), see pkg/keyspace), using
// the pool's client. Like allocator.NewRedis, it first checks the server
// (allocator.CheckServer), waiting at most 10 seconds: an error wrapping
// allocator.ErrUnsafeServer refuses a server that may evict keys (unless
// AllowEviction) or a cluster the pool cannot live on.
func NewRedisStore(pool *lock.RedisLockPool, opts ...StoreOption) (*RedisStore, error) {
	var o storeOptions
	for _, f := range opts {
		f(&o)
	}
	if pool == nil {
		return nil, fmt.Errorf("worker: NewRedisStore: %w: nil pool", ErrInvalidConfig)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := allocator.CheckServer(ctx, pool.Client(), pool.Keys(), allocator.ServerOptions{AllowEviction: o.allowEviction}); err != nil {
		return nil, fmt.Errorf("worker: NewRedisStore: %w", err)
	}
	// The store learns the lease TTL from Finish. Before that, a
	// discontinuity it is the first to notice gets its quiet period from
	// the TTLs the epoch record holds, or, when they were lost with it, 30s
	// (epoch.lua), which allocators calling meanwhile lengthen to theirs.
	return &RedisStore{client: pool.Client(), keys: pool.Keys(), epochs: epoch.NewTracker(0, nil)}, nil
}

// failuresKey is the failure count HASH of a scope: "" for loop mode, else
// a batch id.
func (s *RedisStore) failuresKey(scope string) string {
	if scope == "" {
		return s.keys.Failures()
	}
	return s.keys.Batch(scope).Failures
}

// batchKeys are the keys a batch script that writes takes: the pool's
// members or an item's lock, the batch's five keys, then the epoch record,
// the fencing counter and the index, then the batch's errors HASH.
func (s *RedisStore) batchKeys(first, id string) []string {
	b := s.keys.Batch(id)
	return []string{first, b.Todo, b.Done, b.Failed, b.Failures, b.Meta, s.keys.Epoch(), s.keys.Fence(), s.keys.Index(), b.Errors}
}

// seen records the epoch fields a script returned at res[i:].
func (s *RedisStore) seen(res []any, i int) error {
	st, id, err := epoch.Parse(res, i)
	if err == nil {
		s.epochs.Seen(st, id)
	}
	return err
}

// Failures implements [Store].
func (s *RedisStore) Failures(ctx context.Context, scope, item string) (int, error) {
	const op = "Failures"
	if err := checkScopeItem(op, scope, item); err != nil {
		return 0, err
	}
	key := s.failuresKey(scope)
	n, err := s.client.HGet(ctx, key, item).Int()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, redisErr(op, itemSubject(scope, item), key, err)
	}
	return n, nil
}

// AddFailure implements [Store].
func (s *RedisStore) AddFailure(ctx context.Context, scope, item string) (int, error) {
	const op = "AddFailure"
	if err := checkScopeItem(op, scope, item); err != nil {
		return 0, err
	}
	key := s.failuresKey(scope)
	n, err := s.client.HIncrBy(ctx, key, item, 1).Result()
	if err != nil {
		return 0, redisErr(op, itemSubject(scope, item), key, err)
	}
	return int(n), nil
}

// ClearFailures implements [Store].
func (s *RedisStore) ClearFailures(ctx context.Context, scope, item string) error {
	const op = "ClearFailures"
	if err := checkScopeItem(op, scope, item); err != nil {
		return err
	}
	key := s.failuresKey(scope)
	if err := s.client.HDel(ctx, key, item).Err(); err != nil {
		return redisErr(op, itemSubject(scope, item), key, err)
	}
	return nil
}

// StartBatch implements [Store]. It copies the pool's member set with one
// SUNIONSTORE: a million members take about a second of the server's time.
func (s *RedisStore) StartBatch(ctx context.Context, id string) (Progress, error) {
	const op = "StartBatch"
	if err := checkBatch(op, id); err != nil {
		return Progress{}, err
	}
	known, longest := s.epochs.Args(0)
	res, err := startScript.Run(ctx, s.client, s.batchKeys(s.keys.Members(), id), known, longest).Slice()
	if err != nil {
		return Progress{}, redisErr(op, batchSubject(id), "", err)
	}
	if len(res) != 11 {
		return Progress{}, fmt.Errorf("worker: %s %s: start.lua answered %d values, want 11", op, batchSubject(id), len(res))
	}
	if err := s.seen(res, 7); err != nil {
		return Progress{}, fmt.Errorf("worker: %s %s: %w", op, batchSubject(id), err)
	}
	p, found, err := progressOf(int64s(res[:7]))
	if err == nil && !found {
		err = errors.New("start.lua answered no progress")
	}
	if err != nil {
		return Progress{}, fmt.Errorf("worker: %s %s: %w", op, batchSubject(id), err)
	}
	return p, nil
}

// Pending implements [Store]. n is clamped to 1..1000.
func (s *RedisStore) Pending(ctx context.Context, id string, n int) ([]string, error) {
	const op = "Pending"
	if err := checkBatch(op, id); err != nil {
		return nil, err
	}
	todo := s.keys.Batch(id).Todo
	items, err := s.client.SRandMemberN(ctx, todo, int64(clampPending(n))).Result()
	if err != nil {
		return nil, redisErr(op, batchSubject(id), todo, err)
	}
	return items, nil
}

// IsPending implements [Store].
func (s *RedisStore) IsPending(ctx context.Context, id, item string) (bool, error) {
	const op = "IsPending"
	if err := checkBatchItem(op, id, item); err != nil {
		return false, err
	}
	todo := s.keys.Batch(id).Todo
	ok, err := s.client.SIsMember(ctx, todo, item).Result()
	if err != nil {
		return false, redisErr(op, itemSubject(id, item), todo, err)
	}
	return ok, nil
}

// Finish implements [Store]. Checking the lease, moving the item and
// recording its history are one script, so no other lease on the item can
// come between them. A retain below zero keeps the batch forever, as 0
// does.
func (s *RedisStore) Finish(ctx context.Context, id string, lease *allocator.Lease, ok bool, retain time.Duration, rec *allocator.RunRecord) (bool, error) {
	const op = "Finish"
	if err := checkFinish(op, id, lease); err != nil {
		return false, err
	}
	okArg := "0"
	if ok {
		okArg = "1"
	}
	var r, tail, batchErr string
	var keep int64
	if rec != nil {
		r, tail, keep = history.Entry(*rec).Args()
		batchErr = history.Head(rec.Error, history.MaxError)
	}
	known, longest := s.epochs.Args(lease.TTL())
	keys := append(s.batchKeys(s.keys.Lock(lease.Item()), id), s.historyKeys(lease.Item())...)
	res, err := finishScript.Run(ctx, s.client, keys,
		lease.Value(), lease.Item(), okArg, retainMs(retain), lease.TTL().Milliseconds(), known, longest,
		r, lease.Token(), tail, keep, batchErr).Slice()
	if err != nil {
		return false, redisErr(op, itemSubject(id, lease.Item()), "", err)
	}
	if err := s.seen(res, 1); err != nil {
		return false, fmt.Errorf("worker: %s %s: %w", op, itemSubject(id, lease.Item()), err)
	}
	return res[0] == int64(1), nil
}

// DropRemoved implements [Store].
func (s *RedisStore) DropRemoved(ctx context.Context, id string, items []string, retain time.Duration) (int, error) {
	const op = "DropRemoved"
	if err := checkBatch(op, id); err != nil {
		return 0, err
	}
	if len(items) == 0 {
		return 0, nil
	}
	if len(items) > maxPending {
		return 0, fmt.Errorf("worker: %s %s: %w: %d items, limit %d", op, batchSubject(id), ErrInvalidConfig, len(items), maxPending)
	}
	known, longest := s.epochs.Args(0)
	args := make([]any, 0, len(items)+3)
	args = append(args, retainMs(retain), known, longest)
	for _, it := range items {
		if err := checkBatchItem(op, id, it); err != nil {
			return 0, err
		}
		args = append(args, it)
	}
	res, err := dropScript.Run(ctx, s.client, s.batchKeys(s.keys.Members(), id), args...).Slice()
	if err != nil {
		return 0, redisErr(op, batchSubject(id), "", err)
	}
	if err := s.seen(res, 1); err != nil {
		return 0, fmt.Errorf("worker: %s %s: %w", op, batchSubject(id), err)
	}
	n, _ := res[0].(int64)
	return int(n), nil
}

// RetryFailed implements [Store].
func (s *RedisStore) RetryFailed(ctx context.Context, id string) (int, error) {
	const op = "RetryFailed"
	if err := checkBatch(op, id); err != nil {
		return 0, err
	}
	n, err := retryScript.Run(ctx, s.client, s.batchKeys(s.keys.Members(), id)).Int()
	if err != nil {
		return 0, redisErr(op, batchSubject(id), "", err)
	}
	return n, nil
}

// Progress implements [Store].
func (s *RedisStore) Progress(ctx context.Context, id string) (Progress, bool, error) {
	const op = "Progress"
	if err := checkBatch(op, id); err != nil {
		return Progress{}, false, err
	}
	k := s.keys.Batch(id)
	res, err := progressScript.Run(ctx, s.client, []string{k.Done, k.Failed, k.Meta}).Int64Slice()
	if err != nil {
		return Progress{}, false, redisErr(op, batchSubject(id), "", err)
	}
	p, found, err := progressOf(res)
	if err != nil {
		return Progress{}, false, fmt.Errorf("worker: %s %s: %w", op, batchSubject(id), err)
	}
	return p, found, nil
}

// progressOf reads a script's {total, done, failed, started_ms,
// finished_ms, rollbacks, rolled_ms}, or {} for no batch.
func progressOf(res []int64) (Progress, bool, error) {
	switch len(res) {
	case 0:
		return Progress{}, false, nil
	case 7:
	default:
		return Progress{}, false, fmt.Errorf("script answered %d values, want 7", len(res))
	}
	p := Progress{Total: res[0], Done: res[1], Failed: res[2], Started: time.UnixMilli(res[3]), Rollbacks: res[5]}
	if res[4] > 0 {
		p.Finished = time.UnixMilli(res[4])
	}
	if res[6] > 0 {
		p.RolledBack = time.UnixMilli(res[6])
	}
	return p, true, nil
}

// int64s converts a script's integer replies; anything else reads as 0.
func int64s(vs []any) []int64 {
	out := make([]int64, len(vs))
	for i, v := range vs {
		out[i], _ = v.(int64)
	}
	return out
}

// retainMs is retain in whole milliseconds, at least 1 for a positive
// retain (PEXPIRE 0 would delete at once), 0 for none.
func retainMs(retain time.Duration) int64 {
	if retain <= 0 {
		return 0
	}
	return max(1, retain.Milliseconds())
}

// redisErr wraps a Redis error with the operation and its subject, mapping
// WRONGTYPE to lock.ErrWrongType. key names the key the command used; the
// scripts name it in their own WRONGTYPE replies, so it is "" for them.
func redisErr(op, subject, key string, err error) error {
	var rerr redis.Error
	if errors.As(err, &rerr) && strings.Contains(rerr.Error(), "WRONGTYPE") {
		if key != "" {
			return fmt.Errorf("worker: %s %s: key %q: %w: %w", op, subject, key, lock.ErrWrongType, err)
		}
		return fmt.Errorf("worker: %s %s: %w: %w", op, subject, lock.ErrWrongType, err)
	}
	return fmt.Errorf("worker: %s %s: %w", op, subject, err)
}

// itemSubject names an item and its scope in errors.
func itemSubject(scope, item string) string {
	if scope == "" {
		return strconv.Quote(item)
	}
	return strconv.Quote(item) + " in batch " + strconv.Quote(scope)
}

// batchSubject names a batch in errors.
func batchSubject(id string) string { return "batch " + strconv.Quote(id) }

// clampPending bounds Pending's n to 1..maxPending: asking for none would
// read as "the batch is finished", and a negative count would let Redis
// repeat items.
func clampPending(n int) int { return min(max(n, 1), maxPending) }

// checkItem validates an item name as pkg/lock does, before anything is
// read or written.
func checkItem(op, item string) error {
	switch {
	case item == "":
		return fmt.Errorf("worker: %s: %w: empty item", op, lock.ErrInvalidKey)
	case len(item) > lock.MaxKeyLen:
		return fmt.Errorf("worker: %s: %w: item is %d bytes, limit %d", op, lock.ErrInvalidKey, len(item), lock.MaxKeyLen)
	case strings.IndexByte(item, 0) >= 0:
		return fmt.Errorf("worker: %s %q: %w: contains a NUL byte", op, item, lock.ErrInvalidKey)
	}
	return nil
}

func checkBatch(op, id string) error {
	if err := ValidateBatchID(id); err != nil {
		return fmt.Errorf("worker: %s: %w", op, err)
	}
	return nil
}

// checkScopeItem validates a failure scope ("" or a batch id) and an item.
func checkScopeItem(op, scope, item string) error {
	if scope != "" {
		if err := checkBatch(op, scope); err != nil {
			return err
		}
	}
	return checkItem(op, item)
}

func checkBatchItem(op, id, item string) error {
	if err := checkBatch(op, id); err != nil {
		return err
	}
	return checkItem(op, item)
}

func checkFinish(op, id string, lease *allocator.Lease) error {
	if lease == nil {
		return fmt.Errorf("worker: %s: %w: nil lease", op, ErrInvalidConfig)
	}
	return checkBatchItem(op, id, lease.Item())
}
