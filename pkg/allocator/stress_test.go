package allocator_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// The stress test: stressProcs OS processes (this test binary, re-run as
// TestStressChild) with stressGoroutines goroutines each acquire, refresh
// and release stressItems items of one Redis pool, and now and then abandon
// a lease (a simulated crash: no more refreshes, no release). Every
// critical section writes to a fencing guard in Redis (guardLua) that keeps
// the highest token per item, rejects lower ones, and logs every write
// with the server's time. The parent then checks the log.
const (
	stressChildEnv   = "LOCKPOOL_STRESS_CHILD"
	stressSecondsEnv = "LOCKPOOL_STRESS_SECONDS"
	stressProcs      = 2
	stressGoroutines = 64
	stressItems      = 8
	stressTTL        = 300 * time.Millisecond
	// stressAbandonOneIn: one lease in this many is abandoned.
	stressAbandonOneIn = 10
)

// guardLua is the fencing guard: a resource that accepts a write only with
// a token at least as high as any it accepted for the item, and logs each
// write as "op item token now_us live ok deadline_ms who grant_ms", where
// live is 1 when the server's clock had not yet reached the writer's lease
// deadline.
//
// KEYS[1]: HASH item -> highest accepted token
// KEYS[2]: LIST, the log
// ARGV: op, item, token, lease deadline (ms, server time), who, grant (ms)
// Ops begin, write, end and abandon are writes; lost and rellost (a
// Refresh or Release that reported the lease lost) are only logged.
// Returns {ok, live}.
const guardLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local live = 0
if now < tonumber(ARGV[4]) * 1000 then live = 1 end
local ok = 1
local op = ARGV[1]
if op == 'begin' or op == 'write' or op == 'end' or op == 'abandon' then
  local high = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
  if tonumber(ARGV[3]) < high then
    ok = 0
  else
    redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  end
end
redis.call('RPUSH', KEYS[2], table.concat({op, ARGV[2], ARGV[3], string.format('%d', now),
  tostring(live), tostring(ok), ARGV[4], ARGV[5], ARGV[6]}, ' '))
return {ok, live}
`

var guardScript = redis.NewScript(guardLua)

func guardKeys(prefix string) []string {
	return []string{prefix + "guard:high", prefix + "guard:log"}
}

// stressDuration: 10s, 4s with -short, or LOCKPOOL_STRESS_SECONDS.
func stressDuration(t *testing.T) time.Duration {
	if s := os.Getenv(stressSecondsEnv); s != "" {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f <= 0 {
			t.Fatalf("%s=%q: want a positive number of seconds", stressSecondsEnv, s)
		}
		return time.Duration(f * float64(time.Second))
	}
	if testing.Short() {
		return 4 * time.Second
	}
	return 10 * time.Second
}

// childStats is what a child prints on its "STRESS-STATS" line.
type childStats struct {
	Acquires, Timeouts, Refreshes, Writes, Rejected, NotLive int64
	// Starved counts Acquires that waited the whole 5 s without an item
	// (Timeouts also counts each goroutine's last Acquire, cut off at the
	// end of the run).
	Starved                                       int64
	Abandoned, LostOnRefresh, LostOnRelease, Long int64
}

// TestStress is not parallel: it runs alone, before the parallel tests of
// the package, so their timing bounds are not measured on a loaded box.
func TestStress(t *testing.T) {
	addr := redistest.Addr(t)
	c := redistest.Client(t)
	prefix := redistest.Prefix(t)
	ctx := context.Background()
	pool, err := lock.NewRedisLockPool(c, lock.Config{Prefix: prefix})
	must(t, err)
	names := numbered("item", stressItems)
	must(t, pool.Extend(ctx, names))
	dur := stressDuration(t)
	// Children start within the slack; all stop at the same server time.
	stop := redistest.ServerTime(t, c).Add(dur + 500*time.Millisecond)

	type child struct {
		cmd            *exec.Cmd
		stdout, stderr bytes.Buffer
		err            error
	}
	runCtx, cancel := context.WithTimeout(ctx, dur+2*time.Minute)
	defer cancel()
	children := make([]*child, stressProcs)
	var wg sync.WaitGroup
	for i := range children {
		ch := &child{}
		ch.cmd = exec.CommandContext(runCtx, os.Args[0], "-test.run=^TestStressChild$", "-test.count=1", "-test.v", "-test.timeout=5m")
		ch.cmd.Env = append(os.Environ(),
			stressChildEnv+"="+strconv.Itoa(i),
			"REDIS_ADDR="+addr,
			"LOCKPOOL_STRESS_PREFIX="+prefix,
			"LOCKPOOL_STRESS_STOP_US="+strconv.FormatInt(stop.UnixMicro(), 10),
		)
		ch.cmd.Stdout, ch.cmd.Stderr = &ch.stdout, &ch.stderr
		children[i] = ch
		must(t, ch.cmd.Start())
		wg.Go(func() { ch.err = ch.cmd.Wait() })
	}
	wg.Wait()
	var total childStats
	for i, ch := range children {
		if ch.err != nil {
			t.Errorf("child %d failed: %v\n--- stderr ---\n%s\n--- stdout ---\n%s", i, ch.err, ch.stderr.String(), ch.stdout.String())
			continue
		}
		var st childStats
		found := false
		for line := range strings.Lines(ch.stdout.String()) {
			if rest, ok := strings.CutPrefix(line, "STRESS-STATS "); ok {
				must(t, json.Unmarshal([]byte(rest), &st))
				found = true
			}
		}
		if !found {
			t.Errorf("child %d printed no stats:\n%s", i, ch.stdout.String())
		}
		t.Logf("child %d: %+v", i, st)
		total.Acquires += st.Acquires
		total.Abandoned += st.Abandoned
	}
	if t.Failed() {
		return
	}
	raw, err := c.LRange(ctx, guardKeys(prefix)[1], 0, -1).Result()
	must(t, err)
	checkStressLog(t, raw, stop, total)
}

// guardRecord is one line of the guard's log.
type guardRecord struct {
	op, item, who string
	token         int64
	nowUs         int64
	live, ok      bool
	deadlineMs    int64
	grantMs       int64
}

func parseGuardRecord(t *testing.T, s string) guardRecord {
	f := strings.Fields(s)
	if len(f) != 9 {
		t.Fatalf("bad guard record %q", s)
	}
	num := func(x string) int64 {
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			t.Fatalf("bad number %q in guard record %q", x, s)
		}
		return n
	}
	return guardRecord{op: f[0], item: f[1], token: num(f[2]), nowUs: num(f[3]), live: f[4] == "1", ok: f[5] == "1",
		deadlineMs: num(f[6]), who: f[7], grantMs: num(f[8])}
}

func checkStressLog(t *testing.T, raw []string, stop time.Time, total childStats) {
	recs := make([]guardRecord, len(raw))
	for i, s := range raw {
		recs[i] = parseGuardRecord(t, s)
	}
	type holder struct {
		begin, end *guardRecord
	}
	byToken := map[int64]*holder{}
	grants := map[string][]*guardRecord{} // item -> begin records
	var abandons []*guardRecord
	var rejectedLive, rejected, notLive, falseLoss int
	for i := range recs {
		r := &recs[i]
		switch r.op {
		case "begin", "write", "end", "abandon":
			if !r.ok {
				rejected++
				if r.live {
					rejectedLive++
					if rejectedLive <= 10 {
						t.Errorf("write rejected from a live holder: %+v", *r)
					}
				}
			}
			if !r.live {
				notLive++
			}
		case "lost", "rellost":
			// The lease was reported lost while its deadline had not passed
			// (the check runs after the Refresh or Release answered).
			if r.live {
				falseLoss++
				if falseLoss <= 10 {
					t.Errorf("%s: lease reported lost before its deadline: %+v", r.op, *r)
				}
			}
		default:
			t.Fatalf("unknown op in %+v", *r)
		}
		h := byToken[r.token]
		if h == nil {
			h = &holder{}
			byToken[r.token] = h
		}
		switch r.op {
		case "begin":
			if h.begin != nil {
				t.Errorf("token %d granted twice: %+v and %+v", r.token, *h.begin, *r)
			}
			h.begin = r
			grants[r.item] = append(grants[r.item], r)
		case "end":
			h.end = r
		case "abandon":
			h.end = r
			abandons = append(abandons, r)
		}
	}
	if rejectedLive > 0 {
		t.Errorf("%d writes rejected from live holders", rejectedLive)
	}
	if falseLoss > 0 {
		t.Errorf("%d leases reported lost before their deadline", falseLoss)
	}

	// No two live holders of an item overlap, by server time.
	type interval struct {
		start, end int64
		token      int64
	}
	intervals := map[string][]interval{}
	var excluded int
	for tok, h := range byToken {
		if h.begin == nil || h.end == nil {
			continue
		}
		if !h.begin.ok || !h.begin.live || !h.end.ok || !h.end.live {
			excluded++
			continue
		}
		intervals[h.begin.item] = append(intervals[h.begin.item], interval{h.begin.nowUs, h.end.nowUs, tok})
	}
	var overlaps, checked int
	for item, ivs := range intervals {
		slices.SortFunc(ivs, func(a, b interval) int { return cmp.Compare(a.start, b.start) })
		for i := 1; i < len(ivs); i++ {
			checked++
			prev, cur := ivs[i-1], ivs[i]
			if cur.start < prev.end {
				overlaps++
				if overlaps <= 10 {
					t.Errorf("item %s: holder %d [%d, %d] overlaps holder %d [%d, %d] (server µs)",
						item, cur.token, cur.start, cur.end, prev.token, prev.start, prev.end)
				}
			}
			if cur.token <= prev.token {
				t.Errorf("item %s: token %d held after token %d", item, cur.token, prev.token)
			}
		}
	}
	if overlaps > 0 {
		t.Errorf("%d overlapping holder pairs", overlaps)
	}

	// Every abandoned item came back within its TTL + 250ms of the
	// abandonment, and not before the abandoned lease's deadline.
	for _, g := range grants {
		slices.SortFunc(g, func(a, b *guardRecord) int { return cmp.Compare(a.token, b.token) })
	}
	stopMs := stop.UnixMilli()
	var delays []time.Duration // next grant - abandoned lease's deadline
	var recovered, late int
	for _, a := range abandons {
		bound := a.nowUs/1000 + (stressTTL + recoveryBound()).Milliseconds()
		if bound > stopMs-50 {
			continue // the run ended before it was due back
		}
		g := grants[a.item]
		i, _ := slices.BinarySearchFunc(g, a.token+1, func(r *guardRecord, tok int64) int { return cmp.Compare(r.token, tok) })
		if i == len(g) {
			t.Errorf("item %s abandoned at %d (lease deadline %d ms) never came back before the run ended at %d ms", a.item, a.nowUs, a.deadlineMs, stopMs)
			continue
		}
		next := g[i]
		recovered++
		delays = append(delays, time.Duration(next.grantMs-a.deadlineMs)*time.Millisecond)
		if next.grantMs < a.deadlineMs {
			t.Errorf("item %s re-granted at %d ms, before the abandoned lease's deadline %d ms", a.item, next.grantMs, a.deadlineMs)
		}
		if next.grantMs > bound {
			late++
			t.Errorf("item %s abandoned at %d µs came back at %d ms, after %d ms (TTL + %v; %s)", a.item, a.nowUs, next.grantMs, bound, recoveryBound(), redistest.SchedDelay())
		}
	}
	p50, p99, maxd := quantiles(delays)
	t.Logf("stress: %d processes x %d goroutines, %d items, TTL %v: %d leases, %d log records, %d writes rejected (all from holders past their deadline: %d writes not live), %d live holder pairs checked for overlap (%d holders excluded as not live at both ends)",
		stressProcs, stressGoroutines, stressItems, stressTTL, len(byToken), len(recs), rejected, notLive, checked, excluded)
	t.Logf("stress: %d abandonments, %d checked; re-granted after the abandoned lease's deadline: p50 %v, p99 %v, max %v", len(abandons), recovered, p50, p99, maxd)
	if recovered < 10 {
		t.Errorf("only %d abandonments were checked for recovery; the run is too short to mean much", recovered)
	}
	if checked < 100 {
		t.Errorf("only %d holder pairs were checked for overlap", checked)
	}
}

// TestStressChild is the body of the stress test's child processes; it does
// nothing in a normal run. It reports failures on stderr and through its
// exit status.
func TestStressChild(t *testing.T) {
	procStr := os.Getenv(stressChildEnv)
	if procStr == "" {
		return
	}
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "stress child %s: "+format+"\n", append([]any{procStr}, args...)...)
		t.Fail()
	}
	prefix := os.Getenv("LOCKPOOL_STRESS_PREFIX")
	stopUs, err := strconv.ParseInt(os.Getenv("LOCKPOOL_STRESS_STOP_US"), 10, 64)
	if prefix == "" || err != nil {
		t.Fatalf("stress child: missing LOCKPOOL_STRESS_PREFIX or LOCKPOOL_STRESS_STOP_US")
	}
	c := redistest.Client(t)
	// The stop time is by the server's clock; turn it into ours.
	offset := time.Until(redistest.ServerTime(t, c))
	stopAt := time.UnixMicro(stopUs).Add(-offset)
	a, err := allocator.NewRedis(poolOn(t, c, lock.Config{Prefix: prefix}), allocator.Config{LeaseTTL: stressTTL})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithDeadline(context.Background(), stopAt.Add(30*time.Second))
	defer cancel()
	keys := guardKeys(prefix)

	var st struct {
		acquires, timeouts, starved, refreshes, writes, rejected, notLive atomic.Int64
		abandoned, lostOnRefresh, lostOnRelease, long                     atomic.Int64
	}
	var wg sync.WaitGroup
	for g := range stressGoroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(g)))
			who := "p" + procStr + "-g" + strconv.Itoa(g)
			guard := func(op string, l *allocator.Lease, grantMs int64) bool {
				res, err := guardScript.Run(ctx, c, keys, op, l.Item(), l.Token(), l.Deadline().UnixMilli(), who, grantMs).Int64Slice()
				if err != nil {
					fail("guard %s: %v", op, err)
					return false
				}
				if op == "lost" || op == "rellost" {
					return true
				}
				st.writes.Add(1)
				if res[0] != 1 {
					st.rejected.Add(1)
				}
				if res[1] != 1 {
					st.notLive.Add(1)
				}
				return true
			}
			for time.Now().Before(stopAt) {
				wait := stopAt
				if lim := time.Now().Add(5 * time.Second); lim.Before(wait) {
					wait = lim
				}
				actx, acancel := context.WithDeadline(ctx, wait)
				l, err := a.Acquire(actx, who, allocator.AcquireOptions{})
				acancel()
				switch {
				case l == nil && err == nil, l != nil && err != nil:
					fail("Acquire returned %v, %v", leaseItem(l), err)
					return
				case errors.Is(err, allocator.ErrNoFreeItem) && errors.Is(err, context.DeadlineExceeded):
					st.timeouts.Add(1)
					if wait.Before(stopAt) {
						st.starved.Add(1)
					}
					continue
				case err != nil:
					fail("Acquire: %v", err)
					return
				}
				st.acquires.Add(1)
				grantMs := l.Deadline().Add(-l.TTL()).UnixMilli()
				if !guard("begin", l, grantMs) {
					return
				}
				// Most critical sections are short; one in four outlasts the
				// TTL and lives only by refreshing.
				steps, pause, refreshOneIn := rng.IntN(4), 20, 2
				if rng.IntN(4) == 0 {
					steps, pause, refreshOneIn = 4+rng.IntN(7), 80, 1
					st.long.Add(1)
				}
				lost := false
				for range steps {
					time.Sleep(time.Duration(rng.IntN(pause)) * time.Millisecond)
					if rng.IntN(refreshOneIn) == 0 {
						st.refreshes.Add(1)
						err := l.Refresh(ctx)
						if errors.Is(err, allocator.ErrLeaseLost) {
							st.lostOnRefresh.Add(1)
							guard("lost", l, grantMs)
							lost = true
							break
						}
						if err != nil {
							fail("Refresh: %v", err)
							return
						}
					}
					if !guard("write", l, grantMs) {
						return
					}
				}
				if lost {
					continue
				}
				if rng.IntN(stressAbandonOneIn) == 0 {
					// Crash: the last write, then nothing.
					st.abandoned.Add(1)
					guard("abandon", l, grantMs)
					continue
				}
				if !guard("end", l, grantMs) {
					return
				}
				switch err := l.Release(ctx); {
				case errors.Is(err, allocator.ErrLeaseLost):
					st.lostOnRelease.Add(1)
					guard("rellost", l, grantMs)
				case err != nil:
					fail("Release: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	out, _ := json.Marshal(childStats{
		Acquires: st.acquires.Load(), Timeouts: st.timeouts.Load(), Starved: st.starved.Load(), Refreshes: st.refreshes.Load(),
		Writes: st.writes.Load(), Rejected: st.rejected.Load(), NotLive: st.notLive.Load(),
		Abandoned: st.abandoned.Load(), LostOnRefresh: st.lostOnRefresh.Load(), LostOnRelease: st.lostOnRelease.Load(),
		Long: st.long.Load(),
	})
	fmt.Println("STRESS-STATS " + string(out))
}
