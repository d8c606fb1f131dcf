package lock

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"strconv"
	"strings"
	"time"
)

// Status is the state of one lock key, as reported by [Ops.KeyStatus].
// The numeric values are those of the Python package's LockStatus.
type Status int

const (
	// Free: nobody holds the key.
	Free Status = 0x00
	// Unavailable: the key is held with a TTL longer than the caller's
	// timeout, i.e. it was marked unavailable for a while on purpose.
	Unavailable Status = 0x01
	// Locked: the key is held with a TTL no longer than the caller's timeout.
	Locked Status = 0x02
	// Error: the key is held without any expiry, which a lease never is.
	Error Status = 0x04
)

// String returns the lower-case name of the status.
func (s Status) String() string {
	switch s {
	case Free:
		return "free"
	case Unavailable:
		return "unavailable"
	case Locked:
		return "locked"
	case Error:
		return "error"
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// NoExpiry asks for a lock that never expires. It is accepted wherever a TTL
// is, and reported by [Locker.TTL] for such a lock. Any other TTL below one
// millisecond is rejected with [ErrInvalidTTL].
const NoExpiry time.Duration = -1

// Limits on caller input.
const (
	// MaxKeyLen is the longest key or pool item name, in bytes.
	MaxKeyLen = 1024
	// MaxValueLen is the longest owner value, in bytes.
	MaxValueLen = 4096
	// DefaultEpsilon is the tolerance of the conditional operations' >=, <=,
	// == and != comparisons, as in the Python package.
	DefaultEpsilon = 1e-6
	// DefaultLockSuffix and DefaultPoolSuffix are the Python package's
	// default key suffixes.
	DefaultLockSuffix = "lock"
	DefaultPoolSuffix = "lock-pool"
)

// Sentinel errors. Returned errors wrap them with the operation and key.
var (
	// ErrInvalidKey: a key or item name is empty, longer than MaxKeyLen, or
	// contains a NUL byte.
	ErrInvalidKey = errors.New("lock: invalid key")
	// ErrInvalidValue: an owner value is longer than MaxValueLen, or a
	// conditional operation was given an unknown Comparison.
	ErrInvalidValue = errors.New("lock: invalid value")
	// ErrInvalidTTL: a TTL or timeout is below one millisecond and is not
	// NoExpiry.
	ErrInvalidTTL = errors.New("lock: invalid ttl")
	// ErrInvalidConfig: a constructor was given a bad configuration (for
	// example an empty prefix or a negative epsilon).
	ErrInvalidConfig = errors.New("lock: invalid config")
	// ErrNotNumeric: a conditional operation was given NaN or an infinity,
	// or the key it compares against holds a value that is not a decimal
	// number. Nothing was written.
	ErrNotNumeric = errors.New("lock: value is not a number")
	// ErrWrongType: a lock key holds something other than a string, or a
	// pool key something other than a set. Nothing was written.
	ErrWrongType = errors.New("lock: key holds the wrong type")
)

// Locker is the spec's BaseLock: expiring locks on keys with owner values.
// It holds the primitives a backend implements; the operations the spec
// derives from them (KeyStatus, IsLocked and the twelve named conditional
// operations) are written once, in [Ops], which [RedisLock] and
// [MemoryLock] embed.
//
// Every method is safe for concurrent use, and every method validates its
// input before touching the store: an invalid key, value or TTL returns an
// error and writes nothing.
type Locker interface {
	// Lock sets the key to value with the TTL only if nobody holds it, and
	// reports whether it did.
	Lock(ctx context.Context, key, value string, ttl time.Duration) (bool, error)
	// Update sets the key to value with the TTL whoever holds it. It is the
	// spec's forceful update; holders should use Refresh.
	Update(ctx context.Context, key, value string, ttl time.Duration) error
	// RLock is the re-entrant Lock: it succeeds when the key is free or
	// already holds value, and then (re)sets the TTL.
	RLock(ctx context.Context, key, value string, ttl time.Duration) (bool, error)
	// Unlock deletes the key whoever holds it and reports whether it was
	// held. It is the spec's forceful unlock; holders should use Release.
	Unlock(ctx context.Context, key string) (bool, error)
	// LockValue returns the holder's value and true, or "" and false when
	// nobody holds the key.
	LockValue(ctx context.Context, key string) (string, bool, error)
	// TTL returns the key's remaining time to live (NoExpiry for a lock that
	// never expires) and true, or 0 and false when nobody holds it.
	TTL(ctx context.Context, key string) (time.Duration, bool, error)
	// Refresh resets the TTL only while the key still holds value. It
	// reports false when the lock was lost (expired or held by another).
	Refresh(ctx context.Context, key, value string, ttl time.Duration) (bool, error)
	// Release deletes the key only if it holds value, and reports whether it
	// did.
	Release(ctx context.Context, key, value string) (bool, error)
	// Replace is the holder's compare-and-set: only while the key holds
	// oldValue, it sets the key to newValue with the TTL, and it reports
	// whether it did. An absent or expired key, or one holding another
	// value, is left alone.
	Replace(ctx context.Context, key, oldValue, newValue string, ttl time.Duration) (bool, error)
	// SetIf sets the key to the number set with the TTL when the key is not
	// held or "cmp c the key's number" holds, and reports whether it did;
	// see [Comparison] for the comparisons and their epsilon. A key holding
	// a non-number gives ErrNotNumeric and is left alone.
	SetIf(ctx context.Context, key string, c Comparison, cmp, set float64, ttl time.Duration) (bool, error)
	// DelIf deletes the key when "cmp c the key's number" holds, and
	// reports true then or when the key is not held.
	DelIf(ctx context.Context, key string, c Comparison, cmp float64) (bool, error)
}

// Comparison is one of the six comparisons of the conditional operations,
// "cmp c current" where cmp is the caller's number and current the key's.
// GE, LE, EQ and NE allow the lock's epsilon, as in the Python package.
type Comparison string

// The comparisons. The values are what scripts/cond.lua receives.
const (
	GT Comparison = ">"  // cmp > current
	LT Comparison = "<"  // cmp < current
	GE Comparison = ">=" // cmp >= current - epsilon
	LE Comparison = "<=" // cmp <= current + epsilon
	EQ Comparison = "==" // |cmp - current| < epsilon
	NE Comparison = "!=" // |cmp - current| > epsilon
)

// ItemLock is one pool member and whether its lock is held.
type ItemLock struct {
	Item   string
	Locked bool
}

// Pool is the spec's BaseLockPool: a Locker plus a set of member items. The
// pool's locks are ordinary keys of its Locker; membership and locking are
// independent, as in the Python package.
type Pool interface {
	Locker

	// Extend adds items to the pool. Nil or empty adds nothing. Every item
	// is validated before any is written.
	Extend(ctx context.Context, items []string) error
	// Shrink removes items from the pool. Nil or empty removes nothing.
	Shrink(ctx context.Context, items []string) error
	// Assign replaces the pool's members with items, atomically: readers see
	// the old set or the new one, and a failed Assign leaves the old set
	// intact. Nil or empty clears the pool.
	Assign(ctx context.Context, items []string) error
	// Clear removes every member. Locks are not touched.
	Clear(ctx context.Context) error
	// Items streams the members in no particular order, without loading the
	// whole pool at once. An item may be yielded twice if the pool changes
	// during the iteration. Iteration stops at the first error.
	Items(ctx context.Context) iter.Seq2[string, error]
	// Contains reports whether item is a member.
	Contains(ctx context.Context, item string) (bool, error)
	// Len returns the number of members.
	Len(ctx context.Context) (int64, error)
	// LockStatus reports, for each of items, whether its lock is held (the
	// spec's _get_key_lock_status).
	LockStatus(ctx context.Context, items []string) ([]bool, error)
	// ItemLocks streams every member with whether its lock is held (the
	// spec's items_locked_status and values_lock_status).
	ItemLocks(ctx context.Context) iter.Seq2[ItemLock, error]
	// HealthCheck counts the members whose lock is held and those whose lock
	// is free.
	HealthCheck(ctx context.Context) (locked, free int64, err error)
}

// holds reports whether "cmp op cur" holds with tolerance eps, exactly as
// the Python package (and cond.lua) computes it in float64.
func (op Comparison) holds(cmp, cur, eps float64) bool {
	switch op {
	case GT:
		return cmp > cur
	case LT:
		return cmp < cur
	case GE:
		return cmp >= cur-eps
	case LE:
		return cmp <= cur+eps
	case EQ:
		return math.Abs(cmp-cur) < eps
	case NE:
		return math.Abs(cmp-cur) > eps
	}
	return false
}

// checkKey validates a key or pool item name.
func checkKey(op, key string) error {
	err := ValidateKey(key)
	switch {
	case err == nil:
		return nil
	case strings.IndexByte(key, 0) >= 0 && len(key) <= MaxKeyLen:
		return fmt.Errorf("lock: %s %q: %w", op, key, err)
	}
	return fmt.Errorf("lock: %s: %w", op, err)
}

// ValidateKey reports why key cannot be a lock key or pool item (empty,
// longer than MaxKeyLen, holding a NUL byte), wrapping ErrInvalidKey; nil
// when it can. Every operation checks its keys this way.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrInvalidKey, len(key), MaxKeyLen)
	case strings.IndexByte(key, 0) >= 0:
		return fmt.Errorf("%w: contains a NUL byte", ErrInvalidKey)
	}
	return nil
}

func checkValue(op, key, value string) error {
	if len(value) > MaxValueLen {
		return fmt.Errorf("lock: %s %q: %w: %d bytes, limit %d", op, key, ErrInvalidValue, len(value), MaxValueLen)
	}
	return nil
}

// checkTTL validates a TTL and returns it in whole milliseconds (-1 for
// NoExpiry). Sub-millisecond parts are dropped, so a lease never outlives
// what its holder asked for.
func checkTTL(op, key string, ttl time.Duration) (int64, error) {
	if ttl == NoExpiry {
		return -1, nil
	}
	if ttl < time.Millisecond {
		return 0, fmt.Errorf("lock: %s %q: %w: %v (want >= 1ms, or NoExpiry)", op, key, ErrInvalidTTL, ttl)
	}
	return ttl.Milliseconds(), nil
}

// checkTimeout validates KeyStatus's timeout, which must be a real duration.
func checkTimeout(op, key string, timeout time.Duration) error {
	if timeout < time.Millisecond {
		return fmt.Errorf("lock: %s %q: %w: timeout %v (want >= 1ms)", op, key, ErrInvalidTTL, timeout)
	}
	return nil
}

// checkNumber rejects NaN and infinities, which have no decimal form that
// both backends parse the same way.
func checkNumber(op, key string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("lock: %s %q: %w: %v", op, key, ErrNotNumeric, v)
	}
	return nil
}

// formatNumber is the decimal form stored for a number: the shortest that
// parses back to the same float64, which Lua's tonumber also accepts.
func formatNumber(v float64) string {
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// parseNumber parses a stored value with the grammar cond.lua accepts:
// optional sign, digits with an optional fraction (or a fraction alone), and
// an optional exponent. No spaces, hex, "inf" or "nan".
func parseNumber(s string) (float64, bool) {
	if !isDecimal(s) {
		return 0, false
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, false
	}
	// Out of range parses to ±Inf or 0 as C's strtod (and so Lua) does.
	return v, true
}

func isDecimal(s string) bool {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	intDigits := 0
	for i < len(s) && isDigit(s[i]) {
		i++
		intDigits++
	}
	fracDigits := 0
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && isDigit(s[i]) {
			i++
			fracDigits++
		}
	}
	if intDigits == 0 && fracDigits == 0 {
		return false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		expDigits := 0
		for i < len(s) && isDigit(s[i]) {
			i++
			expDigits++
		}
		if expDigits == 0 {
			return false
		}
	}
	return i == len(s)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// checkItems validates every item before anything is written.
func checkItems(op string, items []string) error {
	for _, it := range items {
		if err := checkKey(op, it); err != nil {
			return err
		}
	}
	return nil
}

// statusOf maps a remaining TTL to a Status as the Python package does.
func statusOf(ttl time.Duration, found bool, timeout time.Duration) Status {
	switch {
	case !found:
		return Free
	case ttl == NoExpiry:
		return Error
	case ttl > timeout:
		return Unavailable
	}
	return Locked
}

// checkEpsilon validates a configured epsilon.
func checkEpsilon(eps float64) error {
	if eps < 0 || math.IsNaN(eps) || math.IsInf(eps, 0) {
		return fmt.Errorf("%w: Epsilon %v must be finite and >= 0", ErrInvalidConfig, eps)
	}
	return nil
}

func checkKeyValueTTL(op, key, value string, ttl time.Duration) (int64, error) {
	if err := checkKey(op, key); err != nil {
		return 0, err
	}
	if err := checkValue(op, key, value); err != nil {
		return 0, err
	}
	return checkTTL(op, key, ttl)
}

// checkReplace validates Replace's input: the key, both values and the TTL.
func checkReplace(op, key, oldValue, newValue string, ttl time.Duration) (int64, error) {
	if err := checkKey(op, key); err != nil {
		return 0, err
	}
	if err := checkValue(op, key, oldValue); err != nil {
		return 0, err
	}
	return checkKeyValueTTL(op, key, newValue, ttl)
}
