package lock_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/lockpool/lockpool/pkg/lock"
)

// condOp names one conditional operation; set is nil for the Del ones.
type condOp struct {
	name string
	set  func(l lock.Ops) func(context.Context, string, float64, float64, time.Duration) (bool, error)
	del  func(l lock.Ops) func(context.Context, string, float64) (bool, error)
}

var condOps = map[string]condOp{
	"SetGT": {name: "SetGT", set: func(l lock.Ops) func(context.Context, string, float64, float64, time.Duration) (bool, error) {
		return l.SetGT
	}},
	"SetLT": {name: "SetLT", set: func(l lock.Ops) func(context.Context, string, float64, float64, time.Duration) (bool, error) {
		return l.SetLT
	}},
	"SetGE": {name: "SetGE", set: func(l lock.Ops) func(context.Context, string, float64, float64, time.Duration) (bool, error) {
		return l.SetGE
	}},
	"SetLE": {name: "SetLE", set: func(l lock.Ops) func(context.Context, string, float64, float64, time.Duration) (bool, error) {
		return l.SetLE
	}},
	"SetEQ": {name: "SetEQ", set: func(l lock.Ops) func(context.Context, string, float64, float64, time.Duration) (bool, error) {
		return l.SetEQ
	}},
	"SetNE": {name: "SetNE", set: func(l lock.Ops) func(context.Context, string, float64, float64, time.Duration) (bool, error) {
		return l.SetNE
	}},
	"DelGT": {name: "DelGT", del: func(l lock.Ops) func(context.Context, string, float64) (bool, error) { return l.DelGT }},
	"DelLT": {name: "DelLT", del: func(l lock.Ops) func(context.Context, string, float64) (bool, error) { return l.DelLT }},
	"DelGE": {name: "DelGE", del: func(l lock.Ops) func(context.Context, string, float64) (bool, error) { return l.DelGE }},
	"DelLE": {name: "DelLE", del: func(l lock.Ops) func(context.Context, string, float64) (bool, error) { return l.DelLE }},
	"DelEQ": {name: "DelEQ", del: func(l lock.Ops) func(context.Context, string, float64) (bool, error) { return l.DelEQ }},
	"DelNE": {name: "DelNE", del: func(l lock.Ops) func(context.Context, string, float64) (bool, error) { return l.DelNE }},
}

// run applies the operation, setting setTo with ttl for the Set ones.
func (o condOp) run(ctx context.Context, l lock.Ops, key string, cmp, setTo float64, ttl time.Duration) (bool, error) {
	if o.set != nil {
		return o.set(l)(ctx, key, cmp, setTo, ttl)
	}
	return o.del(l)(ctx, key, cmp)
}

// The epsilon edges with the default epsilon of 1e-6 around a current value
// of 1: half an epsilon away is "equal", two epsilons away is not.
const (
	eps     = lock.DefaultEpsilon
	inside  = eps / 2
	outside = 2 * eps
)

func testConditional(t *testing.T, newLock func(options) lock.Ops) {
	type tc struct {
		cur  string // "" means the key is absent
		cmp  float64
		want bool
	}
	// The comparison is "cmp OP cur"; Set and Del share each table. Rows on
	// "0" sit exactly one epsilon away, where >= and <= hold but neither ==
	// nor != does.
	tables := map[string][]tc{
		"GT": {{"", 0, true}, {"1", 2, true}, {"1", 1 + inside, true}, {"1", 1, false}, {"1", 0, false}},
		"LT": {{"", 5, true}, {"1", 0, true}, {"1", 1 - inside, true}, {"1", 1, false}, {"1", 2, false}},
		"GE": {{"", 0, true}, {"1", 2, true}, {"1", 1, true}, {"1", 1 - inside, true}, {"1", 1 - outside, false}, {"1", 0, false}, {"0", -eps, true}},
		"LE": {{"", 9, true}, {"1", 0, true}, {"1", 1, true}, {"1", 1 + inside, true}, {"1", 1 + outside, false}, {"1", 2, false}, {"0", eps, true}},
		"EQ": {{"", 3, true}, {"1", 1, true}, {"1", 1 + inside, true}, {"1", 1 - inside, true}, {"1", 1 + outside, false}, {"1", 1 - outside, false}, {"0", eps, false}, {"0", -eps, false}},
		"NE": {{"", 1, true}, {"1", 1, false}, {"1", 1 + inside, false}, {"1", 1 - inside, false}, {"1", 1 + outside, true}, {"1", 1 - outside, true}, {"0", eps, false}, {"0", -eps, false}},
	}
	// Stored numbers in every form the decimal grammar accepts compare by
	// value; 1e400 overflows to +Inf on both backends.
	forms := []tc{{"1.0", 1, true}, {"+1", 1, true}, {"1e0", 1, true}, {"10e-1", 1, true}, {".5", 0.5, true}, {"-0", 0, true}, {"1.", 1, true}}
	l, ctx := newLock(options{}), context.Background()
	for suffix, cases := range tables {
		for _, kind := range []string{"Set", "Del"} {
			op := condOps[kind+suffix]
			for i, c := range cases {
				key := fmt.Sprintf("%s-%d", op.name, i)
				if c.cur != "" {
					must(t, l.Update(ctx, key, c.cur, long))
				}
				got, err := op.run(ctx, l, key, c.cmp, 42.5, long)
				what := fmt.Sprintf("%s(cmp %v) on %q", op.name, c.cmp, c.cur)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				if got != c.want {
					t.Errorf("%s = %v; want %v", what, got, c.want)
					continue
				}
				switch {
				case !got && c.cur != "":
					wantValue(t, l, key, c.cur, true)
				case !got:
					wantValue(t, l, key, "", false)
				case kind == "Set":
					wantValue(t, l, key, "42.5", true)
					wantTTL(t, l, key, long-5*time.Second, long)
				default:
					wantValue(t, l, key, "", false)
				}
			}
		}
	}
	for i, c := range forms {
		key := fmt.Sprintf("form-%d", i)
		must(t, l.Update(ctx, key, c.cur, long))
		wantBool(t, fmt.Sprintf("SetEQ(%v) on %q", c.cmp, c.cur), true)(l.SetEQ(ctx, key, c.cmp, 7, long))
		wantValue(t, l, key, "7", true)
	}
	must(t, l.Update(ctx, "huge", "1e400", long))
	wantBool(t, "SetLT(MaxFloat64) on 1e400", true)(l.SetLT(ctx, "huge", math.MaxFloat64, 1, long))

	// Stored set values are the shortest decimal that parses back exactly.
	for _, v := range []struct {
		set  float64
		want string
	}{{3, "3"}, {0.1, "0.1"}, {-2.5, "-2.5"}, {1e21, "1e+21"}, {1.0000001, "1.0000001"}} {
		must(t, second(l.Unlock(ctx, "fmt")))
		wantBool(t, "SetGT on absent", true)(l.SetGT(ctx, "fmt", 0, v.set, long))
		wantValue(t, l, "fmt", v.want, true)
	}
	// TTLs of the Set operations.
	wantBool(t, "SetGT(NoExpiry)", true)(l.SetGT(ctx, "ttl", 1, 1, lock.NoExpiry))
	wantTTL(t, l, "ttl", lock.NoExpiry, lock.NoExpiry)
	wantBool(t, "SetGT(short)", true)(l.SetGT(ctx, "ttl", 2, 2, short))
	time.Sleep(expiryWait)
	wantValue(t, l, "ttl", "", false)

	// Non-numbers: stored ones are left alone, given ones are refused.
	for _, stored := range []string{"owner-a", " 1", "1 ", "0x10", "inf", "nan", "1e", "", "1_000", "--1", "."} {
		key := "nan-" + stored
		must(t, l.Update(ctx, key, stored, long))
		for _, op := range condOps {
			_, err := op.run(ctx, l, key, 1, 2, long)
			if !errors.Is(err, lock.ErrNotNumeric) {
				t.Errorf("%s on stored %q = %v; want ErrNotNumeric", op.name, stored, err)
			}
		}
		wantValue(t, l, key, stored, true)
	}
	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		for _, op := range condOps {
			if _, err := op.run(ctx, l, "absent", bad, 1, long); !errors.Is(err, lock.ErrNotNumeric) {
				t.Errorf("%s(cmp %v) = %v; want ErrNotNumeric", op.name, bad, err)
			}
			if op.set != nil {
				if _, err := op.run(ctx, l, "absent", 1, bad, long); !errors.Is(err, lock.ErrNotNumeric) {
					t.Errorf("%s(set %v) = %v; want ErrNotNumeric", op.name, bad, err)
				}
			}
		}
	}
	wantValue(t, l, "absent", "", false)
}
