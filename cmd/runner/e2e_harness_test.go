package main

// The end-to-end harness: tests run the real runner binary as separate
// processes against a real redis-server, and the task each runner
// executes is this test binary again, acting as a recorder that writes
// every run into a ledger in Redis through a fencing guard.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
)

// runnerBin is the runner binary built once by TestMain (with -race), and
// recorderBin the task every test runs (internal/e2erecorder, without).
var runnerBin, recorderBin string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "runner-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		runnerBin = filepath.Join(dir, "runner")
		args := []string{"build", "-o", runnerBin}
		if raceEnabled {
			args = append(args, "-race")
		}
		build := exec.Command("go", append(args, ".")...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: building the runner binary:", err)
			return 1
		}
		// The recorder, every task of these tests, is built without -race:
		// a loaded 2-core machine starts thousands of them, and a race
		// build costs several times the CPU to start.
		recorderBin = filepath.Join(dir, "recorder")
		build = exec.Command("go", "build", "-o", recorderBin, "../../internal/e2erecorder")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: building the recorder:", err)
			return 1
		}
		redistest.Main(m) // exits
		return 0
	}()
	os.Exit(code)
}

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
	// unless a test routes runners through a fault proxy.
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
}

func newE2E(t *testing.T) *e2eEnv {
	t.Helper()
	e := &e2eEnv{t: t, addr: redistest.Addr(t), client: redistest.Client(t), prefix: redistest.Prefix(t), dir: t.TempDir()}
	e.runnerAddr = e.addr
	e.ledger = e.prefix + "|e2e:ledger"
	return e
}

// lockKey is an item's lock key for the runner's pool (pool.name default).
func (e *e2eEnv) lockKey(item string) string { return e.prefix + "|lock-pool:" + item }

// config writes a runner config file running the recorder, with the
// given YAML appended (it may override nothing already set).
func (e *e2eEnv) config(name string, items []string, extra string, sleep time.Duration) string {
	e.t.Helper()
	self := recorderBin
	redisSection := fmt.Sprintf("redis:\n  addr: %q\n", e.runnerAddr)
	if e.redisYAML != "" {
		redisSection = e.redisYAML
	}
	guard := ""
	if e.tokenGuard {
		guard = "token"
	}
	body := fmt.Sprintf(`%s
pool:
  prefix: %q
  items: %s
task:
  command: [%q]
  kill_grace: 300ms
  env:
    E2E_REDIS_ADDR: %q
    E2E_LOCK_PREFIX: %q
    E2E_LEDGER: %q
    E2E_SLEEP: %q
    E2E_GUARD: %q
log:
  level: debug
%s`, strings.TrimRight(redisSection, "\n"), e.prefix, yamlList(items), self, e.addr, e.prefix+"|lock-pool:", e.ledger, sleep.String(), guard, extra)
	path := filepath.Join(e.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// events reads the ledger.
func (e *e2eEnv) events() []event {
	e.t.Helper()
	raw, err := e.client.LRange(context.Background(), e.ledger, 0, -1).Result()
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

// span is one run of the recorder.
type span struct {
	token      int64
	owner      string
	pid        int
	begin, end time.Time
	ended, ok  bool
}

// runnerProc is one runner process.
type runnerProc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *lineBuffer
	done chan struct{}
	err  error
}

// startRunner starts the runner binary with args; its output is kept for
// failure messages.
func startRunner(t *testing.T, name string, env []string, args ...string) *runnerProc {
	t.Helper()
	cmd := exec.Command(runnerBin, args...)
	cmd.Env = append(cleanEnv(), env...)
	out := &lineBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &runnerProc{t: t, name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- output of %s (pid %d):\n%s", name, cmd.Process.Pid, out.String())
		}
	})
	return p
}

// cleanEnv is this process's environment without RUNNER_ variables, so a
// developer's settings cannot leak into the runners under test.
func cleanEnv() []string {
	// A -race binary sleeps 1s at exit by default; the runner, its exec
	// wrapper and the recorder all are -race builds here.
	out := []string{"GORACE=atexit_sleep_ms=0"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RUNNER_") && !strings.HasPrefix(kv, "E2E_") && !strings.HasPrefix(kv, "GORACE=") {
			out = append(out, kv)
		}
	}
	return out
}

func (p *runnerProc) pid() int { return p.cmd.Process.Pid }

func (p *runnerProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// wait waits for the runner to exit and returns its exit code.
func (p *runnerProc) wait(within time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		p.t.Fatalf("%s still running after %v; output:\n%s", p.name, within, p.out.String())
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	p.t.Fatalf("%s: %v", p.name, p.err)
	return -1
}

// lineBuffer collects output safely from two streams.
type lineBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lineBuffer) lines() []string {
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var out []string
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// waitFor polls cond every 10ms until it holds or within passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pidAlive reports whether pid exists and is not a zombie.
func pidAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	if runtime.GOOS != "linux" {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func ownerPid(owner string) int {
	// owner is "<host>:<pid>/w<n>"
	host, _, _ := strings.Cut(owner, "/")
	i := strings.LastIndexByte(host, ':')
	pid, _ := strconv.Atoi(host[i+1:])
	return pid
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// waitGranted polls the locks of the items of held (item -> token) every
// 10ms until each holds a lease with a higher token, and returns the
// server time each was first seen: its grant, to within the poll. A run's
// begin comes later by the start of its recorder process, which takes
// seconds on a loaded machine.
func (e *e2eEnv) waitGranted(held map[string]int64, within time.Duration) map[string]time.Time {
	e.t.Helper()
	at := map[string]time.Time{}
	waitFor(e.t, fmt.Sprintf("items %v granted again", sortedKeys(held)), within, func() bool {
		for item, token := range held {
			if _, ok := at[item]; ok {
				continue
			}
			val, err := e.client.Get(context.Background(), e.lockKey(item)).Result()
			if _, tok, ok := strings.Cut(val, "#"); err == nil && ok {
				if n, _ := strconv.ParseInt(tok, 10, 64); n > token {
					at[item] = e.serverTime()
				}
			}
		}
		return len(at) == len(held)
	})
	return at
}
