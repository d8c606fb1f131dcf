package main

// The fleet-wide controls end to end through the built binary: each
// command is checked against Redis and against what two running runners
// do. "Granted after" is decided by fencing tokens, which the allocator
// issues in grant order: a run whose token is above the counter read right
// after a command was granted after it.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// startsAfter returns the runs begun with a token above fence (of item,
// or of any item when item is "").
func startsAfter(evs []event, fence int64, item string) []event {
	var out []event
	for _, ev := range evs {
		if ev.Ev == "begin" && ev.Token > fence && (item == "" || ev.Item == item) {
			out = append(out, ev)
		}
	}
	return out
}

// control runs a pool control command and fails the test unless it exits
// 0 with want in its output.
func control(t *testing.T, cfg, want string, args ...string) {
	t.Helper()
	res := runnerCmd(t, procOpts{}, append([]string{"pool"}, append(args, "-c", cfg)...)...)
	if res.code != 0 || !strings.Contains(res.stdout, want) {
		t.Fatalf("runner pool %s: exit %d, stdout %q (want %q), stderr %q", strings.Join(args, " "), res.code, res.stdout, want, res.stderr)
	}
}

func TestE2EPoolControls(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	items := itemNames(4)
	cfg := e.config("controls", items, `worker:
  concurrency: 2
  lease_ttl: 3s
  refresh_interval: 300ms
`, 50*time.Millisecond)
	rs := []*runnerProc{startRunner(t, "runner-1", nil, "run", "-c", cfg), startRunner(t, "runner-2", nil, "run", "-c", cfg)}
	waitFor(t, "the runners at work", 20*time.Second, e.untilEnds(8, nil))

	// Pause: no runner is granted an item until resume.
	control(t, cfg, "pool paused since", "pause")
	paused := e.fence(e.client)
	var st statusReport
	res := runnerCmd(t, procOpts{}, "pool", "status", "--json", "-c", cfg)
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil || st.PausedSince.IsZero() {
		t.Fatalf("pool status --json while paused: %v, paused_since %v:\n%s", err, st.PausedSince, res.stdout)
	}
	time.Sleep(time.Second)
	if got := startsAfter(e.events(), paused, ""); len(got) > 0 {
		t.Fatalf("%d runs granted while the pool was paused, first %+v", len(got), got[0])
	}
	control(t, cfg, "pool resumed", "resume")
	resumed := e.fence(e.client)
	waitFor(t, "runs after the resume", 10*time.Second, func() (bool, string) {
		n := len(startsAfter(e.events(), resumed, ""))
		return n >= 4, fmt.Sprintf("%d runs since the resume", n)
	})

	// Quarantine, then release early.
	control(t, cfg, "quarantined for 1h0m0s", "quarantine", "--for", "1h", items[0])
	quarantined := e.fence(e.client)
	if v := e.client.Get(context.Background(), e.lockKey(items[0])).Val(); v != allocator.QuarantineValue {
		t.Fatalf("after pool quarantine, %s's lock holds %q, want %q", items[0], v, allocator.QuarantineValue)
	}
	waitFor(t, "other items run during the quarantine", 10*time.Second, func() (bool, string) {
		n := len(startsAfter(e.events(), quarantined, ""))
		return n >= 6, fmt.Sprintf("%d runs since the quarantine", n)
	})
	if got := startsAfter(e.events(), quarantined, items[0]); len(got) > 0 {
		t.Fatalf("%s ran while quarantined: %+v", items[0], got[0])
	}
	control(t, cfg, "released", "release", items[0])
	released := e.fence(e.client)
	waitFor(t, items[0]+" runs again after release", 10*time.Second, func() (bool, string) {
		n := len(startsAfter(e.events(), released, items[0]))
		return n >= 1, fmt.Sprintf("%d runs of %s since the release", n, items[0])
	})
	// Release of an item not held back: reported, exit 1, nothing changed.
	if res := runnerCmd(t, procOpts{}, "pool", "release", "-c", cfg, "no-such-item"); res.code != 1 || !strings.Contains(res.stderr, "not quarantined") {
		t.Errorf("pool release of an item not held back: exit %d, stderr %q; want 1 and why", res.code, res.stderr)
	}
	stopRunners(t, 10*time.Second, rs...)
}

func TestE2EPoolCancelStopsTheTask(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	items := itemNames(1)
	// The task would run 30s; the refresh that would notice a changed
	// lock comes every 5s: stopping at once is the cancel message's doing.
	cfg := e.config("cancel", items, `worker:
  concurrency: 1
  lease_ttl: 20s
  refresh_interval: 5s
  shutdown_grace: 2s
`, 30*time.Second)
	r := startRunner(t, "runner", nil, "run", "-c", cfg)
	held := e.waitHeld(r, 1)
	run := held[items[0]]
	cancelled := time.Now()
	control(t, cfg, "cancelled", "cancel", items[0])
	waitFor(t, "the runner logs the cancelled lease", 3*time.Second, func() (bool, string) {
		return strings.Contains(r.out.String(), "cancelled"), ""
	})
	t.Logf("runner reported the cancel %v after the command started", time.Since(cancelled))
	// The item is held back until the cancelled lease would have expired.
	if v := e.client.Get(context.Background(), e.lockKey(items[0])).Val(); v != allocator.QuarantineValue {
		t.Errorf("after pool cancel, the lock holds %q, want %q", v, allocator.QuarantineValue)
	}
	if res := runnerCmd(t, procOpts{}, "pool", "cancel", "-c", cfg, items[0]); res.code != 1 || !strings.Contains(res.stderr, "not leased") {
		t.Errorf("a second pool cancel: exit %d, stderr %q; want 1 and why", res.code, res.stderr)
	}
	control(t, cfg, "released", "release", items[0])
	waitFor(t, "the item runs again", 10*time.Second, func() (bool, string) {
		n := len(startsAfter(e.events(), run.Token, items[0]))
		return n >= 1, fmt.Sprintf("%d new runs", n)
	})
	stopRunners(t, 10*time.Second, r)
}

// TestE2EPoolWatchAndFilters: pool list keeps the states and names asked
// for; pool status --watch redraws until interrupted, then exits 0.
func TestE2EPoolWatchAndFilters(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	cfg := e.config("watch", nil, "", time.Second)
	if res := runnerCmd(t, procOpts{}, "pool", "add", "-c", cfg, "shard-1", "shard-2", "shard-10", "other"); res.code != 0 {
		t.Fatalf("pool add: %d %s", res.code, res.out)
	}
	control(t, cfg, "quarantined", "quarantine", "shard-2", "other")
	res := runnerCmd(t, procOpts{}, "pool", "list", "--jsonl", "--state", "quarantine", "--match", "shard-*", "-c", cfg)
	var got []string
	for _, l := range lines(res.stdout) {
		var in itemInfo
		if err := json.Unmarshal([]byte(l), &in); err != nil {
			t.Fatalf("pool list --jsonl line %q: %v", l, err)
		}
		got = append(got, in.Item+"="+in.Status)
	}
	if res.code != 0 || len(got) != 1 || got[0] != "shard-2=quarantine" {
		t.Errorf("pool list --state quarantine --match 'shard-*': exit %d, items %q; want shard-2 alone", res.code, got)
	}
	if res := runnerCmd(t, procOpts{}, "pool", "list", "--state", "held", "-c", cfg); res.code != 2 {
		t.Errorf("pool list --state held: exit %d, want 2", res.code)
	}

	p := startProc(t, "pool status --watch", procOpts{}, "pool", "status", "--watch", "--interval", "200ms", "-c", cfg)
	waitFor(t, "three frames", 10*time.Second, func() (bool, string) {
		n := strings.Count(p.stdout.String(), "Ctrl-C to stop")
		return n >= 3, fmt.Sprintf("%d frames", n)
	})
	p.signal(syscall.SIGINT)
	if code := p.wait(5 * time.Second); code != 0 {
		t.Fatalf("pool status --watch after SIGINT: exit %d, want 0", code)
	}
	frames := strings.Split(p.stdout.String(), "Ctrl-C to stop")[1:]
	for i, f := range frames {
		if !strings.Contains(f, "quarantine") || !regexp.MustCompile(`(?m)^free +2$`).MatchString(f) {
			t.Errorf("frame %d lacks the counts:\n%s", i, f)
		}
	}
}

// statusJSON runs pool status --json with cfg and decodes it.
func statusJSON(t *testing.T, cfg string) statusReport {
	t.Helper()
	res := runnerCmd(t, procOpts{}, "pool", "status", "--json", "-c", cfg)
	var st statusReport
	if err := json.Unmarshal([]byte(res.stdout), &st); res.code != 0 || err != nil {
		t.Fatalf("pool status --json: exit %d, %v:\n%s", res.code, err, res.out)
	}
	return st
}

// TestE2EPoolStatusRunnersAndFailures: pool status lists the live runners
// from the registry, forgets a kill -9'd one within its expiry (three
// heartbeats), and names a batch's failed items with their last error.
func TestE2EPoolStatusRunnersAndFailures(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	const beat = 300 * time.Millisecond
	// lease_ttl 3s: the lease the killed runner holds blocks its item for
	// the batch below until it expires (30s by default).
	cfg := e.config("fleet", itemNames(4), fmt.Sprintf("worker:\n  concurrency: 1\n  heartbeat: %v\n  lease_ttl: 3s\n", beat), 100*time.Millisecond)
	rs := []*runnerProc{startRunner(t, "runner-1", nil, "run", "-c", cfg), startRunner(t, "runner-2", nil, "run", "-c", cfg)}
	waitFor(t, "two runners in the registry", 10*time.Second, func() (bool, string) {
		st := statusJSON(t, cfg)
		return len(st.Runners) == 2, fmt.Sprintf("%d runners", len(st.Runners))
	})
	rs[0].signal(syscall.SIGKILL)
	killed := time.Now()
	rs[0].wait(5 * time.Second)
	bound := 3*beat + time.Second + redistest.Slack()
	waitFor(t, "the killed runner gone from the registry", bound, func() (bool, string) {
		st := statusJSON(t, cfg)
		for _, r := range st.Runners {
			if r.PID == rs[0].pid() {
				return false, "still listed"
			}
		}
		return len(st.Runners) == 1, fmt.Sprintf("%d runners", len(st.Runners))
	})
	t.Logf("killed runner gone from the registry %v after kill -9 (heartbeat %v)", time.Since(killed).Round(time.Millisecond), beat)
	stopRunners(t, 10*time.Second, rs[1])

	// A batch whose item-01 fails: status names it with its error.
	bcfg := writeFile(t, t.TempDir(), "b.yaml", fmt.Sprintf(`redis:
  addr: %q
pool:
  prefix: %q
mode: batch
batch:
  id: failing
worker:
  max_attempts: 1
task:
  command: ["sh", "-c", "echo boom >&2; [ \"$RUNNER_ITEM\" != item-01 ]"]
`, e.runnerAddr, e.prefix))
	if res := runnerCmd(t, procOpts{}, "run", "-c", bcfg); res.code != 1 {
		t.Fatalf("a batch with a failing item: exit %d, want 1:\n%s", res.code, clip(res.out))
	}
	st := statusJSON(t, bcfg)
	if st.Batch == nil || st.Batch.Failed != 1 || len(st.Batch.FailedItems) != 1 || st.Batch.FailedItems[0].Item != "item-01" || st.Batch.FailedItems[0].Error == "" {
		t.Fatalf("pool status of a batch with item-01 failed: %+v", st.Batch)
	}
	res := runnerCmd(t, procOpts{}, "pool", "status", "-c", bcfg)
	if !strings.Contains(res.stdout, "FAILED ITEM") || !strings.Contains(res.stdout, "item-01") {
		t.Errorf("pool status text lacks the failed item:\n%s", res.stdout)
	}
	// pool list shows each item's last run, from the item history.
	res = runnerCmd(t, procOpts{}, "pool", "list", "--jsonl", "-c", bcfg)
	for _, l := range lines(res.stdout) {
		var in itemInfo
		if err := json.Unmarshal([]byte(l), &in); err != nil {
			t.Fatalf("pool list --jsonl line %q: %v", l, err)
		}
		want, status := worker.OutcomeSuccess, 0
		if in.Item == "item-01" {
			want, status = worker.OutcomeFailure, 1
		}
		if in.Last == nil || in.Last.Outcome != want || in.Last.ExitStatus != status && status != 0 {
			t.Errorf("pool list: %s's last run %+v; want %s (exit status %d)", in.Item, in.Last, want, status)
		}
	}
	// The failed run's stderr tail is kept with it (LastRuns, a page's
	// read, leaves tails out; LastRun has it).
	lp, err := lock.NewRedisLockPool(e.client, lock.Config{Prefix: e.prefix, Suffix: poolName})
	if err != nil {
		t.Fatal(err)
	}
	store, err := worker.NewRedisStore(lp)
	if err != nil {
		t.Fatal(err)
	}
	if h, found, err := store.LastRun(t.Context(), "item-01"); err != nil || !found || !strings.Contains(h.Stderr, "boom") {
		t.Errorf("LastRun(item-01) = %+v, %v, %v; want its stderr tail \"boom\"", h, found, err)
	}

	// retry-failed puts it back; a new run of the batch runs it (and it
	// fails again: exit 1 with one failed item).
	control(t, bcfg, "1 failed items of batch failing put back", "retry-failed")
	st = statusJSON(t, bcfg)
	if st.Batch == nil || st.Batch.Failed != 0 || st.Batch.Pending != 1 || !st.Batch.Finished.IsZero() {
		t.Fatalf("pool status after retry-failed: %+v; want 1 pending, none failed, running", st.Batch)
	}
	if res := runnerCmd(t, procOpts{}, "run", "-c", bcfg); res.code != 1 || !strings.Contains(res.out, "item=item-01") {
		t.Fatalf("the batch run again after retry-failed: exit %d, want 1 after running item-01:\n%s", res.code, clip(res.out))
	}
	if st = statusJSON(t, bcfg); st.Batch == nil || st.Batch.Failed != 1 || st.Batch.Done != 3 {
		t.Fatalf("pool status after the rerun: %+v", st.Batch)
	}
}

// TestE2EPoolMetrics: admin.pool_metrics exports the pool's state on
// /metrics, and follows a pause and a quarantine; admin.ui serves the
// dashboard there too.
func TestE2EPoolMetrics(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	cfg := e.config("metrics", itemNames(3), `worker:
  concurrency: 1
admin:
  listen: 127.0.0.1:0
  pool_metrics: true
  pool_metrics_interval: 1s
  ui: true
`, 50*time.Millisecond)
	r := startRunner(t, "runner", nil, "run", "-c", cfg)
	base := r.adminBase()
	control(t, cfg, "quarantined", "quarantine", "item-02")
	control(t, cfg, "pool paused", "pause")
	want := []*regexp.Regexp{
		regexp.MustCompile(`(?m)^lockpool_pool_items\{state="quarantine"\} 1$`),
		regexp.MustCompile(`(?m)^lockpool_pool_paused 1$`),
		regexp.MustCompile(`(?m)^lockpool_pool_runners_alive 1$`),
		regexp.MustCompile(`(?m)^lockpool_pool_items\{state="free"\} [0-9]`),
		regexp.MustCompile(`(?m)^lockpool_pool_sample_age_seconds [0-9]`),
		regexp.MustCompile(`(?m)^lockpool_pool_oldest_lease_seconds [0-9]`),
	}
	waitFor(t, "the pool's state in /metrics", 15*time.Second, func() (bool, string) {
		_, body := httpGet(t, base+"/metrics")
		for _, re := range want {
			if !re.MatchString(body) {
				return false, "no line matching " + re.String()
			}
		}
		return true, ""
	})
	if code, page := httpGet(t, base+"/"); code != 200 || !strings.Contains(page, `src="app.js"`) {
		t.Errorf("admin.ui: GET / on admin.listen: %d %.200s", code, page)
	}
	code, body := httpGet(t, base+"/api/item?name=item-02")
	var one itemInfo
	if code != 200 || json.Unmarshal([]byte(body), &one) != nil || one.Status != "quarantine" {
		t.Errorf("admin.ui: GET /api/item?name=item-02 on admin.listen: %d %s", code, body)
	}
	if code := post(t, base+"/api/actions", `{"action":"resume"}`, map[string]string{"Content-Type": "application/json"}); code != http.StatusForbidden {
		t.Errorf("admin.ui without a token: an action answered %d, want 403", code)
	}
	control(t, cfg, "pool resumed", "resume")
	waitFor(t, "the resume in /metrics", 15*time.Second, func() (bool, string) {
		_, body := httpGet(t, base+"/metrics")
		return regexp.MustCompile(`(?m)^lockpool_pool_paused 0$`).MatchString(body), "still paused"
	})
	stopRunners(t, 10*time.Second, r)
}
