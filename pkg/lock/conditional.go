package lock

import (
	"context"
	"fmt"
	"time"
)

// Ops is a [Locker] with the operations the spec derives from its
// primitives: KeyStatus, IsLocked and the twelve named conditional set and
// delete operations, written once here for every backend. [RedisLock] and
// [MemoryLock] (and so both pools) embed one, so every operation of the
// spec is a method of theirs; wrap any other Locker to get them:
//
//	ops := lock.Ops{Locker: l}
//	ok, err := ops.SetGT(ctx, "high-water", v, v, time.Hour)
//
// The conditional operations compare the number given with the number the
// key holds (see [Comparison]). When the key is not held, or the comparison
// holds, the Set operations set the key to set with the TTL and the Del
// operations delete it; either way they report true. Otherwise nothing
// changes and they report false. A key holding a non-number gives
// ErrNotNumeric and is left alone.
type Ops struct{ Locker }

// KeyStatus reports Free when the key is not held, Unavailable when its
// remaining TTL exceeds timeout, Error when it never expires, and Locked
// otherwise (the Python package's LockStatus).
func (o Ops) KeyStatus(ctx context.Context, key string, timeout time.Duration) (Status, error) {
	const op = "KeyStatus"
	if err := checkKey(op, key); err != nil {
		return Error, err
	}
	if err := checkTimeout(op, key, timeout); err != nil {
		return Error, err
	}
	ttl, found, err := o.TTL(ctx, key)
	if err != nil {
		return Error, err
	}
	return statusOf(ttl, found, timeout), nil
}

// IsLocked reports whether anybody holds the key.
func (o Ops) IsLocked(ctx context.Context, key string) (bool, error) {
	if err := checkKey("IsLocked", key); err != nil {
		return false, err
	}
	_, found, err := o.TTL(ctx, key)
	return found, err
}

// SetGT sets the key when cmp > its number (or it is absent).
func (o Ops) SetGT(ctx context.Context, key string, cmp, set float64, ttl time.Duration) (bool, error) {
	return o.SetIf(ctx, key, GT, cmp, set, ttl)
}

// SetLT sets the key when cmp < its number (or it is absent).
func (o Ops) SetLT(ctx context.Context, key string, cmp, set float64, ttl time.Duration) (bool, error) {
	return o.SetIf(ctx, key, LT, cmp, set, ttl)
}

// SetGE sets the key when cmp >= its number - epsilon (or it is absent).
func (o Ops) SetGE(ctx context.Context, key string, cmp, set float64, ttl time.Duration) (bool, error) {
	return o.SetIf(ctx, key, GE, cmp, set, ttl)
}

// SetLE sets the key when cmp <= its number + epsilon (or it is absent).
func (o Ops) SetLE(ctx context.Context, key string, cmp, set float64, ttl time.Duration) (bool, error) {
	return o.SetIf(ctx, key, LE, cmp, set, ttl)
}

// SetEQ sets the key when |cmp - its number| < epsilon (or it is absent).
func (o Ops) SetEQ(ctx context.Context, key string, cmp, set float64, ttl time.Duration) (bool, error) {
	return o.SetIf(ctx, key, EQ, cmp, set, ttl)
}

// SetNE sets the key when |cmp - its number| > epsilon (or it is absent).
func (o Ops) SetNE(ctx context.Context, key string, cmp, set float64, ttl time.Duration) (bool, error) {
	return o.SetIf(ctx, key, NE, cmp, set, ttl)
}

// DelGT deletes the key when cmp > its number (true when absent).
func (o Ops) DelGT(ctx context.Context, key string, cmp float64) (bool, error) {
	return o.DelIf(ctx, key, GT, cmp)
}

// DelLT deletes the key when cmp < its number (true when absent).
func (o Ops) DelLT(ctx context.Context, key string, cmp float64) (bool, error) {
	return o.DelIf(ctx, key, LT, cmp)
}

// DelGE deletes the key when cmp >= its number - epsilon (true when absent).
func (o Ops) DelGE(ctx context.Context, key string, cmp float64) (bool, error) {
	return o.DelIf(ctx, key, GE, cmp)
}

// DelLE deletes the key when cmp <= its number + epsilon (true when absent).
func (o Ops) DelLE(ctx context.Context, key string, cmp float64) (bool, error) {
	return o.DelIf(ctx, key, LE, cmp)
}

// DelEQ deletes the key when |cmp - its number| < epsilon (true when absent).
func (o Ops) DelEQ(ctx context.Context, key string, cmp float64) (bool, error) {
	return o.DelIf(ctx, key, EQ, cmp)
}

// DelNE deletes the key when |cmp - its number| > epsilon (true when absent).
func (o Ops) DelNE(ctx context.Context, key string, cmp float64) (bool, error) {
	return o.DelIf(ctx, key, NE, cmp)
}

// condArgs is a conditional operation's validated input, as both
// backends' primitive (scripts/cond.lua, or its in-memory twin) takes it.
type condArgs struct {
	op  string // "SetGT", "DelNE", ...: the named operation, for errors
	c   Comparison
	cmp float64
	set string // the decimal to store ("" for a delete)
	ms  int64  // the TTL in milliseconds (-1: none)
	del bool
}

// checkSetIf validates SetIf's input.
func checkSetIf(key string, c Comparison, cmp, set float64, ttl time.Duration) (condArgs, error) {
	a := condArgs{op: "Set" + c.name(), c: c, cmp: cmp, set: formatNumber(set)}
	if err := a.check(key); err != nil {
		return a, err
	}
	if err := checkNumber(a.op, key, set); err != nil {
		return a, err
	}
	ms, err := checkTTL(a.op, key, ttl)
	a.ms = ms
	return a, err
}

// checkDelIf validates DelIf's input.
func checkDelIf(key string, c Comparison, cmp float64) (condArgs, error) {
	a := condArgs{op: "Del" + c.name(), c: c, cmp: cmp, ms: -1, del: true}
	return a, a.check(key)
}

func (a condArgs) check(key string) error {
	if err := checkKey(a.op, key); err != nil {
		return err
	}
	if a.c.name() == "If" {
		return fmt.Errorf("lock: %s %q: %w: unknown comparison %q", a.op, key, ErrInvalidValue, string(a.c))
	}
	return checkNumber(a.op, key, a.cmp)
}

// name is the comparison's name in the operations named after it (SetGT,
// DelNE), or "If" for an unknown one (so errors say SetIf or DelIf).
func (c Comparison) name() string {
	switch c {
	case GT:
		return "GT"
	case LT:
		return "LT"
	case GE:
		return "GE"
	case LE:
		return "LE"
	case EQ:
		return "EQ"
	case NE:
		return "NE"
	}
	return "If"
}
