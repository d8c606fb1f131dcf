package main

// The end-to-end harness, the one place the e2e_*_test.go files take their
// helpers from. Tests run the real runner binary as separate processes
// against real redis-servers (the shared one, or their own from
// internal/redistest), and the task each runner executes is the recorder
// (internal/e2erecorder), which writes every run into a ledger LIST in
// Redis through a fencing guard, with the ledger server's time.
//
// This file: the build (TestMain), how many tests run at once (parallel,
// which every test of the package calls instead of t.Parallel), a test's
// pool and ledger (e2eEnv), the runner configs, the ledger checks (no two
// live holders, tokens increasing, nothing rejected), and leases read
// from Redis.
// e2e_harness_procs_test.go: runner processes, their output, /proc, and
// freezing a runner. e2e_harness_wait_test.go: the one wait, background
// polling, the admin endpoint's client.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/lockpool/lockpool/internal/faultproxy"
	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/keyspace"
)

// runnerBin is the runner binary built once by TestMain (with -race),
// plainRunnerBin the same without -race (for peak-memory bounds, which a
// race build's shadow memory would blow), and recorderBin the task every
// test runs (internal/e2erecorder, without).
var runnerBin, plainRunnerBin, recorderBin string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "runner-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		runnerBin = filepath.Join(dir, "runner")
		plainRunnerBin = filepath.Join(dir, "runner-norace")
		recorderBin = filepath.Join(dir, "recorder")
		var race []string
		if raceEnabled {
			race = []string{"-race"}
		}
		// The three builds run at once: each is mostly a link, which
		// uses one CPU, and no test starts before they are done.
		var g errgroup.Group
		build := func(what string, args ...string) {
			g.Go(func() error {
				cmd := exec.Command("go", append([]string{"build"}, args...)...)
				cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
				if err := cmd.Run(); err != nil {
					return fmt.Errorf("building %s: %w", what, err)
				}
				return nil
			})
		}
		build("the runner binary", slices.Concat([]string{"-o", runnerBin}, race, []string{"."})...)
		build("the runner binary without -race", "-o", plainRunnerBin, ".")
		// The recorder, every task of these tests, is built without -race:
		// a loaded 2-core machine starts thousands of them, and a race
		// build costs several times the CPU to start.
		build("the recorder", "-o", recorderBin, "../../internal/e2erecorder")
		if err := g.Wait(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		openGate()
		redistest.Main(m) // exits
		return 0
	}()
	os.Exit(code)
}

// gate holds a place for each test of this package running at once (see
// parallel); openGate sizes it. first counts the tests that run before it
// opens (parallelFirst).
var (
	gate  chan struct{}
	first sync.WaitGroup
)

// openGate makes the gate, not go test, bound how many tests run at once:
// -parallel places when given, else 2 per CPU, since most tests here wait
// on their processes (leases expiring, failovers, restarts) and
// GOMAXPROCS of them at a time leave the CPUs idle. Not more: make test
// runs the other packages beside this one, and with 4 per CPU (load
// average 19 on 2 CPUs) an allocator test's keep-alives went 7 s without
// the CPU. go test's own bound
// is lifted so that every test reaches the gate, and a long one starts at
// once (parallelLong).
func openGate() {
	flag.Parse()
	places := 2 * runtime.GOMAXPROCS(0)
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "test.parallel" {
			places, _ = strconv.Atoi(f.Value.String())
		}
	})
	if places < 1 {
		return // m.Run reports the bad -parallel
	}
	gate = make(chan struct{}, places)
	_ = flag.Set("test.parallel", strconv.Itoa(math.MaxInt32))
}

// parallel is t.Parallel for every test of this package: the test then
// waits for a place at the gate, first come first served, and keeps it
// until it and its cleanups end, so its elapsed time includes that wait
// (logged when it was long). A test with parallel subtests calls
// t.Parallel and leaves the places to them: holding one while they wait
// for theirs could leave them none.
func parallel(t *testing.T) {
	t.Helper()
	t.Parallel()
	start := time.Now()
	first.Wait()
	gate <- struct{}{}
	if waited := time.Since(start); waited > time.Second {
		t.Logf("waited %v for one of the %d places to run (parallel)", waited.Round(time.Millisecond), cap(gate))
	}
	t.Cleanup(func() { <-gate })
}

// parallelLong is parallel for a test that takes half a minute or more by
// design (a soak, a series of failovers): it runs at once, beside the
// gate's places. The package takes at least as long as its longest test,
// so every second such a test waits for a place adds a second to it, and
// go test starts parallel tests in no set order.
func parallelLong(t *testing.T) { t.Parallel() }

// parallelFirst is parallel for a test that needs a quiet machine: it
// runs at once, and the gate opens when it ends, so only the long tests
// run beside it. It is for a long test made of many round trips, each of
// which waits for the scheduler to wake a process: on a machine loaded by
// the gate's tests it is many times slower (a million items in chunks of
// 1000: 3s alone, 50s among them).
func parallelFirst(t *testing.T) {
	first.Add(1) // before t.Parallel: no test waits at the gate yet
	t.Parallel()
	t.Cleanup(first.Done)
}

const (
	// poolName is pool.name as the harness's configs leave it.
	poolName = "lock-pool"
	// killGrace is the harness's task.kill_grace.
	killGrace = 300 * time.Millisecond
	// takeoverMargin bounds how long after a killed runner's leases can
	// expire (lease_ttl after the kill at the latest) one of its items is
	// free again (the chaos soak) or granted again to an idle waiter
	// (TestE2EKilledRunnersItemsAreTakenOver): a sleeping waiter's timer at
	// the deadline, on a loaded 2-core machine where the -race runners are
	// starved (up to 1.2s seen under make test).
	takeoverMargin = 2 * time.Second
)

// event is one ledger entry.
type event struct {
	Ev      string `json:"ev"`
	T       int64  `json:"t"` // server time, µs
	Item    string `json:"item"`
	Token   int64  `json:"token"`
	Owner   string `json:"owner"`
	Pid     int    `json:"pid"`
	Attempt string `json:"attempt"`
}

func (e event) at() time.Time { return time.UnixMicro(e.T) }

// e2eEnv is one test's pool, ledger and Redis.
type e2eEnv struct {
	t    *testing.T
	addr string // where the test and the recorder reach Redis
	// runnerAddr is the redis.addr written into runner configs: addr
	// unless a test routes runners elsewhere (a fault proxy, a node).
	runnerAddr string
	client     *redis.Client
	prefix     string
	ledger     string
	dir        string
	// redisYAML, when set, replaces the runner config's redis section
	// (Sentinel, Cluster); the ledger stays at addr.
	redisYAML string
	// tokenGuard makes the recorder's guard check tokens only: set when the
	// pool lives on another server than the ledger.
	tokenGuard bool
	// failItem is an item whose task fails (exit 7, with stderr), "" for none.
	failItem string
}

// newE2E is a test's pool and ledger on the shared server.
func newE2E(t *testing.T) *e2eEnv {
	t.Helper()
	e := &e2eEnv{t: t, addr: redistest.Addr(t), client: redistest.Client(t), prefix: redistest.Prefix(t), dir: t.TempDir()}
	e.runnerAddr = e.addr
	e.ledger = e.prefix + "|e2e:ledger"
	return e
}

// newE2EOn is newE2E with pool and ledger on srv, a server of the test's
// own.
func newE2EOn(t *testing.T, srv *redistest.Server) *e2eEnv {
	t.Helper()
	e := newE2E(t)
	e.addr, e.runnerAddr, e.client = srv.Addr, srv.Addr, srv.Client(t)
	return e
}

// keys names the keys of the runner's pool.
func (e *e2eEnv) keys() keyspace.Pool { return keyspace.New(e.prefix, poolName) }

// lockKey is an item's lock key.
func (e *e2eEnv) lockKey(item string) string { return e.keys().Lock(item) }

// config writes a runner config file running the recorder, with the
// given YAML appended (it may override nothing already set).
func (e *e2eEnv) config(name string, items []string, extra string, sleep time.Duration) string {
	e.t.Helper()
	redisSection := fmt.Sprintf("redis:\n  addr: %q\n", e.runnerAddr)
	if e.redisYAML != "" {
		redisSection = e.redisYAML
	}
	guard := ""
	if e.tokenGuard {
		guard = "token"
	}
	return writeFile(e.t, e.dir, name+".yaml", fmt.Sprintf(`%s
pool:
  prefix: %q
  items: %s
task:
  command: [%q]
  kill_grace: %v
  env:
    - %q
    - %q
    - %q
    - %q
    - %q
    - %q
log:
  level: debug
%s`, strings.TrimRight(redisSection, "\n"), e.prefix, yamlList(items), recorderBin, killGrace,
		"E2E_REDIS_ADDR="+e.addr, "E2E_LOCK_PREFIX="+e.keys().LockPrefix(), "E2E_LEDGER="+e.ledger, "E2E_SLEEP="+sleep.String(), "E2E_GUARD="+guard,
		"E2E_FAIL="+e.failItem, extra))
}

// configVia is config with the runner reaching Redis at addr (a fault
// proxy, a cluster node) instead of runnerAddr.
func (e *e2eEnv) configVia(addr, name string, items []string, extra string, sleep time.Duration) string {
	e.t.Helper()
	defer func(prev string) { e.runnerAddr = prev }(e.runnerAddr)
	e.runnerAddr = addr
	return e.config(name, items, extra, sleep)
}

// proxy starts a fault proxy to the test's Redis, closed when the test ends.
func (e *e2eEnv) proxy() *faultproxy.Proxy {
	e.t.Helper()
	px, err := faultproxy.New(e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(px.Close)
	return px
}

// writeFile writes body to dir/name (in a new temporary directory when
// dir is "") and returns the path.
func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func itemNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("item-%02d", i)
	}
	return out
}

func yamlList(items []string) string {
	q := make([]string, len(items))
	for i, it := range items {
		q[i] = fmt.Sprintf("%q", it)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// ---- the ledger ----

// events reads the whole ledger.
func (e *e2eEnv) events() []event { return e.readLedger(0) }

// readLedger reads the ledger from entry from on.
func (e *e2eEnv) readLedger(from int) []event {
	e.t.Helper()
	raw, err := e.client.LRange(context.Background(), e.ledger, int64(from), -1).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]event, 0, len(raw))
	for _, r := range raw {
		var ev event
		if err := json.Unmarshal([]byte(r), &ev); err != nil {
			e.t.Fatalf("ledger entry %q: %v", r, err)
		}
		out = append(out, ev)
	}
	return out
}

// ledgerTail reads a long ledger incrementally, for tests that poll it.
type ledgerTail struct {
	e   *e2eEnv
	evs []event
}

// read appends what was written since the last read and returns it all.
func (l *ledgerTail) read() []event {
	l.e.t.Helper()
	l.evs = append(l.evs, l.e.readLedger(len(l.evs))...)
	return l.evs
}

// span is one run of the recorder.
type span struct {
	token      int64
	owner      string
	pid        int
	begin, end time.Time
	ended, ok  bool
}

// checkLedger asserts the invariants over the ledger: no write was
// rejected by the fencing guard, tokens of an item increase, and no two
// runs of an item overlap in server time (a run lasts from its begin to
// its end or term, or is open). It returns the runs by item.
func (e *e2eEnv) checkLedger(evs []event) map[string][]span {
	e.t.Helper()
	runs := map[string][]span{}
	open := map[string]int{} // item -> index of the open span
	for _, ev := range evs {
		switch ev.Ev {
		case "begin":
			if i, ok := open[ev.Item]; ok {
				prev := runs[ev.Item][i]
				// The previous run never ended: its holder was killed.
				// That is fine only if it is the previous token.
				if prev.token >= ev.Token {
					e.t.Errorf("item %q: token %d began after token %d", ev.Item, ev.Token, prev.token)
				}
			}
			runs[ev.Item] = append(runs[ev.Item], span{token: ev.Token, owner: ev.Owner, pid: ev.Pid, begin: ev.at()})
			open[ev.Item] = len(runs[ev.Item]) - 1
		case "end", "term":
			rs := runs[ev.Item]
			for i := range rs {
				if rs[i].token == ev.Token {
					rs[i].end, rs[i].ended, rs[i].ok = ev.at(), true, ev.Ev == "end"
				}
			}
			if i, ok := open[ev.Item]; ok && rs[i].token == ev.Token {
				delete(open, ev.Item)
			}
		default:
			e.t.Errorf("fencing guard rejected a write: %+v", ev)
		}
	}
	for item, rs := range runs {
		for i := 1; i < len(rs); i++ {
			if rs[i].token <= rs[i-1].token {
				e.t.Errorf("item %q: tokens not increasing: %d then %d", item, rs[i-1].token, rs[i].token)
			}
			if rs[i-1].ended && rs[i].begin.Before(rs[i-1].end) {
				e.t.Errorf("item %q: token %d began at %v before token %d ended at %v", item, rs[i].token, rs[i].begin, rs[i-1].token, rs[i-1].end)
			}
		}
	}
	return runs
}

// completed counts, by item, the runs that ended normally.
func completed(runs map[string][]span) map[string]int {
	n := map[string]int{}
	for it, rs := range runs {
		for _, s := range rs {
			if s.ok {
				n[it]++
			}
		}
	}
	return n
}

// openRuns returns, by item, the runs that began and have not ended.
func openRuns(evs []event) map[string]event {
	open := map[string]event{}
	for _, ev := range evs {
		switch ev.Ev {
		case "begin":
			open[ev.Item] = ev
		case "end", "term":
			if o, ok := open[ev.Item]; ok && o.Token == ev.Token {
				delete(open, ev.Item)
			}
		}
	}
	return open
}

// openBy is openRuns of the runner with pid.
func openBy(evs []event, pid int) map[string]event {
	held := map[string]event{}
	for it, ev := range openRuns(evs) {
		if ownerPid(ev.Owner) == pid {
			held[it] = ev
		}
	}
	return held
}

// waitHeld waits until runner r has n runs open, and returns them by item.
func (e *e2eEnv) waitHeld(r *runnerProc, n int) map[string]event {
	e.t.Helper()
	var held map[string]event
	waitFor(e.t, fmt.Sprintf("%s running %d tasks", r.name, n), 20*time.Second, func() (bool, string) {
		held = openBy(e.events(), r.pid())
		return len(held) == n, fmt.Sprintf("running %v", sortedKeys(held))
	})
	return held
}

// count counts the events of kind ev for which keep (if given) holds.
func count(evs []event, ev string, keep func(event) bool) int {
	n := 0
	for _, x := range evs {
		if x.Ev == ev && (keep == nil || keep(x)) {
			n++
		}
	}
	return n
}

// untilEnds is a waitFor condition: at least n runs ended (of those keep
// holds for, if given).
func (e *e2eEnv) untilEnds(n int, keep func(event) bool) func() (bool, string) {
	return func() (bool, string) {
		got := count(e.events(), "end", keep)
		return got >= n, fmt.Sprintf("%d runs ended", got)
	}
}

// untilOpen is a waitFor condition: exactly n runs open.
func (e *e2eEnv) untilOpen(n int) func() (bool, string) {
	return func() (bool, string) {
		open := openRuns(e.events())
		return len(open) == n, fmt.Sprintf("%d runs open: %v", len(open), sortedKeys(open))
	}
}

// untilEvent is a waitFor condition: the ledger holds an event that match
// accepts; the first one is stored in *ev.
func (e *e2eEnv) untilEvent(ev *event, match func(event) bool) func() (bool, string) {
	return func() (bool, string) {
		for _, x := range e.events() {
			if match(x) {
				*ev = x
				return true, ""
			}
		}
		return false, "no such event in the ledger"
	}
}

// ownerPid is the pid in a lease owner "<host>:<pid>/w<n>".
func ownerPid(owner string) int {
	host, _, _ := strings.Cut(owner, "/")
	i := strings.LastIndexByte(host, ':')
	pid, _ := strconv.Atoi(host[i+1:])
	return pid
}

// ---- Redis ----

func (e *e2eEnv) serverTime() time.Time {
	e.t.Helper()
	return redistest.ServerTime(e.t, e.client)
}

// wantItemsFree asserts that no lock key of items exists, within a wait.
func (e *e2eEnv) wantItemsFree(items []string, within time.Duration) {
	e.t.Helper()
	keys := make([]string, len(items))
	for i, it := range items {
		keys[i] = e.lockKey(it)
	}
	waitFor(e.t, "items free", within, func() (bool, string) {
		n, err := e.client.Exists(context.Background(), keys...).Result()
		return err == nil && n == 0, fmt.Sprintf("%d lock keys (%v)", n, err)
	})
}

// waitGranted polls the locks of the items of held (item -> token) every
// 10ms until each holds a lease with a higher token, and returns the
// server time each was first seen: its grant, to within the poll. A run's
// begin comes later by the start of its recorder process, which takes
// seconds on a loaded machine.
func (e *e2eEnv) waitGranted(held map[string]int64, within time.Duration) map[string]time.Time {
	e.t.Helper()
	return e.waitLocks("granted again", held, within, func(token int64, ok bool) bool { return ok && token > 0 })
}

// waitFreed is waitGranted for the moment each lock stops holding the
// lease of held: it expired (the key is gone), or was taken over.
func (e *e2eEnv) waitFreed(held map[string]int64, within time.Duration) map[string]time.Time {
	e.t.Helper()
	return e.waitLocks("free again", held, within, func(int64, bool) bool { return true })
}

// waitLocks polls the lock of each item of held every 10ms until it holds
// no lease of held's token or lower and done(token, found) of what it
// holds (found false when the key is gone or holds no lease) holds, and
// returns the server time each was first seen so.
func (e *e2eEnv) waitLocks(what string, held map[string]int64, within time.Duration, done func(token int64, found bool) bool) map[string]time.Time {
	e.t.Helper()
	at := map[string]time.Time{}
	waitFor(e.t, fmt.Sprintf("items %v %s", sortedKeys(held), what), within, func() (bool, string) {
		for item, token := range held {
			if _, ok := at[item]; ok {
				continue
			}
			val, err := e.client.Get(context.Background(), e.lockKey(item)).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				continue
			}
			var n int64
			_, tok, found := strings.Cut(val, "#")
			if found {
				n, _ = strconv.ParseInt(tok, 10, 64)
			}
			if (!found || n > token) && done(n, found) {
				at[item] = e.serverTime()
			}
		}
		return len(at) == len(held), fmt.Sprintf("%s: %v", what, sortedKeys(at))
	})
	return at
}

// lease is an item's lease as read from Redis.
type lease struct {
	value    string // owner#token
	owner    string
	token    int64
	deadline time.Time // absolute expiry, server clock; zero if none
}

// readLeases reads the lease of each of items on c, with its absolute
// expiry, in one transaction; free items are left out.
func (e *e2eEnv) readLeases(c *redis.Client, items []string) (map[string]lease, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	gets := make([]*redis.StringCmd, len(items))
	exps := make([]*redis.Cmd, len(items))
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i, it := range items {
			gets[i] = p.Get(ctx, e.lockKey(it))
			exps[i] = p.Do(ctx, "PEXPIRETIME", e.lockKey(it))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := map[string]lease{}
	for i, it := range items {
		v, err := gets[i].Result()
		if err != nil {
			continue // redis.Nil: free
		}
		l := lease{value: v}
		owner, tok, _ := strings.Cut(v, "#")
		l.owner = owner
		l.token, _ = strconv.ParseInt(tok, 10, 64)
		if ms, _ := exps[i].Int64(); ms >= 0 {
			l.deadline = time.UnixMilli(ms)
		}
		out[it] = l
	}
	return out, nil
}

// leases is readLeases failing the test on error.
func (e *e2eEnv) leases(c *redis.Client, items []string) map[string]lease {
	e.t.Helper()
	ls, err := e.readLeases(c, items)
	if err != nil {
		e.t.Fatalf("reading the leases: %v", err)
	}
	return ls
}

// fence reads the pool's fencing counter on c.
func (e *e2eEnv) fence(c *redis.Client) int64 {
	e.t.Helper()
	f, err := c.Get(context.Background(), e.keys().Fence()).Int64()
	if err != nil {
		e.t.Fatalf("reading the fencing counter: %v", err)
	}
	return f
}

// pauseWrites pauses writes (scripts and expiry too) on c's server until
// unpause, at most 10s.
func pauseWrites(t *testing.T, c *redis.Client) {
	t.Helper()
	if err := c.Do(context.Background(), "CLIENT", "PAUSE", "10000", "WRITE").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
}

func unpause(t *testing.T, c *redis.Client) {
	t.Helper()
	if err := c.Do(context.Background(), "CLIENT", "UNPAUSE").Err(); err != nil {
		t.Fatalf("CLIENT UNPAUSE: %v", err)
	}
}

// callCtx is a context for one Redis call of the test.
func callCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// scanKeys lists the keys of c's server matching pattern.
func scanKeys(t *testing.T, c *redis.Client, pattern string) []string {
	t.Helper()
	var out []string
	var cursor uint64
	for {
		keys, next, err := c.Scan(callCtx(t), cursor, pattern, 1000).Result()
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

// aclUser creates the ACL user (reset, then on, with password and rules)
// on c's server, deleted when the test ends.
func aclUser(t *testing.T, c *redis.Client, user, password string, rules ...any) {
	t.Helper()
	args := append([]any{"ACL", "SETUSER", user, "reset", "on", ">" + password}, rules...)
	if err := c.Do(context.Background(), args...).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Do(context.Background(), "ACL", "DELUSER", user) })
}

// userName is an ACL user name unique to the test: name and its prefix.
func (e *e2eEnv) userName(name string) string {
	return name + "-" + strings.NewReplacer(":", "-", "|", "-").Replace(e.prefix)
}

// ---- small things ----

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// quantile is the q-quantile of ds (0 when empty).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
