package lock

import (
	"context"
	"time"
)

// condApply is a backend's one conditional primitive (scripts/cond.lua, or
// its in-memory twin), called with validated input: set is the decimal to
// store, ms the TTL in milliseconds (-1 for none), del chooses deletion.
type condApply func(ctx context.Context, op string, cop compareOp, key string, cmp float64, set string, ms int64, del bool) (bool, error)

// conditionals implements the twelve conditional operations of [Locker]
// once for every backend, validating input before the backend sees it.
type conditionals struct{ apply condApply }

// SetGT sets the key when cmp > its number (or it is absent).
func (c conditionals) SetGT(ctx context.Context, key string, cmp, set float64, ttl time.Duration) (bool, error) {
	return c.set(ctx, "SetGT", opGT, key, cmp, set, ttl)
}

// SetLT sets the key when cmp < its number (or it is absent).
func (c conditionals) SetLT(ctx context.Context, key string, cmp, set float64, ttl time.Duration) (bool, error) {
	return c.set(ctx, "SetLT", opLT, key, cmp, set, ttl)
}

// SetGE sets the key when cmp >= its number - epsilon (or it is absent).
func (c conditionals) SetGE(ctx context.Context, key string, cmp, set float64, ttl time.Duration) (bool, error) {
	return c.set(ctx, "SetGE", opGE, key, cmp, set, ttl)
}

// SetLE sets the key when cmp <= its number + epsilon (or it is absent).
func (c conditionals) SetLE(ctx context.Context, key string, cmp, set float64, ttl time.Duration) (bool, error) {
	return c.set(ctx, "SetLE", opLE, key, cmp, set, ttl)
}

// SetEQ sets the key when |cmp - its number| < epsilon (or it is absent).
func (c conditionals) SetEQ(ctx context.Context, key string, cmp, set float64, ttl time.Duration) (bool, error) {
	return c.set(ctx, "SetEQ", opEQ, key, cmp, set, ttl)
}

// SetNE sets the key when |cmp - its number| > epsilon (or it is absent).
func (c conditionals) SetNE(ctx context.Context, key string, cmp, set float64, ttl time.Duration) (bool, error) {
	return c.set(ctx, "SetNE", opNE, key, cmp, set, ttl)
}

// DelGT deletes the key when cmp > its number (true when absent).
func (c conditionals) DelGT(ctx context.Context, key string, cmp float64) (bool, error) {
	return c.del(ctx, "DelGT", opGT, key, cmp)
}

// DelLT deletes the key when cmp < its number (true when absent).
func (c conditionals) DelLT(ctx context.Context, key string, cmp float64) (bool, error) {
	return c.del(ctx, "DelLT", opLT, key, cmp)
}

// DelGE deletes the key when cmp >= its number - epsilon (true when absent).
func (c conditionals) DelGE(ctx context.Context, key string, cmp float64) (bool, error) {
	return c.del(ctx, "DelGE", opGE, key, cmp)
}

// DelLE deletes the key when cmp <= its number + epsilon (true when absent).
func (c conditionals) DelLE(ctx context.Context, key string, cmp float64) (bool, error) {
	return c.del(ctx, "DelLE", opLE, key, cmp)
}

// DelEQ deletes the key when |cmp - its number| < epsilon (true when absent).
func (c conditionals) DelEQ(ctx context.Context, key string, cmp float64) (bool, error) {
	return c.del(ctx, "DelEQ", opEQ, key, cmp)
}

// DelNE deletes the key when |cmp - its number| > epsilon (true when absent).
func (c conditionals) DelNE(ctx context.Context, key string, cmp float64) (bool, error) {
	return c.del(ctx, "DelNE", opNE, key, cmp)
}

func (c conditionals) set(ctx context.Context, op string, cop compareOp, key string, cmp, set float64, ttl time.Duration) (bool, error) {
	if err := checkKey(op, key); err != nil {
		return false, err
	}
	if err := checkNumber(op, key, cmp); err != nil {
		return false, err
	}
	if err := checkNumber(op, key, set); err != nil {
		return false, err
	}
	ms, err := checkTTL(op, key, ttl)
	if err != nil {
		return false, err
	}
	return c.apply(ctx, op, cop, key, cmp, formatNumber(set), ms, false)
}

func (c conditionals) del(ctx context.Context, op string, cop compareOp, key string, cmp float64) (bool, error) {
	if err := checkKey(op, key); err != nil {
		return false, err
	}
	if err := checkNumber(op, key, cmp); err != nil {
		return false, err
	}
	return c.apply(ctx, op, cop, key, cmp, "", -1, true)
}
