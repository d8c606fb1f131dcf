package main

// Redis Cluster end to end: a pool must carry a hash tag in its prefix, so
// that every key of it lives in one slot (allocator wake-ups use sharded
// pub/sub in that slot); runners find the slot's owner from any node, and
// a pool without a tag is refused before anything is written.

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/keyspace"
)

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
	depTaskRE = regexp.MustCompile(`^\S+ \[(?:DEBUG|INFO)\]\s+runner: task (started|succeeded):`)
	depWorkRE = regexp.MustCompile(`\bworker=(\d+)`)
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
			at, ok := logTime(line)
			it, token := logItemToken(line)
			w := depWorkRE.FindStringSubmatch(line)
			if !ok || it == "" || w == nil || !logTokenRE.MatchString(line) {
				continue
			}
			out = append(out, depTaskEvent{at: at, runner: r.name, worker: w[1], item: it, token: token, started: m[1] == "started"})
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

// TestE2EClusterTaggedPool runs two pools whose hash tags put them on
// different masters of a 3-master cluster. Each pool's first two runners
// are given redis.addr = a node that does not own the pool's slot: they
// must find out it is a cluster node and follow the redirects. A fifth
// runner is seeded with redis.cluster.addrs. Pool A has more workers than
// items, so blocked workers wait for releases: the sharded wake-up in the
// pool's slot must reach them, across processes.
func TestE2EClusterTaggedPool(t *testing.T) {
	parallel(t)
	cl := redistest.StartCluster(t, redistest.ClusterOptions{})
	addrs := cl.Addrs()

	// Two tags whose slots are on different masters.
	tagA := "{acme}"
	baseOf := func(prefix string) string { return keyspace.New(prefix, poolName).Members() }
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
		want   int         // completed runs wanted of each item
		led    *ledgerTail // its ledger, read as it grows
	}
	const ttl = 2 * time.Second
	worker := func(conc int) string {
		return fmt.Sprintf("worker:\n  concurrency: %d\n  lease_ttl: %v\n  refresh_interval: 500ms\n  safety_margin: 800ms\n  shutdown_grace: 5s\n", conc, ttl)
	}
	newPool := func(name, prefix string) *pool {
		e := newE2E(t) // the ledger: on the shared standalone server
		e.prefix, e.tokenGuard = prefix, true
		p := &pool{name: name, e: e, owner: cl.OwnerOf(baseOf(prefix)), items: itemNames(6), led: &ledgerTail{e: e}}
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
		cfg := pa.e.configVia(pa.others[i], fmt.Sprintf("a%d", i), pa.items, worker(4), sleep)
		pa.rs = append(pa.rs, startRunner(t, fmt.Sprintf("A%d", i), nil, "run", "-c", cfg))
	}
	// Pool B: 2 runners through redis.addr, 1 seeded with every node; 2
	// workers each.
	for i, sleep := range []time.Duration{300 * time.Millisecond, 800 * time.Millisecond} {
		cfg := pb.e.configVia(pb.others[i], fmt.Sprintf("b%d", i), pb.items, worker(2), sleep)
		pb.rs = append(pb.rs, startRunner(t, fmt.Sprintf("B%d", i), nil, "run", "-c", cfg))
	}
	pb.e.redisYAML = fmt.Sprintf("redis:\n  cluster:\n    addrs: %s\n", yamlList(addrs))
	cfgSeeds := pb.e.config("b-seeds", pb.items, worker(2), 500*time.Millisecond)
	pb.rs = append(pb.rs, startRunner(t, "B-seeds", nil, "run", "-c", cfgSeeds))
	all := append(slices.Clone(pa.rs), pb.rs...)

	waitFor(t, "every runner started", 30*time.Second, func() (bool, string) {
		for _, r := range all {
			if ok, seen := r.untilLogged("runner started")(); !ok {
				return false, seen
			}
		}
		return true, ""
	})
	started := time.Now()
	for _, r := range all {
		if r.name == "B-seeds" {
			continue
		}
		if len(r.out.grep("redis.addr is a redis cluster node")) != 1 {
			t.Errorf("%s (redis.addr = a node not owning the slot) did not log \"redis.addr is a redis cluster node\" once", r.name)
		}
	}

	// Each allocator process subscribes to its sharded wake channel, and
	// all of them to the pool's cancel channel, which live on the master
	// of the pool's slot.
	node := map[string]*redis.Client{}
	for _, a := range addrs {
		node[a] = cl.Server(a).Client(t) // that node's keys only
	}
	for _, p := range []*pool{pa, pb} {
		pattern := keyspace.GlobEscape(p.e.keys().WakePrefix()) + "*"
		waitFor(t, "pool "+p.name+"'s wake channels on its master", 10*time.Second, func() (bool, string) {
			chans, err := node[p.owner].PubSubShardChannels(callCtx(t), pattern).Result()
			return err == nil && len(chans) == len(p.rs)+1 && slices.Contains(chans, p.e.keys().Cancels()), fmt.Sprintf("%v (%v)", chans, err)
		})
		for _, a := range p.others {
			chans, err := node[a].PubSubShardChannels(callCtx(t), pattern).Result()
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
		for _, ev := range p.led.read() {
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
	const minRun = 8 * time.Second
	runFrom := time.Now()
	if ok, why := poll(fmt.Sprintf("%v of work and >= %d completed runs of each item", minRun, pa.want), minRun+60*time.Second, func() (bool, string) {
		if time.Since(runFrom) < minRun {
			return false, "running"
		}
		na, okA := ends(pa)
		nb, okB := ends(pb)
		return okA && okB, fmt.Sprintf("completed runs by item: pool A %v, pool B %v", na, nb)
	}); !ok {
		t.Fatalf("%s (machine too loaded? a task took %v on average)", why, depMeanTook(all))
	}
	// Every key of the pool, lock keys of running tasks included, is on
	// the master of its slot.
	placement := func(p *pool, when string) {
		t.Helper()
		pattern := keyspace.GlobEscape(p.e.prefix) + "*"
		onOwner := scanKeys(t, node[p.owner], pattern)
		if !slices.Contains(onOwner, p.e.keys().Members()) {
			t.Errorf("pool %s %s: its member SET is not on %s, the owner of its slot; keys there: %v", p.name, when, p.owner, onOwner)
		}
		for _, a := range p.others {
			if keys := scanKeys(t, node[a], pattern); len(keys) != 0 {
				t.Errorf("pool %s %s: node %s, not the owner of slot %d, holds keys of the pool: %v", p.name, when, a, redistest.KeySlot(p.e.prefix), keys)
			}
		}
		t.Logf("pool %s %s: %d keys, all on %s: %v", p.name, when, len(onOwner), p.owner, onOwner)
	}
	for _, p := range []*pool{pa, pb} {
		placement(p, "while running")
	}
	stopRunners(t, 20*time.Second, all...)
	lost := 0
	for _, r := range all {
		lost += len(r.out.grep("lease lost"))
	}
	t.Logf("runners ran for %v; a task (sleeping 300-800ms) took %v on average from start to success; %d \"lease lost\" log lines",
		time.Since(started).Round(100*time.Millisecond), depMeanTook(all), lost)

	for _, p := range []*pool{pa, pb} {
		runs := p.e.checkLedger(p.e.events())
		counts := completed(runs)
		owners := map[int]bool{}
		for _, rs := range runs {
			for _, s := range rs {
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
		len(hs), other, cross, quantile(lat, .5), quantile(lat, .9), quantile(lat, 1),
		quantile(crossLat, .5), quantile(crossLat, .9), quantile(crossLat, 1))
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
	case quantile(crossLat, .5) > 400*time.Millisecond:
		// A waiter nobody wakes sleeps until the earliest lease deadline
		// (up to the 2s TTL), or the handoff window of 100ms passes.
		t.Errorf("pool A: median hand-off latency across processes %v, want <= 400ms (woken by the release)", quantile(crossLat, .5))
	}
}

// TestE2EClusterUntaggedRefused points the runner at a cluster with a pool
// prefix without a hash tag: every command must refuse with exit 2 and one
// line before writing anything.
func TestE2EClusterUntaggedRefused(t *testing.T) {
	parallel(t)
	cl := redistest.StartCluster(t, redistest.ClusterOptions{})
	addrs := cl.Addrs()
	e := newE2E(t)
	e.tokenGuard = true

	// Every command is started first, then each is waited for: they are
	// independent, and a -race runner takes a while to start.
	type cmd struct {
		what string
		pool bool
		p    *runnerProc
	}
	var cmds []cmd
	seedsYAML := fmt.Sprintf("redis:\n  cluster:\n    addrs: %s\n", yamlList(addrs))

	// runner run, through redis.addr (a node) and through seeds, with
	// prefixes Redis would not take a tag from.
	for i, prefix := range []string{e.prefix, "acme{}", "acme{x"} {
		e.prefix = prefix
		e.redisYAML = ""
		cfg := e.configVia(addrs[i], fmt.Sprintf("run-addr-%d", i), itemNames(2), "", 10*time.Millisecond)
		what := fmt.Sprintf("run (redis.addr %s, prefix %q)", addrs[i], prefix)
		cmds = append(cmds, cmd{what: what, p: startRunner(t, what, nil, "run", "-c", cfg)})
		e.redisYAML = seedsYAML
		cfg = e.config(fmt.Sprintf("run-seeds-%d", i), itemNames(2), "", 10*time.Millisecond)
		what = fmt.Sprintf("run (redis.cluster.addrs, prefix %q)", prefix)
		cmds = append(cmds, cmd{what: what, p: startRunner(t, what, nil, "run", "-c", cfg)})
	}

	// Every pool subcommand through a node; some through seeds.
	e.prefix = "acme"
	e.redisYAML = ""
	cfgAddr := e.configVia(addrs[1], "pool-addr", nil, "", 10*time.Millisecond)
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
			what := fmt.Sprintf("pool %s (%s)", strings.Join(args, " "), c.via)
			p := startRunner(t, what, nil, append([]string{"pool", args[0], "-c", c.cfg}, args[1:]...)...)
			cmds = append(cmds, cmd{what: what, pool: true, p: p})
		}
	}

	for _, c := range cmds {
		code := c.p.wait(60 * time.Second)
		stdout, stderr := c.p.stdout.String(), c.p.stderr.String()
		if code != 2 {
			t.Errorf("%s: exit %d, want 2; stderr:\n%s", c.what, code, clip(stderr))
			continue
		}
		line := oneErrorLine(t, stderr)
		if !strings.Contains(line, "hash tag") || !strings.Contains(line, "prefix") {
			t.Errorf("%s: error line %q does not say to put a hash tag in the prefix", c.what, line)
		}
		t.Logf("%s: exit 2: %s", c.what, line)
		if !c.pool {
			continue
		}
		if n := len(slices.DeleteFunc(lines(stderr), func(l string) bool { return strings.TrimSpace(l) == "" })); n != 1 {
			t.Errorf("%s: stderr has %d lines, want the one error line:\n%s", c.what, n, clip(stderr))
		}
		if stdout != "" {
			t.Errorf("%s: printed %q on stdout", c.what, clip(stdout))
		}
	}

	// Nothing was written anywhere.
	for _, a := range addrs {
		c := cl.Server(a).Client(t)
		n, err := c.DBSize(callCtx(t)).Result()
		if err != nil || n != 0 {
			t.Errorf("node %s: DBSIZE = %d (%v), want 0: something was written; keys: %v", a, n, err, scanKeys(t, c, "*"))
		}
	}
	if evs := e.events(); len(evs) != 0 {
		t.Errorf("a task ran: %+v", evs)
	}
}
