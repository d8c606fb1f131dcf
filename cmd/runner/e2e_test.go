package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
)

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

func (e *e2eEnv) serverTime() time.Time {
	e.t.Helper()
	tm, err := e.client.Time(context.Background()).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return tm
}

// wantItemsFree asserts no lock key of items exists.
func (e *e2eEnv) wantItemsFree(items []string, within time.Duration) {
	e.t.Helper()
	keys := make([]string, len(items))
	for i, it := range items {
		keys[i] = e.lockKey(it)
	}
	waitFor(e.t, "items free", within, func() bool {
		n, err := e.client.Exists(context.Background(), keys...).Result()
		return err == nil && n == 0
	})
}

func TestE2ELoopThreeRunnersNoOverlap(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	items := itemNames(12)
	cfg := e.config("loop", items, fmt.Sprintf(`worker:
  concurrency: 2
  lease_ttl: 2s
  refresh_interval: 300ms
`), 100*time.Millisecond)
	var rs []*runnerProc
	for i := range 3 {
		rs = append(rs, startRunner(t, fmt.Sprintf("runner-%d", i), nil, "run", "-c", cfg))
	}
	waitFor(t, "every item run at least twice", 30*time.Second, func() bool {
		ended := map[string]int{}
		for _, ev := range e.events() {
			if ev.Ev == "end" {
				ended[ev.Item]++
			}
		}
		for _, it := range items {
			if ended[it] < 2 {
				return false
			}
		}
		return true
	})
	for _, r := range rs {
		r.signal(syscall.SIGTERM)
	}
	for _, r := range rs {
		if code := r.wait(10 * time.Second); code != 0 {
			t.Fatalf("%s exited %d after SIGTERM", r.name, code)
		}
	}
	runs := e.checkLedger(e.events())
	owners := map[int]bool{}
	for _, it := range items {
		for _, s := range runs[it] {
			owners[ownerPid(s.owner)] = true
		}
	}
	if len(owners) != 3 {
		t.Errorf("runs came from %d runners, want all 3", len(owners))
	}
	e.wantItemsFree(items, time.Second)
}

func TestE2EKilledRunnersItemsAreTakenOver(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	// Fewer items than workers, so the survivors have idle workers waiting
	// when the victim's leases expire: the bound is then the TTL, not the
	// queue of other work.
	items := itemNames(6)
	const ttl = 2 * time.Second
	extra := fmt.Sprintf(`worker:
  concurrency: %%d
  lease_ttl: %v
  refresh_interval: 300ms
`, ttl)
	// The victim's tasks take long, so they are surely mid-run when it dies.
	victim := startRunner(t, "victim", nil, "run", "-c", e.config("victim", items, fmt.Sprintf(extra, 2), 30*time.Second))
	var held map[string]event
	waitFor(t, "the victim running two tasks", 20*time.Second, func() bool {
		held = map[string]event{}
		for it, ev := range openRuns(e.events()) {
			if ownerPid(ev.Owner) == victim.pid() {
				held[it] = ev
			}
		}
		return len(held) == 2
	})
	// Tasks of a second keep the 2-CPU test machine from being saturated
	// by process starts, which would delay the takeover's own task start.
	cfg := e.config("others", items, fmt.Sprintf(extra, 4), time.Second)
	rs := []*runnerProc{startRunner(t, "runner-1", nil, "run", "-c", cfg), startRunner(t, "runner-2", nil, "run", "-c", cfg)}
	waitFor(t, "the others at work", 20*time.Second, func() bool {
		n := 0
		for _, ev := range e.events() {
			if ev.Ev == "end" {
				n++
			}
		}
		return n >= 8
	})
	killedAt := e.serverTime()
	victim.signal(syscall.SIGKILL)
	victim.wait(5 * time.Second)
	// Its tasks die with it.
	for it, ev := range held {
		waitFor(t, fmt.Sprintf("task of %s (pid %d) gone", it, ev.Pid), 3*time.Second, func() bool { return !pidAlive(ev.Pid) })
	}
	// Its items are granted to the others within the lease TTL + 1s, and
	// run (their recorders take a while to start on a loaded machine).
	probe := redistest.Sched
	tokens := map[string]int64{}
	for it, ev := range held {
		tokens[it] = ev.Token
	}
	granted := e.waitGranted(tokens, ttl+5*time.Second)
	for it, old := range held {
		took := granted[it].Sub(killedAt)
		var began time.Duration
		waitFor(t, "item "+it+" run again", ttl+15*time.Second, func() bool {
			for _, ev := range e.events() {
				if ev.Ev == "begin" && ev.Item == it && ev.Token > old.Token {
					began = ev.at().Sub(killedAt)
					return true
				}
			}
			return false
		})
		if took > ttl+takeoverMargin {
			t.Errorf("item %s granted again %v after the kill; want within lease_ttl + %v = %v (%v)", it, took, takeoverMargin, ttl+takeoverMargin, probe)
		}
		t.Logf("item %s granted again %v after its runner was killed, its run began after %v", it, took, began)
	}
	for _, r := range rs {
		r.signal(syscall.SIGTERM)
	}
	for _, r := range rs {
		if code := r.wait(10 * time.Second); code != 0 {
			t.Fatalf("%s exited %d", r.name, code)
		}
	}
	e.checkLedger(e.events())
}

func TestE2ESigtermDrainsAndFreesItems(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	items := itemNames(4)
	cfg := e.config("drain", items, fmt.Sprintf(`worker:
  concurrency: 4
  lease_ttl: 30s
  shutdown_grace: 10s
`), 700*time.Millisecond)
	r := startRunner(t, "runner", nil, "run", "-c", cfg)
	waitFor(t, "4 tasks running", 20*time.Second, func() bool { return len(openRuns(e.events())) == 4 })
	r.signal(syscall.SIGTERM)
	if code := r.wait(10 * time.Second); code != 0 {
		t.Fatalf("runner exited %d after SIGTERM", code)
	}
	// Free within 1s of the exit, though the lease TTL is 30s.
	e.wantItemsFree(items, time.Second)
	runs := e.checkLedger(e.events())
	for _, it := range items {
		for _, s := range runs[it] {
			if !s.ok {
				t.Errorf("item %s token %d did not finish: the drain cancelled it", it, s.token)
			}
		}
	}
}

func TestE2EBatchWithAKilledRunner(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	items := itemNames(24)
	extra := `mode: batch
batch:
  id: b1
  progress_interval: 500ms
worker:
  concurrency: 2
  lease_ttl: 2s
  refresh_interval: 300ms
`
	// The victim's tasks never finish before it is killed, so each of its
	// items must be completed by another runner, once.
	victim := startRunner(t, "victim", nil, "run", "-c", e.config("victim", items, extra, 30*time.Second))
	waitFor(t, "the victim mid-task", 20*time.Second, func() bool {
		n := 0
		for _, ev := range openRuns(e.events()) {
			if ownerPid(ev.Owner) == victim.pid() {
				n++
			}
		}
		return n == 2
	})
	cfg := e.config("batch", items, extra, 300*time.Millisecond)
	rs := []*runnerProc{startRunner(t, "runner-1", nil, "run", "-c", cfg), startRunner(t, "runner-2", nil, "run", "-c", cfg)}
	waitFor(t, "the batch under way", 20*time.Second, func() bool {
		n := 0
		for _, ev := range e.events() {
			if ev.Ev == "end" {
				n++
			}
		}
		return n >= 4
	})
	victim.signal(syscall.SIGKILL)
	victim.wait(5 * time.Second)
	rs = append(rs, startRunner(t, "replacement", nil, "run", "-c", cfg))
	for _, r := range rs {
		if code := r.wait(60 * time.Second); code != 0 {
			t.Fatalf("%s exited %d at the end of the batch", r.name, code)
		}
	}
	runs := e.checkLedger(e.events())
	for _, it := range items {
		done := 0
		for _, s := range runs[it] {
			if s.ok {
				done++
			}
		}
		if done != 1 {
			t.Errorf("item %s completed %d times, want exactly once (runs %+v)", it, done, runs[it])
		}
	}
	// pool status reports the finished batch.
	st := startRunner(t, "status", nil, "pool", "status", "--json", "-c", cfg)
	if code := st.wait(10 * time.Second); code != 0 {
		t.Fatalf("pool status exited %d", code)
	}
	var rep statusReport
	if err := json.Unmarshal([]byte(st.out.String()), &rep); err != nil {
		t.Fatalf("pool status --json: %v\n%s", err, st.out.String())
	}
	if rep.Batch == nil || rep.Batch.Done != 24 || rep.Batch.Failed != 0 || rep.Batch.Finished.IsZero() {
		t.Fatalf("pool status batch = %+v", rep.Batch)
	}
}

func TestE2ELostLeaseStopsTheTask(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	const refresh = 200 * time.Millisecond
	cfg := e.config("lost", []string{"only"}, fmt.Sprintf(`worker:
  concurrency: 1
  lease_ttl: 5s
  refresh_interval: %v
`, refresh), time.Minute)
	r := startRunner(t, "runner", nil, "run", "-c", cfg)
	waitFor(t, "task running", 20*time.Second, func() bool { return len(openRuns(e.events())) == 1 })
	// Someone steals the item: the lock now holds a stranger's value.
	removedAt := e.serverTime()
	if err := e.client.Set(context.Background(), e.lockKey("only"), "thief", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	var term event
	waitFor(t, "task terminated", 5*time.Second, func() bool {
		for _, ev := range e.events() {
			if ev.Ev == "term" {
				term = ev
				return true
			}
		}
		return false
	})
	// Within one refresh interval, plus signal delivery and the
	// recorder's own write.
	d := term.at().Sub(removedAt)
	if d > refresh+250*time.Millisecond {
		t.Fatalf("task stopped %v after its lease was stolen; refresh interval %v", d, refresh)
	}
	t.Logf("task stopped %v after its lease was stolen (refresh interval %v)", d, refresh)
	r.signal(syscall.SIGTERM)
	if code := r.wait(10 * time.Second); code != 0 {
		t.Fatalf("runner exited %d", code)
	}
	if v, _ := e.client.Get(context.Background(), e.lockKey("only")).Result(); v != "thief" {
		t.Fatalf("the runner touched the thief's lock: %q", v)
	}
	if !strings.Contains(r.out.String(), "lease lost") {
		t.Fatalf("runner did not log the lost lease:\n%s", r.out.String())
	}
}

func TestE2EEmbeddedDemo(t *testing.T) {
	t.Parallel()
	example, err := filepath.Abs("../../config/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// A PATH without redis-server proves nothing needs one.
	r := startRunner(t, "demo", []string{"PATH=/usr/bin:/bin", "REDIS_ADDR="}, "run", "-c", example)
	if code := r.wait(60 * time.Second); code != 0 {
		t.Fatalf("demo exited %d:\n%s", code, r.out.String())
	}
	out := r.out.String()
	for _, want := range []string{"embedded in-memory", "batch complete"} {
		if !strings.Contains(out, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
	cfg, err := loadConfig(example, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range cfg.Pool.Items {
		if !strings.Contains(out, "working on "+it) {
			t.Fatalf("demo never ran %s:\n%s", it, out)
		}
	}
}

func TestE2EInvalidConfigExitsTwoNamingTheField(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.yaml")
	if err := os.WriteFile(typo, []byte("worker:\n  concurency: 4\ntask:\n  command: [\"true\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--set", `task.command=["true"]`}
	for _, c := range []struct {
		field string
		args  []string
		env   []string
	}{
		{"worker.lease_ttl", append(base, "--set", "worker.lease_ttl=0s"), nil},
		{"worker.lease_ttl", append(base, "--set", "worker.lease_ttl=soon"), nil},
		{"worker.refresh_interval", append(base, "--set", "worker.lease_ttl=10s", "--set", "worker.refresh_interval=6s"), nil},
		{"worker.concurrency", append(base, "--concurrency", "0"), nil},
		{"task.command", []string{"--set", "task.command=[]"}, nil},
		{"mode", append(base, "--mode", "sometimes"), nil},
		{"log.level", append(base, "--log-level", "loud"), nil},
		{"log.format", append(base, "--set", "log.format=xml"), nil},
		{"admin.listen", append(base, "--admin-listen", "no-port"), nil},
		{"worker.max_attempts", append(base, "--set", "worker.max_attempts=0"), nil},
		{"batch.id", append(base, "--set", "batch.id="), nil},
		{"worker.concurency", []string{"-c", typo}, nil},
		{"RUNNER_WORKER_CONCURENCY", base, []string{"RUNNER_WORKER_CONCURENCY=4"}},
		{"worker.lease_ttl", base, []string{"RUNNER_WORKER_LEASE_TTL=-1s"}},
	} {
		t.Run(c.field, func(t *testing.T) {
			t.Parallel()
			r := startRunner(t, "runner", c.env, append([]string{"run"}, c.args...)...)
			if code := r.wait(20 * time.Second); code != 2 {
				t.Fatalf("exit %d, want 2; output:\n%s", code, r.out.String())
			}
			lines := r.out.lines()
			if len(lines) != 1 || !strings.Contains(lines[0], c.field) {
				t.Fatalf("want one line naming %s, got:\n%s", c.field, r.out.String())
			}
		})
	}
	// Usage errors exit 2 too.
	for _, args := range [][]string{{}, {"launch"}, {"pool"}, {"pool", "frobnicate"}, {"run", "--no-such-flag"}} {
		r := startRunner(t, "runner", nil, args...)
		if code := r.wait(20 * time.Second); code != 2 {
			t.Fatalf("runner %q exited %d, want 2:\n%s", args, code, r.out.String())
		}
	}
}

func TestE2EPoolCommands(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	cfg := e.config("pool", nil, "", time.Second)
	pool := func(args ...string) (int, string) {
		t.Helper()
		// Flags come before the items: "pool add -c FILE ITEM...".
		full := append([]string{"pool", args[0], "-c", cfg}, args[1:]...)
		r := startRunner(t, "pool", nil, full...)
		return r.wait(20 * time.Second), r.out.String()
	}
	if code, out := pool("add", "a", "b", "c", "$(touch pwned)"); code != 0 || !strings.Contains(out, "4 items added") {
		t.Fatalf("pool add: %d %s", code, out)
	}
	if code, out := pool("remove", "c"); code != 0 || !strings.Contains(out, "1 items removed") {
		t.Fatalf("pool remove: %d %s", code, out)
	}
	// A lease-shaped lock and a foreign lock show up as such.
	ctx := context.Background()
	e.client.Set(ctx, e.lockKey("a"), "host:1/w0#1234567", time.Minute)
	e.client.Set(ctx, e.lockKey("b"), "python-service", 0)
	code, out := pool("list", "--json")
	if code != 0 {
		t.Fatalf("pool list: %d %s", code, out)
	}
	var infos []itemInfo
	if err := json.Unmarshal([]byte(out), &infos); err != nil {
		t.Fatalf("pool list --json: %v\n%s", err, out)
	}
	slices.SortFunc(infos, func(x, y itemInfo) int { return strings.Compare(x.Item, y.Item) })
	want := []itemInfo{
		{Item: "$(touch pwned)", Status: "free"},
		{Item: "a", Status: "leased", Owner: "host:1/w0", Token: 1234567},
		{Item: "b", Status: "locked", Owner: "python-service", TTLMillis: -1},
	}
	if len(infos) != 3 {
		t.Fatalf("pool list = %+v", infos)
	}
	for i := range want {
		got := infos[i]
		if i == 1 && got.TTLMillis > 0 {
			got.TTLMillis = 0
		}
		if got != want[i] {
			t.Fatalf("pool list[%d] = %+v, want %+v", i, got, want[i])
		}
	}
	if code, out := pool("status", "--json"); code != 0 || !strings.Contains(out, `"locked": 2`) || !strings.Contains(out, `"free": 1`) {
		t.Fatalf("pool status: %d %s", code, out)
	}
	if code, out := pool("set", "x", "y"); code != 0 || !strings.Contains(out, "2 items set") {
		t.Fatalf("pool set: %d %s", code, out)
	}
	// Bad input: clear error, nothing lost.
	if code, out := pool("add", "ok", ""); code != 2 || !strings.Contains(out, "invalid key") {
		t.Fatalf("pool add with an empty item: %d %s", code, out)
	}
	if n, _ := e.client.SCard(ctx, e.prefix+"|lock-pool|pool").Result(); n != 2 {
		t.Fatalf("pool has %d members after a rejected add, want 2", n)
	}
	if code, out := pool("clear"); code != 0 || !strings.Contains(out, "cleared") {
		t.Fatalf("pool clear: %d %s", code, out)
	}
	if _, err := os.Stat("pwned"); err == nil {
		t.Fatal("an item name was executed")
	}
}
