package main

// Loop mode end to end: runners share a pool without two of them ever
// running an item at once, take over the items of a killed runner within
// the lease TTL, drain on SIGTERM, and stop a task whose lease was stolen.

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
)

func TestE2ELoopThreeRunnersNoOverlap(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	items := itemNames(12)
	cfg := e.config("loop", items, `worker:
  concurrency: 2
  lease_ttl: 2s
  refresh_interval: 300ms
`, 100*time.Millisecond)
	var rs []*runnerProc
	for i := range 3 {
		rs = append(rs, startRunner(t, fmt.Sprintf("runner-%d", i), nil, "run", "-c", cfg))
	}
	waitFor(t, "every item run at least twice", 30*time.Second, func() (bool, string) {
		ended := map[string]int{}
		for _, ev := range e.events() {
			if ev.Ev == "end" {
				ended[ev.Item]++
			}
		}
		for _, it := range items {
			if ended[it] < 2 {
				return false, fmt.Sprintf("runs ended by item: %v", ended)
			}
		}
		return true, ""
	})
	stopRunners(t, 10*time.Second, rs...)
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
	parallel(t)
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
	held := e.waitHeld(victim, 2)
	// Tasks of a second keep the 2-CPU test machine from being saturated
	// by process starts, which would delay the takeover's own task start.
	cfg := e.config("others", items, fmt.Sprintf(extra, 4), time.Second)
	rs := []*runnerProc{startRunner(t, "runner-1", nil, "run", "-c", cfg), startRunner(t, "runner-2", nil, "run", "-c", cfg)}
	waitFor(t, "the others at work", 20*time.Second, e.untilEnds(8, nil))
	killedAt := e.serverTime()
	victim.signal(syscall.SIGKILL)
	victim.wait(5 * time.Second)
	// Its tasks die with it.
	for it, ev := range held {
		waitFor(t, fmt.Sprintf("task of %s (pid %d) gone", it, ev.Pid), 3*time.Second, untilGone(ev.Pid))
	}
	// Its items are granted to the others within the lease TTL + 1s, and
	// run (their recorders take a while to start on a loaded machine).
	tokens := map[string]int64{}
	for it, ev := range held {
		tokens[it] = ev.Token
	}
	granted := e.waitGranted(tokens, ttl+5*time.Second)
	for it, old := range held {
		took := granted[it].Sub(killedAt)
		var next event
		waitFor(t, "item "+it+" run again", ttl+15*time.Second, e.untilEvent(&next, func(ev event) bool {
			return ev.Ev == "begin" && ev.Item == it && ev.Token > old.Token
		}))
		began := next.at().Sub(killedAt)
		if took > ttl+takeoverMargin {
			t.Errorf("item %s granted again %v after the kill; want within lease_ttl + %v = %v (%v)", it, took, takeoverMargin, ttl+takeoverMargin, redistest.Sched)
		}
		t.Logf("item %s granted again %v after its runner was killed, its run began after %v", it, took, began)
	}
	stopRunners(t, 10*time.Second, rs...)
	e.checkLedger(e.events())
}

func TestE2ESigtermDrainsAndFreesItems(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	items := itemNames(4)
	cfg := e.config("drain", items, `worker:
  concurrency: 4
  lease_ttl: 30s
  shutdown_grace: 10s
`, 700*time.Millisecond)
	r := startRunner(t, "runner", nil, "run", "-c", cfg)
	waitFor(t, "4 tasks running", 20*time.Second, e.untilOpen(4))
	stopRunners(t, 10*time.Second, r)
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

func TestE2ELostLeaseStopsTheTask(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	const refresh = 200 * time.Millisecond
	cfg := e.config("lost", []string{"only"}, fmt.Sprintf(`worker:
  concurrency: 1
  lease_ttl: 5s
  refresh_interval: %v
`, refresh), time.Minute)
	r := startRunner(t, "runner", nil, "run", "-c", cfg)
	waitFor(t, "task running", 20*time.Second, e.untilOpen(1))
	// Someone steals the item: the lock now holds a stranger's value.
	removedAt := e.serverTime()
	if err := e.client.Set(context.Background(), e.lockKey("only"), "thief", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	var term event
	waitFor(t, "task terminated", 5*time.Second, e.untilEvent(&term, func(ev event) bool { return ev.Ev == "term" }))
	// Within one refresh interval, plus signal delivery and the
	// recorder's own write.
	d := term.at().Sub(removedAt)
	if d > refresh+250*time.Millisecond {
		t.Fatalf("task stopped %v after its lease was stolen; refresh interval %v", d, refresh)
	}
	t.Logf("task stopped %v after its lease was stolen (refresh interval %v)", d, refresh)
	stopRunners(t, 10*time.Second, r)
	if v, _ := e.client.Get(context.Background(), e.lockKey("only")).Result(); v != "thief" {
		t.Fatalf("the runner touched the thief's lock: %q", v)
	}
	if !strings.Contains(r.out.String(), "lease lost") {
		t.Fatalf("runner did not log the lost lease:\n%s", r.out.String())
	}
}
