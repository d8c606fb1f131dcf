package lock

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/luascript"
	"github.com/lockpool/lockpool/pkg/keyspace"
)

var (
	//go:embed scripts/setttl.lua
	setttlLua string
	// pieces are what the lock's scripts may use (their "-- uses:" lines
	// say which): the shared ones and setttl.
	pieces = luascript.Pieces(luascript.NewPiece("setttl", setttlLua))

	//go:embed scripts/rlock.lua
	rlockLua    string
	rlockScript = pieces.New("lock/rlock.lua", rlockLua)

	//go:embed scripts/refresh.lua
	refreshLua    string
	refreshScript = pieces.New("lock/refresh.lua", refreshLua)

	//go:embed scripts/release.lua
	releaseLua    string
	releaseScript = pieces.New("lock/release.lua", releaseLua)

	//go:embed scripts/replace.lua
	replaceLua    string
	replaceScript = pieces.New("lock/replace.lua", replaceLua)

	//go:embed scripts/pttl.lua
	pttlLua    string
	pttlScript = pieces.New("lock/pttl.lua", pttlLua)

	//go:embed scripts/cond.lua
	condLua    string
	condScript = pieces.New("lock/cond.lua", condLua)
)

// Config configures a Redis-backed lock or pool.
type Config struct {
	// Prefix starts every key. Required; it names the application, as the
	// Python package's prefix does.
	Prefix string
	// Suffix follows the prefix. Default DefaultLockSuffix ("lock") for a
	// RedisLock, DefaultPoolSuffix ("lock-pool") for a RedisLockPool.
	Suffix string
	// Epsilon is the tolerance of the conditional comparisons. Default
	// DefaultEpsilon (1e-6); it must be finite and not negative.
	Epsilon float64
}

func (c Config) withDefaults(suffix string) Config {
	c.Suffix = cmp.Or(c.Suffix, suffix)
	c.Epsilon = cmp.Or(c.Epsilon, DefaultEpsilon)
	return c
}

func (c Config) validate() error { return c.Validate() }

// Validate reports every bad setting of c as a *FieldError wrapping
// ErrInvalidConfig, joined with errors.Join (see FieldErrors): an empty
// Prefix, a NUL byte in Prefix or Suffix, Prefix and Suffix together
// longer than MaxKeyLen (reported on Suffix), an Epsilon that is negative
// or not finite. An empty Suffix or Epsilon is the default.
func (c Config) Validate() error {
	var p []error
	bad := func(field, format string, args ...any) {
		p = append(p, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...), Err: ErrInvalidConfig})
	}
	switch {
	case c.Prefix == "":
		bad("Prefix", "must not be empty")
	case strings.IndexByte(c.Prefix, 0) >= 0:
		bad("Prefix", "must not contain a NUL byte")
	}
	if strings.IndexByte(c.Suffix, 0) >= 0 {
		bad("Suffix", "must not contain a NUL byte")
	}
	if n := len(c.Prefix) + len(c.Suffix); n > MaxKeyLen {
		bad("Suffix", "must be at most %d bytes together with Prefix, got %d", MaxKeyLen, n)
	}
	if checkEpsilon(c.Epsilon) != nil {
		bad("Epsilon", "must be finite and >= 0, got %v", c.Epsilon)
	}
	return errors.Join(p...)
}

// RedisLock is the Redis backend of [Locker]. Lock, Update and Unlock are
// single native commands (SET NX GET PX, SET GET PX, GETDEL), so they cost
// what a raw SET or DEL costs; the others are one script each, loaded once.
// It is safe for concurrent use.
type RedisLock struct {
	Ops
	client redis.UniversalClient
	keys   keyspace.Pool
	eps    string // the epsilon, formatted once for cond.lua
}

var _ Locker = (*RedisLock)(nil)

// NewRedisLock returns a lock on keys "<Prefix>|<Suffix>:<key>".
//
// The client's context handling decides how long a call may block: create
// it with ContextTimeoutEnabled so that a stalled Redis cannot hold a call
// past its context's deadline.
func NewRedisLock(client redis.UniversalClient, cfg Config) (*RedisLock, error) {
	cfg = cfg.withDefaults(DefaultLockSuffix)
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("lock: NewRedisLock: %w", err)
	}
	if client == nil {
		return nil, fmt.Errorf("lock: NewRedisLock: %w: nil client", ErrInvalidConfig)
	}
	return newRedisLock(client, cfg), nil
}

func newRedisLock(client redis.UniversalClient, cfg Config) *RedisLock {
	l := &RedisLock{
		client: client,
		keys:   keyspace.New(cfg.Prefix, cfg.Suffix),
		eps:    formatNumber(cfg.Epsilon),
	}
	l.Ops = Ops{l}
	return l
}

// Key returns the Redis key that holds the lock on key.
func (l *RedisLock) Key(key string) string { return l.keys.Lock(key) }

// Client returns the Redis client the lock was created with.
func (l *RedisLock) Client() redis.UniversalClient { return l.client }

// Keys returns the keyspace of the lock's prefix and suffix: every key
// name lockpool derives from them (see pkg/keyspace).
func (l *RedisLock) Keys() keyspace.Pool { return l.keys }

// wrap adds the operation and the Redis key to a client error, and maps a
// WRONGTYPE reply to ErrWrongType.
func wrap(op, rkey string, err error) error {
	if isWrongType(err) {
		return fmt.Errorf("lock: %s %q: %w: %w", op, rkey, ErrWrongType, err)
	}
	return fmt.Errorf("lock: %s %q: %w", op, rkey, err)
}

func isWrongType(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.Contains(rerr.Error(), "WRONGTYPE")
}

func (l *RedisLock) Update(ctx context.Context, key, value string, ttl time.Duration) error {
	const op = "Update"
	ms, err := checkKeyValueTTL(op, key, value, ttl)
	if err != nil {
		return err
	}
	// GET makes SET refuse (WRONGTYPE) rather than replace a non-string.
	args := []any{"set", l.Key(key), value, "get"}
	if ms > 0 {
		args = append(args, "px", ms)
	}
	if err := l.client.Do(ctx, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return wrap(op, l.Key(key), err)
	}
	return nil
}

func (l *RedisLock) Lock(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	const op = "Lock"
	ms, err := checkKeyValueTTL(op, key, value, ttl)
	if err != nil {
		return false, err
	}
	// SET NX GET (Redis >= 7.0): one command like a raw SET NX, but it
	// refuses a non-string key with WRONGTYPE instead of reporting "taken".
	args := []any{"set", l.Key(key), value, "nx", "get"}
	if ms > 0 {
		args = append(args, "px", ms)
	}
	err = l.client.Do(ctx, args...).Err()
	switch {
	case errors.Is(err, redis.Nil):
		return true, nil // nothing was there: we set it
	case err != nil:
		return false, wrap(op, l.Key(key), err)
	}
	return false, nil
}

func (l *RedisLock) LockValue(ctx context.Context, key string) (string, bool, error) {
	const op = "LockValue"
	if err := checkKey(op, key); err != nil {
		return "", false, err
	}
	v, err := l.client.Get(ctx, l.Key(key)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", false, nil
	case err != nil:
		return "", false, wrap(op, l.Key(key), err)
	}
	return v, true, nil
}

func (l *RedisLock) RLock(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	return l.ownerScript(ctx, "RLock", rlockScript, key, value, ttl)
}

func (l *RedisLock) Refresh(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	return l.ownerScript(ctx, "Refresh", refreshScript, key, value, ttl)
}

func (l *RedisLock) Release(ctx context.Context, key, value string) (bool, error) {
	const op = "Release"
	if err := checkKey(op, key); err != nil {
		return false, err
	}
	if err := checkValue(op, key, value); err != nil {
		return false, err
	}
	n, err := releaseScript.Run(ctx, l.client, []string{l.Key(key)}, value).Int()
	if err != nil {
		return false, wrap(op, l.Key(key), err)
	}
	return n == 1, nil
}

// Replace implements [Locker] with one script (scripts/replace.lua).
func (l *RedisLock) Replace(ctx context.Context, key, oldValue, newValue string, ttl time.Duration) (bool, error) {
	const op = "Replace"
	ms, err := checkReplace(op, key, oldValue, newValue, ttl)
	if err != nil {
		return false, err
	}
	n, err := replaceScript.Run(ctx, l.client, []string{l.Key(key)}, oldValue, newValue, ms).Int()
	if err != nil {
		return false, wrap(op, l.Key(key), err)
	}
	return n == 1, nil
}

// ownerScript runs a script taking (owner value, TTL ms) that answers 1 or 0.
func (l *RedisLock) ownerScript(ctx context.Context, op string, s *redis.Script, key, value string, ttl time.Duration) (bool, error) {
	ms, err := checkKeyValueTTL(op, key, value, ttl)
	if err != nil {
		return false, err
	}
	n, err := s.Run(ctx, l.client, []string{l.Key(key)}, value, ms).Int()
	if err != nil {
		return false, wrap(op, l.Key(key), err)
	}
	return n == 1, nil
}

func (l *RedisLock) Unlock(ctx context.Context, key string) (bool, error) {
	const op = "Unlock"
	if err := checkKey(op, key); err != nil {
		return false, err
	}
	// GETDEL deletes only strings: a non-string key gets WRONGTYPE and stays.
	err := l.client.GetDel(ctx, l.Key(key)).Err()
	switch {
	case errors.Is(err, redis.Nil):
		return false, nil
	case err != nil:
		return false, wrap(op, l.Key(key), err)
	}
	return true, nil
}

func (l *RedisLock) TTL(ctx context.Context, key string) (time.Duration, bool, error) {
	const op = "TTL"
	if err := checkKey(op, key); err != nil {
		return 0, false, err
	}
	ms, err := pttlScript.Run(ctx, l.client, []string{l.Key(key)}).Int64()
	if err != nil {
		return 0, false, wrap(op, l.Key(key), err)
	}
	switch {
	case ms == -2:
		return 0, false, nil
	case ms == -1:
		return NoExpiry, true, nil
	}
	return time.Duration(ms) * time.Millisecond, true, nil
}

// SetIf implements [Locker] with one script (scripts/cond.lua).
func (l *RedisLock) SetIf(ctx context.Context, key string, c Comparison, cmp, set float64, ttl time.Duration) (bool, error) {
	a, err := checkSetIf(key, c, cmp, set, ttl)
	if err != nil {
		return false, err
	}
	return l.cond(ctx, key, a)
}

// DelIf implements [Locker] with one script (scripts/cond.lua).
func (l *RedisLock) DelIf(ctx context.Context, key string, c Comparison, cmp float64) (bool, error) {
	a, err := checkDelIf(key, c, cmp)
	if err != nil {
		return false, err
	}
	return l.cond(ctx, key, a)
}

func (l *RedisLock) cond(ctx context.Context, key string, a condArgs) (bool, error) {
	rkey := l.Key(key)
	delArg := "0"
	if a.del {
		delArg = "1"
	}
	n, err := condScript.Run(ctx, l.client, []string{rkey}, string(a.c), formatNumber(a.cmp), a.set, strconv.FormatInt(a.ms, 10), delArg, l.eps).Int()
	switch {
	case err != nil:
		return false, wrap(a.op, rkey, err)
	case n < 0:
		return false, fmt.Errorf("lock: %s %q: %w: the key holds a non-number", a.op, rkey, ErrNotNumeric)
	}
	return n == 1, nil
}
