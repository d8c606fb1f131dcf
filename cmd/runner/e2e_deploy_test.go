package main

// Deployment end-to-end tests: a Redis that may evict keys (refused unless
// redis.allow_eviction, and watched while running), and a fleet whose
// processes are killed with SIGKILL over and over (per-process entries of
// the allocator must not pile up in Redis).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/keyspace"
)

// TestE2EEvictionRefused starts the runner against servers that may evict
// keys: refused (exit 2, one line, nothing written) unless
// redis.allow_eviction, given in any of the three ways; then a runner that
// accepted it sees the server evict keys and reports it, in the log and on
// /healthz.
func TestE2EEvictionRefused(t *testing.T) {
	parallel(t)
	lru := redistest.StartServer(t, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
	vol := redistest.StartServer(t, "--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru")
	items := itemNames(3)

	for _, srv := range []struct {
		s      *redistest.Server
		policy string
	}{{lru, "allkeys-lru"}, {vol, "volatile-lru"}} {
		e := newE2E(t) // the ledger: on the shared server, which does not evict
		e.tokenGuard = true
		cfg := e.configVia(srv.s.Addr, "refused", items, "", 50*time.Millisecond)
		for _, args := range [][]string{{"run", "-c", cfg}, {"pool", "add", "-c", cfg, "x"}, {"pool", "list", "-c", cfg}} {
			name := strings.Join(slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "-c" || a == cfg }), " ")
			what := fmt.Sprintf("runner %s (maxmemory-policy %s)", name, srv.policy)
			res := runnerCmd(t, procOpts{}, args...)
			if res.code != 2 {
				t.Errorf("%s: exit %d, want 2; stderr:\n%s", what, res.code, clip(res.stderr))
				continue
			}
			line := oneErrorLine(t, res.stderr)
			for _, want := range []string{"maxmemory-policy", srv.policy, "noeviction", "allow_eviction"} {
				if !strings.Contains(line, want) {
					t.Errorf("%s: error line %q does not mention %q", what, line, want)
				}
			}
			t.Logf("%s: exit 2: %s", what, line)
		}
		if n, err := srv.s.Client(t).DBSize(callCtx(t)).Result(); err != nil || n != 0 {
			t.Errorf("%s server: DBSIZE = %d (%v) after the refusals, want 0", srv.policy, n, err)
		}
		if evs := e.events(); len(evs) != 0 {
			t.Errorf("%s server: a task ran: %+v", srv.policy, evs)
		}
	}

	// Accepted with redis.allow_eviction: by flag, environment or file, in
	// three batches at once on the allkeys-lru server.
	e := newE2E(t)
	e.tokenGuard = true
	e.runnerAddr = lru.Addr
	cfg := e.config("batch", items, "mode: batch\n", 100*time.Millisecond)
	e.redisYAML = fmt.Sprintf("redis:\n  addr: %q\n  allow_eviction: true\n", lru.Addr)
	cfgFile := e.config("batch-file", items, "mode: batch\n", 100*time.Millisecond)
	batches := []*runnerProc{
		startRunner(t, "batch-set", nil, "run", "-c", cfg, "--set", "redis.allow_eviction=true", "--batch-id", "set"),
		startRunner(t, "batch-env", []string{"RUNNER_REDIS_ALLOW_EVICTION=true"}, "run", "-c", cfg, "--batch-id", "env"),
		startRunner(t, "batch-file", nil, "run", "-c", cfgFile, "--batch-id", "file"),
	}
	for _, r := range batches {
		if code := r.wait(30 * time.Second); code != 0 {
			t.Errorf("%s: exit %d, want 0 (batch with redis.allow_eviction)", r.name, code)
		}
		warn := r.out.grep("[WARN]", "redis may evict keys, accepted by redis.allow_eviction")
		if len(warn) != 1 {
			t.Errorf("%s: want one warning \"redis may evict keys, accepted by redis.allow_eviction\" at WARN, got %q", r.name, warn)
		} else {
			t.Logf("%s: %s", r.name, warn[0])
		}
		if len(r.out.grep("batch complete")) != 1 {
			t.Errorf("%s: did not log \"batch complete\"", r.name)
		}
	}
	done := completed(e.checkLedger(e.events()))
	for _, it := range items {
		if done[it] != len(batches) {
			t.Errorf("item %s ran to its end %d times, want once per batch (%d)", it, done[it], len(batches))
		}
	}

	// A loop runner that accepted eviction, while the server evicts.
	cfgLoop := e.config("loop", []string{"solo"}, "worker:\n  concurrency: 1\n  lease_ttl: 2s\nadmin:\n  listen: 127.0.0.1:0\n", 300*time.Millisecond)
	r := startRunner(t, "loop", nil, "run", "-c", cfgLoop)
	base := r.adminBase()
	waitFor(t, "loop runner started", 20*time.Second, r.untilLogged("runner started"))
	if code, body := httpGet(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz before any eviction = %d %q, want 200", code, body)
	}
	c := lru.Client(t)
	evicted := func() int64 {
		txt, err := c.Info(callCtx(t), "stats").Result()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(txt) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "evicted_keys:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		t.Fatal("INFO stats has no evicted_keys")
		return 0
	}
	big := strings.Repeat("x", 1<<20)
	n := 0
	var filled time.Time
	fill := func() {
		if err := c.Set(callCtx(t), fmt.Sprintf("%sfiller:%d", e.prefix, n), big, 0).Err(); err != nil {
			t.Fatalf("SET filler %d: %v", n, err)
		}
		n++
		filled = time.Now()
	}
	for evicted() == 0 {
		if n > 500 {
			t.Fatalf("%d MiB written and evicted_keys is still 0", n)
		}
		fill()
	}
	firstEviction := time.Now()
	t.Logf("evicted_keys rose after %d MiB of filler", n)
	// Keep the server evicting until the runner reports it, a MiB every
	// 100ms: its watch compares one look (every 2s) with the one before.
	var logged []string
	waitFor(t, "the runner logging \"redis is evicting keys\" at ERROR", 20*time.Second, func() (bool, string) {
		if time.Since(filled) < 100*time.Millisecond {
			return false, "filling"
		}
		if logged = r.out.grep("[ERROR]", "redis is evicting keys"); len(logged) == 0 {
			fill()
		}
		return len(logged) > 0, fmt.Sprintf("not logged; %d MiB of filler written", n)
	})
	t.Logf("logged %v after the first eviction (watch period 2s): %s", time.Since(firstEviction).Round(10*time.Millisecond), logged[0])
	if d := time.Since(firstEviction); d > 8*time.Second {
		t.Errorf("eviction logged %v after it began, want within a few seconds (watch period 2s)", d)
	}
	code, body := httpGet(t, base+"/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "evict") {
		t.Errorf("/healthz after the eviction = %d %q, want 503 mentioning evict", code, body)
	} else {
		t.Logf("/healthz: %d %s", code, strings.TrimSpace(body))
	}
	stopRunners(t, 20*time.Second, r)
}

// TestE2EKillSoakNoGrowingKeys starts runner processes one after another
// and kills each with SIGKILL one to two seconds later, with more workers
// than items, so that killed processes leave waiter and hand-off entries
// behind. Their entries must be pruned, and no key is per-process: the
// pool's keys stay a fixed set however many processes ran.
func TestE2EKillSoakNoGrowingKeys(t *testing.T) {
	parallel(t)
	srv := redistest.StartServer(t)
	e := newE2EOn(t, srv)
	items := itemNames(3)
	const conc = 3
	cfg := e.config("soak", items, fmt.Sprintf("worker:\n  concurrency: %d\n  lease_ttl: 2s\n  refresh_interval: 300ms\n  safety_margin: 800ms\n  shutdown_grace: 5s\n", conc), time.Second)

	ks := e.keys()
	allowed := map[string]bool{}
	for _, k := range []string{ks.Members(), ks.Epoch(), ks.Index(), ks.IndexBucket(0), ks.IndexCount(), ks.Fence(), ks.Bindings(), ks.Waiters(), ks.Reserved(),
		ks.Foreign(), ks.SyncState(), ks.Failures(), ks.ItemsMarker(),
		ks.Runners(), ks.RunnerInfo(), ks.Throughput(), ks.History(), ks.HistoryExpiry()} {
		allowed[k] = true
	}
	for _, it := range items {
		allowed[ks.Lock(it)] = true
		allowed[ks.Tail(it)] = true
	}
	pattern := keyspace.GlobEscape(ks.Base()) + "*"

	type sample struct {
		at                 string
		procs, alive       int
		keys               int
		waiters, reserved  int
		staleW, staleR     int
		unexpected         []string
		waiterIDs, resvIDs []string
	}
	// subscribers counts the subscribers of the wake channel of each
	// process an entry (id "<process>:...") names.
	subscribers := func(ctx context.Context, c *redis.Client, ids []string) (map[string]int64, error) {
		chans := map[string]bool{}
		for _, id := range ids {
			proc, _, _ := strings.Cut(id, ":")
			chans[ks.Wake(proc)] = true
		}
		if len(chans) == 0 {
			return map[string]int64{}, nil
		}
		return c.PubSubShardNumSub(ctx, sortedKeys(chans)...).Result()
	}
	stale := func(subs map[string]int64, id string) bool {
		proc, _, _ := strings.Cut(id, ":")
		return subs[ks.Wake(proc)] == 0
	}
	live := func(ids []string) (n int) {
		subs, err := subscribers(callCtx(t), e.client, ids)
		if err != nil {
			t.Fatalf("PUBSUB SHARDNUMSUB: %v", err)
		}
		for _, id := range ids {
			if stale(subs, id) {
				n++
			}
		}
		return n
	}
	take := func(at string, procs, alive int) sample {
		s := sample{at: at, procs: procs, alive: alive}
		keys := scanKeys(t, e.client, pattern)
		s.keys = len(keys)
		for _, k := range keys {
			if !allowed[k] {
				s.unexpected = append(s.unexpected, k)
			}
		}
		var err error
		if s.waiterIDs, err = e.client.ZRange(callCtx(t), ks.Waiters(), 0, -1).Result(); err != nil {
			t.Fatal(err)
		}
		if s.resvIDs, err = e.client.HKeys(callCtx(t), ks.Reserved()).Result(); err != nil {
			t.Fatal(err)
		}
		s.waiters, s.reserved = len(s.waiterIDs), len(s.resvIDs)
		s.staleW, s.staleR = live(s.waiterIDs), live(s.resvIDs)
		return s
	}
	var samples []sample
	logSample := func(s sample) {
		t.Logf("%-22s processes run %2d, alive %d: keys %2d, waiters %2d (of dead processes %2d), reserved %d (of dead processes %d)",
			s.at, s.procs, s.alive, s.keys, s.waiters, s.staleW, s.reserved, s.staleR)
	}

	// In the background, every 100ms: when each waiter or hand-off entry
	// of a dead process was first seen, and when it was gone.
	type track struct{ stale, gone time.Time }
	tracked := map[string]*track{}
	tc := srv.Client(t)
	stopTrack := startPolling(t, 100*time.Millisecond, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		w, err1 := tc.ZRange(ctx, ks.Waiters(), 0, -1).Result()
		r, err2 := tc.HKeys(ctx, ks.Reserved()).Result()
		subs, err3 := subscribers(ctx, tc, append(slices.Clone(w), r...))
		if err1 != nil || err2 != nil || err3 != nil {
			return
		}
		now := time.Now()
		present := map[string]bool{}
		for kind, ids := range map[string][]string{"waiter ": w, "reserved ": r} {
			for _, id := range ids {
				key := kind + id
				present[key] = true
				if stale(subs, id) && tracked[key] == nil {
					tracked[key] = &track{stale: now}
				}
			}
		}
		for key, tr := range tracked {
			if !present[key] && tr.gone.IsZero() {
				tr.gone = now
			}
		}
	})

	const killed = 12
	var rs []*runnerProc
	startedWorkers := 0
	soakStart := time.Now()
	var lifetimes []time.Duration
	spawned := map[*runnerProc]time.Time{}
	for i := 0; i <= killed; i++ {
		r := startRunner(t, fmt.Sprintf("soak-%02d", i), nil, "run", "-c", cfg)
		rs = append(rs, r)
		spawned[r] = time.Now()
		// The new one works before the one before it dies: one or two
		// runners are alive at any time.
		waitFor(t, r.name+" started", 20*time.Second, r.untilLogged("runner started"))
		time.Sleep(time.Duration(200+rand.IntN(600)) * time.Millisecond)
		if i > 0 {
			prev := rs[i-1]
			if strings.Contains(prev.out.String(), "runner started") {
				startedWorkers++
			}
			lifetimes = append(lifetimes, time.Since(spawned[prev]).Round(100*time.Millisecond))
			if err := syscall.Kill(prev.pid(), syscall.SIGKILL); err != nil {
				t.Fatalf("kill -9 %s: %v", prev.name, err)
			}
			select {
			case <-prev.done:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s still alive 10s after SIGKILL", prev.name)
			}
			s := take(fmt.Sprintf("after kill %d:", i), i+1, 1)
			samples = append(samples, s)
			logSample(s)
		}
	}
	// The last one stays, with a second steady runner.
	steady := []*runnerProc{rs[killed], startRunner(t, "steady", nil, "run", "-c", cfg)}
	t.Logf("%d runners killed with SIGKILL in %v (%d of them had started their workers), after living %v", killed, time.Since(soakStart).Round(100*time.Millisecond), startedWorkers, lifetimes)
	for _, r := range steady {
		waitFor(t, "the steady runners started", 20*time.Second, r.untilLogged("runner started"))
	}
	settleStart := time.Now()
	var final sample
	var clean time.Duration
	// Sync steps (every 250ms per allocator) drop the entries of dead
	// processes, 4 sampled per step: give them a few seconds.
	if ok, _ := poll("", 10*time.Second, func() (bool, string) {
		final = take("steady:", killed+2, 2)
		if final.staleW == 0 && final.staleR == 0 {
			if clean == 0 {
				clean = time.Since(settleStart)
			}
		} else {
			clean = 0
		}
		return clean > 0 && time.Since(settleStart) > 3*time.Second, ""
	}); !ok {
		t.Errorf("10s after the last kill, entries of dead processes remain: waiters %v, reserved %v", final.waiterIDs, final.resvIDs)
	}
	samples = append(samples, final)
	logSample(final)
	t.Logf("no entry of a dead process left %v after the steady runners started (and still none %v after)", clean.Round(10*time.Millisecond), time.Since(settleStart).Round(10*time.Millisecond))

	stopTrack()
	var pruned []time.Duration
	var left []string
	nw, nr := 0, 0
	for key, tr := range tracked {
		if strings.HasPrefix(key, "waiter ") {
			nw++
		} else {
			nr++
		}
		if tr.gone.IsZero() {
			left = append(left, key)
		} else {
			pruned = append(pruned, tr.gone.Sub(tr.stale))
		}
	}
	t.Logf("entries of dead processes seen: %d waiters, %d reserved; gone (sampled every 100ms) after p50 %v, p90 %v, max %v; left %v",
		nw, nr, quantile(pruned, .5), quantile(pruned, .9), quantile(pruned, 1), left)

	maxKeys, maxW, maxR := 0, 0, 0
	for _, s := range samples {
		maxKeys, maxW, maxR = max(maxKeys, s.keys), max(maxW, s.waiters), max(maxR, s.reserved)
		if len(s.unexpected) > 0 {
			t.Errorf("%s keys of the pool outside its fixed set (per-process keys?): %v", s.at, s.unexpected)
		}
	}
	if maxKeys > len(allowed) {
		t.Errorf("up to %d keys with the pool's prefix, want <= %d (the fixed keys and one lock per item)", maxKeys, len(allowed))
	}
	t.Logf("over %d processes: at most %d keys (bound %d), %d waiters, %d reserved; final keys %d", killed+2, maxKeys, len(allowed), maxW, maxR, final.keys)
	liveWorkers := len(steady) * conc
	if final.waiters > liveWorkers || final.reserved > liveWorkers {
		t.Errorf("steady state: %d waiters and %d reserved entries for %d live workers", final.waiters, final.reserved, liveWorkers)
	}
	if maxW == 0 {
		t.Errorf("no waiter was ever registered: the soak tested nothing")
	}

	stopRunners(t, 20*time.Second, steady...)
	evs := e.events()
	runs := e.checkLedger(evs)
	total := 0
	for _, rs := range runs {
		total += len(rs)
	}
	t.Logf("ledger: %d runs over %d items, %d events", total, len(runs), len(evs))
	if procs := ledgerProcs(e.ledger); len(procs) != 0 {
		t.Errorf("tasks still alive after every runner ended: %+v", procs)
	}
}
