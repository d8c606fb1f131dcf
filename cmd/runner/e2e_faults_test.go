package main

// Fault tests: real runner processes and a real redis-server on loopback,
// with the network between a runner and Redis cut or stalled by a fault
// proxy, Redis paused, or Redis absent when the runner starts. Each test
// asserts the invariants (no overlapping runs in server time, increasing
// fencing tokens, no write rejected by the fencing guard) and that a
// runner cut off from Redis stops its tasks before their leases can expire.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/faultproxy"
	"github.com/lockpool/lockpool/internal/redistest"
)

// Lease settings of the fault tests. A task is stopped once no refresh has
// been confirmed for faultTTL - faultMargin (2s) since the last confirmed
// one was sent; task.kill_grace is 300ms (the harness's), below the margin.
// The margin is 1s because on a loaded 2-CPU CI machine, with every runner
// and task a -race build, a runner's timer was seen to fire 450ms late:
// the margin must cover the worst scheduling delay, as the package comment
// of pkg/worker says.
const (
	faultTTL     = 3 * time.Second
	faultRefresh = 300 * time.Millisecond
	faultMargin  = time.Second
	// faultTermSlack is what the SIGTERM may take after the guard fires to
	// be recorded: signal delivery through the wrapper, and the recorder's
	// TIME call.
	faultTermSlack = 300 * time.Millisecond
)

// faultEnv is the environment of the fault tests' runners: without the
// race runtime's one-second sleep at exit, which the wrapper and the
// recorder (both race-built here) would otherwise add to every task run.
var faultEnv = []string{"GORACE=atexit_sleep_ms=0"}

// faultWorkerYAML is the worker section of the fault tests.
func faultWorkerYAML(concurrency int, shutdownGrace time.Duration) string {
	return fmt.Sprintf(`worker:
  concurrency: %d
  lease_ttl: %v
  refresh_interval: %v
  safety_margin: %v
  shutdown_grace: %v
`, concurrency, faultTTL, faultRefresh, faultMargin, shutdownGrace)
}

// faultLease reads an item's lock value and its absolute expiry (server
// clock) in one transaction; ok is false when the key is absent.
func (e *e2eEnv) faultLease(item string) (value string, deadline time.Time, ok bool) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := e.lockKey(item)
	var get *redis.StringCmd
	var exp *redis.Cmd
	_, err := e.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, key)
		exp = p.Do(ctx, "PEXPIRETIME", key)
		return nil
	})
	if errors.Is(err, redis.Nil) {
		return "", time.Time{}, false
	}
	if err != nil {
		e.t.Fatalf("reading the lease of %s: %v", item, err)
	}
	ms, err := exp.Int64()
	if err != nil || ms < 0 {
		e.t.Fatalf("PEXPIRETIME of %s = %d, %v; want an expiring lease", item, ms, err)
	}
	return get.Val(), time.UnixMilli(ms), true
}

func TestE2EFaultPartitionCut(t *testing.T) {
	t.Parallel()
	testFaultPartition(t, false)
}

func TestE2EFaultPartitionStall(t *testing.T) {
	t.Parallel()
	testFaultPartition(t, true)
}

// testFaultPartition runs runner A through a fault proxy and runners B and
// C directly, cuts (or stalls) A's proxy for longer than the lease TTL
// while A's tasks run, and checks that A stopped them before their leases
// could expire, that B or C took the items over only after that, and that
// A works again once the network heals.
func testFaultPartition(t *testing.T, stall bool) {
	e := newE2E(t)
	items := itemNames(6)
	px, err := faultproxy.New(e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)
	// A reaches Redis only through the proxy; its tasks (the recorder)
	// write to Redis directly, so their SIGTERM is recorded during the
	// partition, with the server's time.
	e.runnerAddr = px.Addr()
	cfgA := e.config("a", items, faultWorkerYAML(2, time.Second), 30*time.Second)
	e.runnerAddr = e.addr
	cfgOthers := e.config("others", items, faultWorkerYAML(2, time.Second), time.Second) // slow enough not to saturate the CPU

	a := startRunner(t, "A", faultEnv, "run", "-c", cfgA)
	var held map[string]event // A's running tasks by item
	waitFor(t, "A running two tasks", 20*time.Second, func() bool {
		held = map[string]event{}
		for it, ev := range openRuns(e.events()) {
			if ownerPid(ev.Owner) == a.pid() {
				held[it] = ev
			}
		}
		return len(held) == 2
	})
	others := []*runnerProc{startRunner(t, "B", faultEnv, "run", "-c", cfgOthers), startRunner(t, "C", faultEnv, "run", "-c", cfgOthers)}
	waitFor(t, "B and C at work", 20*time.Second, func() bool {
		n := 0
		for _, ev := range e.events() {
			if ev.Ev == "end" && ownerPid(ev.Owner) != a.pid() {
				n++
			}
		}
		return n >= 4
	})

	// The deadline of each of A's leases is the expiry Redis holds for it:
	// the server time of its last successful refresh + TTL. Refreshes only
	// move it later, so the latest one seen while the key still holds A's
	// lease is the deadline.
	deadline := map[string]time.Time{}
	observe := func() {
		for it, h := range held {
			v, dl, ok := e.faultLease(it)
			if ok && v == h.Owner+"#"+strconv.FormatInt(h.Token, 10) && dl.After(deadline[it]) {
				deadline[it] = dl
			}
		}
	}
	observe()
	faultAt := e.serverTime()
	faultLocal := time.Now()
	fault := "cut"
	if stall {
		fault = "stall"
		px.Stall()
	} else {
		px.Cut()
	}
	type fate struct{ term, next event }
	fates := map[string]fate{}
	waitFor(t, "A's tasks stopped and their items taken over", faultTTL+5*time.Second, func() bool {
		observe()
		evs := e.events()
		settled := 0
		for it, h := range held {
			var f fate
			for _, ev := range evs {
				switch {
				case ev.Item != it:
				case ev.Ev == "term" && ev.Token == h.Token:
					f.term = ev
				case ev.Ev == "begin" && ev.Token > h.Token && f.next.Token == 0:
					f.next = ev
				}
			}
			fates[it] = f
			if f.term.Token != 0 && f.next.Token != 0 {
				settled++
			}
		}
		return settled == len(held)
	})
	for it, h := range held {
		f, dl := fates[it], deadline[it]
		if dl.IsZero() {
			t.Fatalf("never saw A's lease on %s (token %d) in Redis", it, h.Token)
		}
		term, next := f.term.at(), f.next.at()
		if !term.Before(dl) {
			t.Errorf("%s: A's task on %s (token %d) got SIGTERM at %v, not before its lease could expire at %v",
				fault, it, h.Token, term.Format(time.StampMicro), dl.Format(time.StampMilli))
		}
		if bound := faultAt.Add(faultTTL - faultMargin + faultTermSlack); term.After(bound) {
			t.Errorf("%s: A's task on %s got SIGTERM %v after the fault; want within lease_ttl - safety_margin + %v = %v",
				fault, it, term.Sub(faultAt), faultTermSlack, bound.Sub(faultAt))
		}
		if !next.After(term) {
			t.Errorf("%s: item %s: token %d began at %v, before A's task (token %d) got SIGTERM at %v",
				fault, it, f.next.Token, next, h.Token, term)
		}
		if next.Before(dl) {
			t.Errorf("%s: item %s granted to token %d at %v, before A's lease expired at %v", fault, it, f.next.Token, next, dl)
		}
		if ownerPid(f.next.Owner) == a.pid() {
			t.Errorf("%s: item %s was taken over by A itself during the partition", fault, it)
		}
		t.Logf("%s: item %s: SIGTERM %v after the fault, %v before the lease's deadline (deadline %v after the fault); taken over by token %d %v after the deadline",
			fault, it, term.Sub(faultAt).Round(time.Millisecond), dl.Sub(term).Round(time.Millisecond),
			dl.Sub(faultAt).Round(time.Millisecond), f.next.Token, next.Sub(dl).Round(time.Millisecond))
	}

	// Heal well past the TTL, and A carries on.
	time.Sleep(time.Until(faultLocal.Add(faultTTL + time.Second)))
	healAt := e.serverTime()
	px.Heal()
	var back event
	waitFor(t, "A running tasks again after the heal", 15*time.Second, func() bool {
		for _, ev := range e.events() {
			if ev.Ev == "begin" && ownerPid(ev.Owner) == a.pid() && ev.at().After(healAt) {
				back = ev
				return true
			}
		}
		return false
	})
	t.Logf("%s: A began %s (token %d) %v after the heal", fault, back.Item, back.Token, back.at().Sub(healAt).Round(time.Millisecond))

	for _, r := range append([]*runnerProc{a}, others...) {
		r.signal(syscall.SIGTERM)
	}
	for _, r := range append([]*runnerProc{a}, others...) {
		if code := r.wait(15 * time.Second); code != 0 {
			t.Fatalf("%s exited %d after SIGTERM", r.name, code)
		}
	}
	runs := e.checkLedger(e.events())
	for it, h := range held {
		for _, s := range runs[it] {
			if s.token == h.Token && (s.ok || !s.ended) {
				t.Errorf("item %s: A's partitioned run (token %d) ended ok=%v ended=%v; want it terminated", it, h.Token, s.ok, s.ended)
			}
		}
	}
	if !strings.Contains(a.out.String(), "lease lost") {
		t.Errorf("A did not log its lost leases")
	}
}

func TestE2EFaultSlowRedisKeepsLeases(t *testing.T) {
	t.Parallel()
	// A server of its own: CLIENT PAUSE stops every client of the server.
	srv := redistest.StartServer(t)
	e := newE2E(t)
	e.addr, e.runnerAddr, e.client = srv.Addr, srv.Addr, srv.Client(t)
	probe := srv.Client(t)
	const pause = 800 * time.Millisecond // > refresh interval, < TTL - margin - refresh interval
	// Tasks outlive the TTL: a run that ends ok lived on refreshes.
	const task = 3 * time.Second
	items := itemNames(4)
	cfg := e.config("slow", items, faultWorkerYAML(4, 10*time.Second)+"admin:\n  listen: 127.0.0.1:0\n", task)
	r := startRunner(t, "runner", faultEnv, "run", "-c", cfg)
	base := faultAdminBase(t, r)
	waitFor(t, "four tasks running", 20*time.Second, func() bool { return len(openRuns(e.events())) == 4 })

	type window struct{ from, to time.Time }
	var pauses []window
	for range 3 {
		// Pause while a run that began within the last 500ms is under
		// way: it spans the pause, so its lease must be refreshed across.
		waitFor(t, "a run just begun", 10*time.Second, func() bool {
			now := e.serverTime()
			for _, o := range openRuns(e.events()) {
				if now.Sub(o.at()) < 500*time.Millisecond {
					return true
				}
			}
			return false
		})
		from := e.serverTime()
		if err := e.client.Do(context.Background(), "CLIENT", "PAUSE", pause.Milliseconds(), "ALL").Err(); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		if err := probe.Ping(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(began); took < pause/2 {
			t.Fatalf("a PING during CLIENT PAUSE %v answered after %v: the pause had no effect", pause, took)
		}
		pauses = append(pauses, window{from, from.Add(pause)})
	}
	// Every run under way during the pauses finishes.
	last := pauses[len(pauses)-1].to
	waitFor(t, "the runs of the pauses finished", 2*task+5*time.Second, func() bool {
		evs := e.events()
		for _, o := range openRuns(evs) {
			if o.at().Before(last) {
				return false
			}
		}
		return true
	})
	_, metrics := faultGet(t, base+"/metrics")
	r.signal(syscall.SIGTERM)
	if code := r.wait(20 * time.Second); code != 0 {
		t.Fatalf("runner exited %d after SIGTERM", code)
	}

	evs := e.events()
	runs := e.checkLedger(evs)
	for _, ev := range evs {
		if ev.Ev == "term" {
			t.Errorf("a task was stopped: %+v", ev)
		}
	}
	for i, p := range pauses {
		spanned := 0
		for _, rs := range runs {
			for _, s := range rs {
				if s.ok && s.begin.Before(p.from) && s.end.After(p.to) {
					spanned++
				}
			}
		}
		if spanned == 0 {
			t.Errorf("pause %d: no run spanned it, so it tested nothing", i)
		}
		t.Logf("pause %d (%v): %d runs of %v (TTL %v) spanned it and finished with their leases", i, pause, spanned, task, faultTTL)
	}
	for it, rs := range runs {
		for _, s := range rs {
			if !s.ok {
				t.Errorf("item %s token %d did not finish ok (ended=%v)", it, s.token, s.ended)
			}
		}
	}
	if strings.Contains(r.out.String(), "lease lost") {
		t.Errorf("the runner logged a lost lease during pauses shorter than the TTL")
	}
	for _, series := range []string{`lockpool_leases_lost_total`, `lockpool_task_runs_total{outcome="lease_lost"}`, `lockpool_task_runs_total{outcome="cancelled"}`} {
		v, ok := faultMetric(metrics, series)
		if !ok {
			t.Errorf("/metrics lacks %s", series)
		} else if v != 0 {
			t.Errorf("%s = %v, want 0", series, v)
		}
	}
	refreshErrs, _ := faultMetric(metrics, `lockpool_refreshes_total{result="error"}`)
	refreshOK, _ := faultMetric(metrics, `lockpool_refreshes_total{result="ok"}`)
	t.Logf("refreshes: %v ok, %v failed", refreshOK, refreshErrs)
}

func TestE2EFaultRedisDownAtStart(t *testing.T) {
	t.Parallel()
	port := faultFreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	e := newE2E(t)
	e.addr, e.runnerAddr = addr, addr
	e.client = redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = e.client.Close() })
	cfg := e.config("down", itemNames(3), faultWorkerYAML(2, time.Second)+"admin:\n  listen: 127.0.0.1:0\n", 100*time.Millisecond)
	r := startRunner(t, "runner", faultEnv, "run", "-c", cfg)
	base := faultAdminBase(t, r)

	retryRE := regexp.MustCompile(`redis not reachable, retrying: .*\battempt=(\d+) in=(\S+) `)
	retries := func() [][]string {
		var out [][]string
		for _, l := range r.out.lines() {
			if m := retryRE.FindStringSubmatch(l); m != nil {
				out = append(out, m)
			}
		}
		return out
	}
	waitFor(t, "five retries logged", 15*time.Second, func() bool { return len(retries()) >= 5 })
	if code, body := faultGet(t, base+"/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz while redis is down = %d %q, want 503", code, body)
	}
	faultRedisServer(t, port)
	upAt := time.Now()
	waitFor(t, "three runs once redis is up", 20*time.Second, func() bool {
		n := 0
		for _, ev := range e.events() {
			if ev.Ev == "end" {
				n++
			}
		}
		return n >= 3
	})
	t.Logf("three runs finished %v after redis-server started", time.Since(upAt).Round(time.Millisecond))
	waitFor(t, "/healthz 200", 5*time.Second, func() bool { code, _ := faultGet(t, base+"/healthz"); return code == http.StatusOK })
	r.signal(syscall.SIGTERM)
	if code := r.wait(10 * time.Second); code != 0 {
		t.Fatalf("runner exited %d after SIGTERM", code)
	}
	e.checkLedger(e.events())

	// One plain log line per attempt, numbered from 1, with the backoff
	// doubling from 100ms; nothing else (no stack, no continuation lines)
	// until redis answers.
	lines := r.out.lines()
	stampRE := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\S* \[[A-Z]+\] `)
	answered := -1
	for i, l := range lines {
		if strings.Contains(l, "redis answers") {
			answered = i
			break
		}
		if !stampRE.MatchString(l) {
			t.Errorf("log line %d before redis answered is not a log record of its own: %q", i+1, l)
		}
		if strings.Contains(l, "goroutine ") || strings.Contains(l, "panic") {
			t.Errorf("log line %d looks like a stack trace: %q", i+1, l)
		}
		if (strings.Contains(l, "[WARN]") || strings.Contains(l, "[ERROR]")) && !retryRE.MatchString(l) {
			t.Errorf("log line %d is a warning besides the one per attempt: %q", i+1, l)
		}
	}
	if answered < 0 {
		t.Fatalf("the runner never logged that redis answers")
	}
	rs := retries()
	delay := 100 * time.Millisecond
	for i, m := range rs {
		if n, _ := strconv.Atoi(m[1]); n != i+1 {
			t.Fatalf("retry line %d says attempt=%s; want one line per attempt, numbered from 1", i+1, m[1])
		}
		if d, err := time.ParseDuration(m[2]); err != nil || d != delay {
			t.Errorf("attempt %d: backoff in=%s, want %v", i+1, m[2], delay)
		}
		delay = min(2*delay, 5*time.Second)
	}
	if want := fmt.Sprintf("attempts=%d", len(rs)+1); !strings.Contains(lines[answered], want) {
		t.Errorf("after %d failed attempts the runner logged %q; want %s", len(rs), lines[answered], want)
	}
	t.Logf("%d retries logged before redis came up, e.g. %q", len(rs), rs[0][0])
}

// faultAdminBase waits for the runner's admin endpoint address in its log.
func faultAdminBase(t *testing.T, r *runnerProc) string {
	t.Helper()
	re := regexp.MustCompile(`admin endpoint listening: addr=(\S+)`)
	var base string
	waitFor(t, "admin endpoint address logged", 20*time.Second, func() bool {
		if m := re.FindStringSubmatch(r.out.String()); m != nil {
			base = "http://" + m[1]
		}
		return base != ""
	})
	return base
}

// faultGet GETs url with a bounded wait.
func faultGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// faultMetric finds the value of one series (name with its labels, as
// exposed) in Prometheus text.
func faultMetric(text, series string) (float64, bool) {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// faultFreePort returns a loopback port that was free a moment ago.
func faultFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// faultRedisServer starts redis-server on port (redistest picks its own
// ports) and stops it when the test ends.
func faultRedisServer(t *testing.T, port int) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not on PATH: %v (%s)", err, redistest.HowTo)
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning")
	out := &lineBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	c := redis.NewClient(&redis.Options{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), MaxRetries: -1})
	defer c.Close()
	waitFor(t, "redis-server on port "+strconv.Itoa(port)+" answering", 10*time.Second, func() bool {
		select {
		case <-done:
			t.Fatalf("redis-server on port %d exited:\n%s", port, out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err() == nil
	})
}
