package main

// Deployment end-to-end tests: real runner processes (the -race binary of
// e2e_harness_test.go) against the Redis deployments the runner now checks
// at start: a Redis Cluster (a pool must carry a hash tag in its prefix, so
// that every key of it lives in one slot; allocator wake-ups use sharded
// pub/sub in that slot), a Redis that may evict keys (refused unless
// redis.allow_eviction, and watched while running), and a fleet whose
// processes are killed with SIGKILL over and over (per-process entries of
// the allocator must not pile up in Redis).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/keyspace"
)

// depPoolName is pool.name as the harness's configs leave it.
const depPoolName = "lock-pool"

// depCtx is a context for one Redis call of the test.
func depCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// depNodeClient is a plain client of one server (one cluster node: it sees
// that node's keys only).
func depNodeClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// depScan lists the keys of one server matching pattern.
func depScan(t *testing.T, c *redis.Client, pattern string) []string {
	t.Helper()
	var out []string
	var cursor uint64
	for {
		keys, next, err := c.Scan(depCtx(t), cursor, pattern, 1000).Result()
		if err != nil {
			t.Fatalf("SCAN %q on %s: %v", pattern, c.Options().Addr, err)
		}
		out = append(out, keys...)
		if cursor = next; cursor == 0 {
			break
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// depLines returns the lines of out containing every one of subs.
func depLines(out string, subs ...string) []string {
	var found []string
	for line := range strings.Lines(out) {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			found = append(found, strings.TrimRight(line, "\n"))
		}
	}
	return found
}

// depStderrLines is stderr without empty lines.
func depStderrLines(s string) []string {
	var out []string
	for line := range strings.Lines(s) {
		if strings.TrimSpace(line) != "" {
			out = append(out, strings.TrimRight(line, "\n"))
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// Hand-off latency, from the runners' logs.

// depTaskEvent is one "task started" or "task succeeded" log line.
type depTaskEvent struct {
	at      time.Time
	runner  string
	worker  string
	item    string
	token   int64
	started bool
}

var (
	depTaskRE  = regexp.MustCompile(`^(\S+) \[(?:DEBUG|INFO)\]\s+runner: task (started|succeeded):`)
	depItemRE  = regexp.MustCompile(`\bitem=(\S+)`)
	depWorkRE  = regexp.MustCompile(`\bworker=(\d+)`)
	depTokenRE = regexp.MustCompile(`\btoken=(\d+)`)
)

// depTaskEvents parses the task start and success lines of runner logs.
func depTaskEvents(rs []*runnerProc) []depTaskEvent {
	var out []depTaskEvent
	for _, r := range rs {
		for _, line := range r.out.lines() {
			m := depTaskRE.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			at, err := time.Parse("2006-01-02T15:04:05.000Z07:00", m[1])
			it, w, tok := depItemRE.FindStringSubmatch(line), depWorkRE.FindStringSubmatch(line), depTokenRE.FindStringSubmatch(line)
			if err != nil || it == nil || w == nil || tok == nil {
				continue
			}
			token, _ := strconv.ParseInt(tok[1], 10, 64)
			out = append(out, depTaskEvent{at: at, runner: r.name, worker: w[1], item: it[1], token: token, started: m[2] == "started"})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// depHandoff is a release of an item (logged just before it) followed by
// the next run of the item.
type depHandoff struct {
	item       string
	from, to   string // runner/worker
	crossProc  bool
	sameWorker bool
	latency    time.Duration
}

func depHandoffs(evs []depTaskEvent) []depHandoff {
	var out []depHandoff
	for i, ev := range evs {
		if ev.started {
			continue
		}
		for _, nx := range evs[i+1:] {
			if nx.item == ev.item && nx.started && nx.token > ev.token {
				out = append(out, depHandoff{
					item: ev.item, from: ev.runner + "/w" + ev.worker, to: nx.runner + "/w" + nx.worker,
					crossProc: nx.runner != ev.runner, sameWorker: nx.runner == ev.runner && nx.worker == ev.worker,
					latency: nx.at.Sub(ev.at),
				})
				break
			}
		}
	}
	return out
}

// depMeanTook is the mean "took" of the tasks that succeeded.
func depMeanTook(rs []*runnerProc) time.Duration {
	re := regexp.MustCompile(`task succeeded: .*\btook=(\S+)`)
	var sum time.Duration
	n := 0
	for _, r := range rs {
		for _, line := range r.out.lines() {
			if m := re.FindStringSubmatch(line); m != nil {
				if d, err := time.ParseDuration(m[1]); err == nil {
					sum += d
					n++
				}
			}
		}
	}
	if n == 0 {
		return 0
	}
	return (sum / time.Duration(n)).Round(time.Millisecond)
}

func depQuantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// ---------------------------------------------------------------------------

// TestE2EClusterTaggedPool runs two pools whose hash tags put them on
// different masters of a 3-master cluster. Each pool's first two runners
// are given redis.addr = a node that does not own the pool's slot: they
// must find out it is a cluster node and follow the redirects. A fifth
// runner is seeded with redis.cluster.addrs. Pool A has more workers than
// items, so blocked workers wait for releases: the sharded wake-up in the
// pool's slot must reach them, across processes.
func TestE2EClusterTaggedPool(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, redistest.ClusterOptions{})
	addrs := cl.Addrs()

	// Two tags whose slots are on different masters.
	tagA := "{acme}"
	baseOf := func(prefix string) string { return keyspace.New(prefix, depPoolName).Members() }
	tagB := ""
	for i := 0; ; i++ {
		cand := fmt.Sprintf("{beta%d}", i)
		if cl.OwnerOf(baseOf(cand)) != cl.OwnerOf(baseOf(tagA)) {
			tagB = cand
			break
		}
	}

	type pool struct {
		name   string
		e      *e2eEnv
		owner  string
		others []string
		items  []string
		rs     []*runnerProc
		want   int // completed runs wanted of each item
	}
	const ttl = 2 * time.Second
	worker := func(conc int) string {
		return fmt.Sprintf("worker:\n  concurrency: %d\n  lease_ttl: %v\n  refresh_interval: 500ms\n  safety_margin: 800ms\n  shutdown_grace: 5s\n", conc, ttl)
	}
	newPool := func(name, prefix string) *pool {
		e := newE2E(t) // the ledger: on the shared standalone server
		e.prefix, e.tokenGuard = prefix, true
		p := &pool{name: name, e: e, owner: cl.OwnerOf(baseOf(prefix)), items: itemNames(6)}
		for _, a := range addrs {
			if a != p.owner {
				p.others = append(p.others, a)
			}
		}
		return p
	}
	pa, pb := newPool("A", tagA), newPool("B", tagB)
	t.Logf("pool A prefix %s: slot %d on %s; pool B prefix %s: slot %d on %s; nodes %v",
		tagA, redistest.KeySlot(tagA), pa.owner, tagB, redistest.KeySlot(tagB), pb.owner, addrs)

	// Pool A: 2 runners x 4 workers for 6 items: two workers always wait.
	for i, sleep := range []time.Duration{800 * time.Millisecond, 600 * time.Millisecond} {
		pa.e.runnerAddr = pa.others[i]
		cfg := pa.e.config(fmt.Sprintf("a%d", i), pa.items, worker(4), sleep)
		pa.rs = append(pa.rs, startRunner(t, fmt.Sprintf("A%d", i), nil, "run", "-c", cfg))
	}
	// Pool B: 2 runners through redis.addr, 1 seeded with every node; 2
	// workers each.
	for i, sleep := range []time.Duration{300 * time.Millisecond, 800 * time.Millisecond} {
		pb.e.runnerAddr = pb.others[i]
		cfg := pb.e.config(fmt.Sprintf("b%d", i), pb.items, worker(2), sleep)
		pb.rs = append(pb.rs, startRunner(t, fmt.Sprintf("B%d", i), nil, "run", "-c", cfg))
	}
	pb.e.redisYAML = fmt.Sprintf("redis:\n  cluster:\n    addrs: %s\n", yamlList(addrs))
	cfgSeeds := pb.e.config("b-seeds", pb.items, worker(2), 500*time.Millisecond)
	pb.rs = append(pb.rs, startRunner(t, "B-seeds", nil, "run", "-c", cfgSeeds))
	all := append(slices.Clone(pa.rs), pb.rs...)

	waitFor(t, "every runner started", 30*time.Second, func() bool {
		for _, r := range all {
			if !strings.Contains(r.out.String(), "runner started") {
				return false
			}
		}
		return true
	})
	started := time.Now()
	for _, r := range all {
		if r.name == "B-seeds" {
			continue
		}
		if len(depLines(r.out.String(), "redis.addr is a redis cluster node")) != 1 {
			t.Errorf("%s (redis.addr = a node not owning the slot) did not log \"redis.addr is a redis cluster node\" once", r.name)
		}
	}

	// Each allocator process subscribes to its sharded wake channel, which
	// lives on the master of the pool's slot.
	for _, p := range []*pool{pa, pb} {
		pattern := keyspace.GlobEscape(keyspace.New(p.e.prefix, depPoolName).WakePrefix()) + "*"
		waitFor(t, "pool "+p.name+"'s wake channels on its master", 10*time.Second, func() bool {
			chans, err := depNodeClient(t, p.owner).PubSubShardChannels(depCtx(t), pattern).Result()
			return err == nil && len(chans) == len(p.rs)
		})
		for _, a := range p.others {
			chans, err := depNodeClient(t, a).PubSubShardChannels(depCtx(t), pattern).Result()
			if err != nil || len(chans) != 0 {
				t.Errorf("pool %s: node %s (not the slot's owner) has wake channels %v (%v)", p.name, a, chans, err)
			}
		}
	}

	// Run for 8s at least, and until every item ran several times: on a
	// loaded machine each task start (two -race processes, about 0.3s of
	// CPU) takes a second or more.
	pa.want, pb.want = 3, 3
	ends := func(p *pool) (map[string]int, bool) {
		n := map[string]int{}
		for _, ev := range p.e.events() {
			if ev.Ev == "end" {
				n[ev.Item]++
			}
		}
		for _, it := range p.items {
			if n[it] < p.want {
				return n, false
			}
		}
		return n, true
	}
	time.Sleep(8 * time.Second)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		na, okA := ends(pa)
		nb, okB := ends(pb)
		if okA && okB {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, completed runs by item: pool A %v, pool B %v; want >= %d of each (machine too loaded? a task took %v on average)",
				time.Since(started).Round(time.Second), na, nb, pa.want, depMeanTook(all))
		}
	}
	// Every key of the pool, lock keys of running tasks included, is on
	// the master of its slot.
	placement := func(p *pool, when string) {
		t.Helper()
		pattern := keyspace.GlobEscape(p.e.prefix) + "*"
		onOwner := depScan(t, depNodeClient(t, p.owner), pattern)
		if !slices.Contains(onOwner, keyspace.New(p.e.prefix, depPoolName).Members()) {
			t.Errorf("pool %s %s: its member SET is not on %s, the owner of its slot; keys there: %v", p.name, when, p.owner, onOwner)
		}
		for _, a := range p.others {
			if keys := depScan(t, depNodeClient(t, a), pattern); len(keys) != 0 {
				t.Errorf("pool %s %s: node %s, not the owner of slot %d, holds keys of the pool: %v", p.name, when, a, redistest.KeySlot(p.e.prefix), keys)
			}
		}
		t.Logf("pool %s %s: %d keys, all on %s: %v", p.name, when, len(onOwner), p.owner, onOwner)
	}
	for _, p := range []*pool{pa, pb} {
		placement(p, "while running")
	}
	for _, r := range all {
		r.signal(syscall.SIGTERM)
	}
	for _, r := range all {
		if code := r.wait(20 * time.Second); code != 0 {
			t.Errorf("%s exited %d after SIGTERM, want 0", r.name, code)
		}
	}
	lost := 0
	for _, r := range all {
		lost += len(depLines(r.out.String(), "lease lost"))
	}
	t.Logf("runners ran for %v; a task (sleeping 300-800ms) took %v on average from start to success; %d \"lease lost\" log lines",
		time.Since(started).Round(100*time.Millisecond), depMeanTook(all), lost)

	for _, p := range []*pool{pa, pb} {
		runs := p.e.checkLedger(p.e.events())
		counts := map[string]int{}
		owners := map[int]bool{}
		for it, rs := range runs {
			for _, s := range rs {
				if s.ok {
					counts[it]++
				}
				owners[ownerPid(s.owner)] = true
			}
		}
		for _, it := range p.items {
			if counts[it] < p.want {
				t.Errorf("pool %s: item %s ran to its end %d times, want several (>= %d)", p.name, it, counts[it], p.want)
			}
		}
		if len(owners) != len(p.rs) {
			t.Errorf("pool %s: runs came from %d runner processes, want all %d", p.name, len(owners), len(p.rs))
		}
		t.Logf("pool %s: completed runs by item %v, from %d runners", p.name, counts, len(owners))

		placement(p, "after the runners stopped")
	}

	// Hand-offs in pool A: the release of an item and the next run of it.
	hs := depHandoffs(depTaskEvents(pa.rs))
	var lat, crossLat []time.Duration
	cross, other := 0, 0
	for _, h := range hs {
		lat = append(lat, h.latency)
		if !h.sameWorker {
			other++
		}
		if h.crossProc {
			cross++
			crossLat = append(crossLat, h.latency)
		}
	}
	t.Logf("pool A hand-offs: %d, to another worker %d, to another process %d; latency (release logged -> next run logged) p50 %v p90 %v max %v; across processes p50 %v p90 %v max %v",
		len(hs), other, cross, depQuantile(lat, .5), depQuantile(lat, .9), depQuantile(lat, 1),
		depQuantile(crossLat, .5), depQuantile(crossLat, .9), depQuantile(crossLat, 1))
	if len(hs) > 0 {
		slow := slices.MaxFunc(hs, func(a, b depHandoff) int { return int(a.latency - b.latency) })
		t.Logf("pool A slowest hand-off: %s from %s to %s in %v", slow.item, slow.from, slow.to, slow.latency)
	}
	switch {
	case len(hs) < 10:
		t.Errorf("pool A: only %d hand-offs seen in the logs, want >= 10", len(hs))
	case other*10 < len(hs)*7:
		// With two workers always blocked, a release hands the item to
		// the oldest waiter; only a lost wake-up lets the releasing worker
		// take it back.
		t.Errorf("pool A: only %d of %d released items went to another (waiting) worker, want >= 70%%: wake-ups not delivered?", other, len(hs))
	case cross < 3:
		t.Errorf("pool A: only %d hand-offs across processes, want >= 3", cross)
	case depQuantile(crossLat, .5) > 400*time.Millisecond:
		// A waiter nobody wakes sleeps until the earliest lease deadline
		// (up to the 2s TTL), or the handoff window of 100ms passes.
		t.Errorf("pool A: median hand-off latency across processes %v, want <= 400ms (woken by the release)", depQuantile(crossLat, .5))
	}
}

// TestE2EClusterUntaggedRefused points the runner at a cluster with a pool
// prefix without a hash tag: every command must refuse with exit 2 and one
// line before writing anything.
func TestE2EClusterUntaggedRefused(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, redistest.ClusterOptions{})
	addrs := cl.Addrs()
	e := newE2E(t)
	e.tokenGuard = true

	// Every command is started first, then each is waited for: they are
	// independent, and a -race runner takes a while to start.
	type cmd struct {
		what string
		pool bool
		p    *inputProc
	}
	var cmds []cmd
	seedsYAML := fmt.Sprintf("redis:\n  cluster:\n    addrs: %s\n", yamlList(addrs))

	// runner run, through redis.addr (a node) and through seeds, with
	// prefixes Redis would not take a tag from.
	for i, prefix := range []string{e.prefix, "acme{}", "acme{x"} {
		e.prefix = prefix
		e.redisYAML, e.runnerAddr = "", addrs[i]
		cfg := e.config(fmt.Sprintf("run-addr-%d", i), itemNames(2), "", 10*time.Millisecond)
		cmds = append(cmds, cmd{what: fmt.Sprintf("run (redis.addr %s, prefix %q)", addrs[i], prefix), p: inputStart(t, runnerBin, "", nil, nil, "run", "-c", cfg)})
		e.redisYAML = seedsYAML
		cfg = e.config(fmt.Sprintf("run-seeds-%d", i), itemNames(2), "", 10*time.Millisecond)
		cmds = append(cmds, cmd{what: fmt.Sprintf("run (redis.cluster.addrs, prefix %q)", prefix), p: inputStart(t, runnerBin, "", nil, nil, "run", "-c", cfg)})
	}

	// Every pool subcommand through a node; some through seeds.
	e.prefix = "acme"
	e.redisYAML, e.runnerAddr = "", addrs[1]
	cfgAddr := e.config("pool-addr", nil, "", 10*time.Millisecond)
	e.redisYAML = seedsYAML
	cfgSeeds := e.config("pool-seeds", nil, "", 10*time.Millisecond)
	for _, c := range []struct {
		cfg, via string
		args     [][]string
	}{
		{cfgAddr, "redis.addr", [][]string{{"add", "a", "b"}, {"remove", "a"}, {"set", "a"}, {"clear"}, {"list"}, {"status"}, {"status", "--json"}}},
		{cfgSeeds, "redis.cluster.addrs", [][]string{{"add", "a", "b"}, {"set", "a"}, {"list", "--json"}}},
	} {
		for _, args := range c.args {
			p := inputStart(t, runnerBin, "", nil, nil, append([]string{"pool", args[0], "-c", c.cfg}, args[1:]...)...)
			cmds = append(cmds, cmd{what: fmt.Sprintf("pool %s (%s)", strings.Join(args, " "), c.via), pool: true, p: p})
		}
	}

	for _, c := range cmds {
		code := c.p.wait(60 * time.Second)
		stdout, stderr := c.p.stdout.String(), c.p.stderr.String()
		if code != 2 {
			t.Errorf("%s: exit %d, want 2; stderr:\n%s", c.what, code, inputClip(stderr))
			continue
		}
		line := inputErrorLine(t, stderr)
		if !strings.Contains(line, "hash tag") || !strings.Contains(line, "prefix") {
			t.Errorf("%s: error line %q does not say to put a hash tag in the prefix", c.what, line)
		}
		t.Logf("%s: exit 2: %s", c.what, line)
		if !c.pool {
			continue
		}
		if lines := depStderrLines(stderr); len(lines) != 1 {
			t.Errorf("%s: stderr has %d lines, want the one error line:\n%s", c.what, len(lines), inputClip(stderr))
		}
		if stdout != "" {
			t.Errorf("%s: printed %q on stdout", c.what, inputClip(stdout))
		}
	}

	// Nothing was written anywhere.
	for _, a := range addrs {
		n, err := depNodeClient(t, a).DBSize(depCtx(t)).Result()
		if err != nil || n != 0 {
			t.Errorf("node %s: DBSIZE = %d (%v), want 0: something was written; keys: %v", a, n, err, depScan(t, depNodeClient(t, a), "*"))
		}
	}
	if evs := e.events(); len(evs) != 0 {
		t.Errorf("a task ran: %+v", evs)
	}
}

// TestE2EEvictionRefused starts the runner against servers that may evict
// keys: refused (exit 2, one line, nothing written) unless
// redis.allow_eviction, given in any of the three ways; then a runner that
// accepted it sees the server evict keys and reports it, in the log and on
// /healthz.
func TestE2EEvictionRefused(t *testing.T) {
	t.Parallel()
	lru := redistest.StartServer(t, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
	vol := redistest.StartServer(t, "--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru")
	items := itemNames(3)

	for _, srv := range []struct {
		s      *redistest.Server
		policy string
	}{{lru, "allkeys-lru"}, {vol, "volatile-lru"}} {
		e := newE2E(t) // the ledger: on the shared server, which does not evict
		e.tokenGuard = true
		e.runnerAddr = srv.s.Addr
		cfg := e.config("refused", items, "", 50*time.Millisecond)
		for _, args := range [][]string{{"run", "-c", cfg}, {"pool", "add", "-c", cfg, "x"}, {"pool", "list", "-c", cfg}} {
			name := strings.Join(slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "-c" || a == cfg }), " ")
			what := fmt.Sprintf("runner %s (maxmemory-policy %s)", name, srv.policy)
			code, _, errOut := inputRun(t, nil, args...)
			if code != 2 {
				t.Errorf("%s: exit %d, want 2; stderr:\n%s", what, code, inputClip(errOut))
				continue
			}
			line := inputErrorLine(t, errOut)
			for _, want := range []string{"maxmemory-policy", srv.policy, "noeviction", "allow_eviction"} {
				if !strings.Contains(line, want) {
					t.Errorf("%s: error line %q does not mention %q", what, line, want)
				}
			}
			t.Logf("%s: exit 2: %s", what, line)
		}
		if n, err := srv.s.Client(t).DBSize(depCtx(t)).Result(); err != nil || n != 0 {
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
		warn := depLines(r.out.String(), "[WARN]", "redis may evict keys, accepted by redis.allow_eviction")
		if len(warn) != 1 {
			t.Errorf("%s: want one warning \"redis may evict keys, accepted by redis.allow_eviction\" at WARN, got %q", r.name, warn)
		} else {
			t.Logf("%s: %s", r.name, warn[0])
		}
		if len(depLines(r.out.String(), "batch complete")) != 1 {
			t.Errorf("%s: did not log \"batch complete\"", r.name)
		}
	}
	runs := e.checkLedger(e.events())
	for _, it := range items {
		n := 0
		for _, s := range runs[it] {
			if s.ok {
				n++
			}
		}
		if n != len(batches) {
			t.Errorf("item %s ran to its end %d times, want once per batch (%d)", it, n, len(batches))
		}
	}

	// A loop runner that accepted eviction, while the server evicts.
	cfgLoop := e.config("loop", []string{"solo"}, "worker:\n  concurrency: 1\n  lease_ttl: 2s\nadmin:\n  listen: 127.0.0.1:0\n", 300*time.Millisecond)
	r := startRunner(t, "loop", nil, "run", "-c", cfgLoop)
	base := faultAdminBase(t, r)
	waitFor(t, "loop runner started", 20*time.Second, func() bool { return strings.Contains(r.out.String(), "runner started") })
	if code, body := faultGet(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz before any eviction = %d %q, want 200", code, body)
	}
	c := lru.Client(t)
	evicted := func() int64 {
		txt, err := c.Info(depCtx(t), "stats").Result()
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
	fill := func() {
		if err := c.Set(depCtx(t), fmt.Sprintf("%sfiller:%d", e.prefix, n), big, 0).Err(); err != nil {
			t.Fatalf("SET filler %d: %v", n, err)
		}
		n++
	}
	for evicted() == 0 {
		if n > 500 {
			t.Fatalf("%d MiB written and evicted_keys is still 0", n)
		}
		fill()
	}
	firstEviction := time.Now()
	t.Logf("evicted_keys rose after %d MiB of filler", n)
	// Keep the server evicting until the runner reports it: its watch
	// compares one look (every 2s) with the one before.
	var logged []string
	waitFor(t, "the runner logging \"redis is evicting keys\" at ERROR", 20*time.Second, func() bool {
		logged = depLines(r.out.String(), "[ERROR]", "redis is evicting keys")
		if len(logged) == 0 {
			fill()
			time.Sleep(100 * time.Millisecond)
		}
		return len(logged) > 0
	})
	t.Logf("logged %v after the first eviction (watch period 2s): %s", time.Since(firstEviction).Round(10*time.Millisecond), logged[0])
	if d := time.Since(firstEviction); d > 8*time.Second {
		t.Errorf("eviction logged %v after it began, want within a few seconds (watch period 2s)", d)
	}
	code, body := faultGet(t, base+"/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "evict") {
		t.Errorf("/healthz after the eviction = %d %q, want 503 mentioning evict", code, body)
	} else {
		t.Logf("/healthz: %d %s", code, strings.TrimSpace(body))
	}
	r.signal(syscall.SIGTERM)
	if code := r.wait(20 * time.Second); code != 0 {
		t.Errorf("loop runner exited %d after SIGTERM, want 0", code)
	}
}

// TestE2EKillSoakNoGrowingKeys starts runner processes one after another
// and kills each with SIGKILL one to two seconds later, with more workers
// than items, so that killed processes leave waiter and hand-off entries
// behind. Their entries must be pruned, and no key is per-process: the
// pool's keys stay a fixed set however many processes ran.
func TestE2EKillSoakNoGrowingKeys(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	e := newE2E(t)
	e.addr, e.runnerAddr, e.client = srv.Addr, srv.Addr, srv.Client(t)
	items := itemNames(3)
	const conc = 3
	cfg := e.config("soak", items, fmt.Sprintf("worker:\n  concurrency: %d\n  lease_ttl: 2s\n  refresh_interval: 300ms\n  safety_margin: 800ms\n  shutdown_grace: 5s\n", conc), time.Second)

	ks := keyspace.New(e.prefix, depPoolName)
	allowed := map[string]bool{}
	for _, k := range []string{ks.Members(), ks.Epoch(), ks.Index(), ks.Fence(), ks.Bindings(), ks.Waiters(), ks.Reserved(),
		ks.Foreign(), ks.SyncState(), ks.Failures(), ks.ItemsMarker()} {
		allowed[k] = true
	}
	for _, it := range items {
		allowed[ks.Lock(it)] = true
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
	live := func(ids []string) (stale int) {
		chans := map[string]bool{}
		for _, id := range ids {
			proc, _, _ := strings.Cut(id, ":")
			chans[ks.Wake(proc)] = true
		}
		if len(chans) == 0 {
			return 0
		}
		subs, err := e.client.PubSubShardNumSub(depCtx(t), sortedKeys(chans)...).Result()
		if err != nil {
			t.Fatalf("PUBSUB SHARDNUMSUB: %v", err)
		}
		for _, id := range ids {
			proc, _, _ := strings.Cut(id, ":")
			if subs[ks.Wake(proc)] == 0 {
				stale++
			}
		}
		return stale
	}
	take := func(at string, procs, alive int) sample {
		s := sample{at: at, procs: procs, alive: alive}
		keys := depScan(t, e.client, pattern)
		s.keys = len(keys)
		for _, k := range keys {
			if !allowed[k] {
				s.unexpected = append(s.unexpected, k)
			}
		}
		var err error
		if s.waiterIDs, err = e.client.ZRange(depCtx(t), ks.Waiters(), 0, -1).Result(); err != nil {
			t.Fatal(err)
		}
		if s.resvIDs, err = e.client.HKeys(depCtx(t), ks.Reserved()).Result(); err != nil {
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
	var trackMu sync.Mutex
	tracked := map[string]*track{}
	stopTrack, trackDone := make(chan struct{}), make(chan struct{})
	tc := depNodeClient(t, srv.Addr)
	go func() {
		defer close(trackDone)
		for {
			select {
			case <-stopTrack:
				return
			case <-time.After(100 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			w, err1 := tc.ZRange(ctx, ks.Waiters(), 0, -1).Result()
			r, err2 := tc.HKeys(ctx, ks.Reserved()).Result()
			chans := map[string]bool{}
			for _, id := range append(slices.Clone(w), r...) {
				proc, _, _ := strings.Cut(id, ":")
				chans[ks.Wake(proc)] = true
			}
			subs := map[string]int64{}
			var err3 error
			if len(chans) > 0 {
				subs, err3 = tc.PubSubShardNumSub(ctx, sortedKeys(chans)...).Result()
			}
			cancel()
			if err1 != nil || err2 != nil || err3 != nil {
				continue
			}
			now := time.Now()
			present := map[string]bool{}
			trackMu.Lock()
			for kind, ids := range map[string][]string{"waiter ": w, "reserved ": r} {
				for _, id := range ids {
					key := kind + id
					present[key] = true
					proc, _, _ := strings.Cut(id, ":")
					if subs[ks.Wake(proc)] == 0 && tracked[key] == nil {
						tracked[key] = &track{stale: now}
					}
				}
			}
			for key, tr := range tracked {
				if !present[key] && tr.gone.IsZero() {
					tr.gone = now
				}
			}
			trackMu.Unlock()
		}
	}()
	defer func() {
		select {
		case <-stopTrack:
		default:
			close(stopTrack)
		}
		<-trackDone
	}()

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
		waitFor(t, r.name+" started", 20*time.Second, func() bool { return strings.Contains(r.out.String(), "runner started") })
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
	waitFor(t, "the steady runners started", 20*time.Second, func() bool {
		return strings.Contains(steady[0].out.String(), "runner started") && strings.Contains(steady[1].out.String(), "runner started")
	})
	settleStart := time.Now()
	var final sample
	var clean time.Duration
	// Sync steps (every 250ms per allocator) drop the entries of dead
	// processes, 4 sampled per step: give them a few seconds.
	if !waitUntil(10*time.Second, func() bool {
		final = take("steady:", killed+2, 2)
		if final.staleW == 0 && final.staleR == 0 {
			if clean == 0 {
				clean = time.Since(settleStart)
			}
		} else {
			clean = 0
		}
		return clean > 0 && time.Since(settleStart) > 3*time.Second
	}) {
		t.Errorf("10s after the last kill, entries of dead processes remain: waiters %v, reserved %v", final.waiterIDs, final.resvIDs)
	}
	samples = append(samples, final)
	logSample(final)
	t.Logf("no entry of a dead process left %v after the steady runners started (and still none %v after)", clean.Round(10*time.Millisecond), time.Since(settleStart).Round(10*time.Millisecond))

	close(stopTrack)
	<-trackDone
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
		nw, nr, depQuantile(pruned, .5), depQuantile(pruned, .9), depQuantile(pruned, 1), left)

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

	for _, r := range steady {
		r.signal(syscall.SIGTERM)
	}
	for _, r := range steady {
		if code := r.wait(20 * time.Second); code != 0 {
			t.Errorf("%s exited %d after SIGTERM, want 0", r.name, code)
		}
	}
	evs := e.events()
	runs := e.checkLedger(evs)
	total := 0
	for _, rs := range runs {
		total += len(rs)
	}
	t.Logf("ledger: %d runs over %d items, %d events", total, len(runs), len(evs))
	if procs := chaosLedgerProcs(e.ledger); len(procs) != 0 {
		t.Errorf("tasks still alive after every runner ended: %+v", procs)
	}
}
