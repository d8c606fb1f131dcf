package main

// Pause and chaos tests: real runner processes with their tasks frozen by
// SIGSTOP, and a soak of random kills, partitions and freezes.
//
// A pause is the one fault no lease can handle (see pkg/worker's package
// comment): a frozen task may write after its lease expired and someone
// else began. The fencing guard must reject such writes, so these tests do
// not call checkLedger blindly: they allow a rejected write, or a task
// still running after a newer token began, exactly for the tokens a paused
// runner held when it was frozen, and nothing else.

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/faultproxy"
	"github.com/lockpool/lockpool/internal/redistest"
)

var chaosDurationFlag = flag.Duration("chaos.duration", 0,
	"how long TestE2EChaosSoak injects faults (default 60s, or $CHAOS_DURATION)")

// chaosSoakDuration is -chaos.duration, else $CHAOS_DURATION, else 60s.
func chaosSoakDuration(t *testing.T) time.Duration {
	t.Helper()
	if *chaosDurationFlag > 0 {
		return *chaosDurationFlag
	}
	if s := os.Getenv("CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("CHAOS_DURATION=%q: want a positive Go duration such as 10m", s)
		}
		return d
	}
	return 60 * time.Second
}

// TestE2EPauseRunnerAndTasks freezes a runner and its tasks (SIGSTOP) for
// longer than the lease TTL while another runner takes its items over,
// then resumes them. A frozen task that resumes writes after its lease
// expired: the fencing guard must reject that write. The frozen runner,
// resumed, must find its leases lost and stop its tasks. The runner that
// took over must not be disturbed.
//
// The resume is in two steps so that both outcomes are seen every time:
// with everything resumed at once, whether a task first writes or is first
// signalled by its runner is a race (both are safe). Task A resumes alone:
// its sleep ended during the freeze, so it writes its end at once, through
// the guard. Then the runner resumes while task B stays frozen: the runner
// stops B's group (SIGTERM, SIGKILL after task.kill_grace, which kills even
// a stopped process), so B dies without writing.
func TestE2EPauseRunnerAndTasks(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	items := itemNames(2)
	const ttl = 2 * time.Second
	extra := fmt.Sprintf(`worker:
  concurrency: 2
  lease_ttl: %v
  refresh_interval: 300ms
`, ttl)
	// The frozen tasks' sleep ends during the freeze: before their leases
	// can expire, which is at least ttl after they were granted.
	const frozenSleep = 1500 * time.Millisecond
	const takerSleep = 2 * time.Second
	p := startRunner(t, "frozen", nil, "run", "-c", e.config("frozen", items, extra, frozenSleep))
	mine := e.waitHeld(p, 2)
	fz := freeze(t, p.pid())
	groups := fz.groups
	frozenAt := e.serverTime()
	t.Cleanup(func() {
		for _, g := range groups {
			_ = syscall.Kill(-g, syscall.SIGKILL)
		}
		fz.resume()
	})
	// Each frozen task's group, by item.
	group := map[string]int{}
	for it, ev := range mine {
		pr, ok := procStat(ev.Pid)
		if !ok || (pr.state != 'T' && !stopPending(ev.Pid)) || !slices.Contains(groups, pr.pgrp) {
			t.Fatalf("task of %s (pid %d) not frozen in one of the groups %v: %+v (it ended before the freeze?)", it, ev.Pid, groups, pr)
		}
		group[it] = pr.pgrp
	}
	a, b := items[0], items[1]

	q := startRunner(t, "taker", nil, "run", "-c", e.config("taker", items, extra, takerSleep))
	took := map[string]event{}
	waitFor(t, "the other runner taking both items over", ttl+10*time.Second, func() (bool, string) {
		for _, ev := range e.events() {
			if ev.Ev == "begin" && ownerPid(ev.Owner) == q.pid() && ev.Token > mine[ev.Item].Token {
				if _, ok := took[ev.Item]; !ok {
					took[ev.Item] = ev
				}
			}
		}
		return len(took) == 2, fmt.Sprintf("taken over: %v", sortedKeys(took))
	})
	for _, it := range items {
		t.Logf("item %s taken over %v after the freeze (lease_ttl %v)", it, took[it].at().Sub(frozenAt).Round(time.Millisecond), ttl)
	}
	// Make sure the frozen tasks' sleep is over (by their own clock, which
	// ran on during the freeze).
	for _, it := range items {
		if d := time.Until(mine[it].at().Add(frozenSleep + 200*time.Millisecond)); d > 0 {
			time.Sleep(d)
		}
	}

	// Task A resumes: its end is rejected by the fencing guard.
	_ = syscall.Kill(-group[a], syscall.SIGCONT)
	var rejected event
	waitFor(t, "task "+a+" writing after the freeze", 5*time.Second, e.untilEvent(&rejected, func(ev event) bool {
		return ev.Item == a && ev.Token == mine[a].Token && ev.Ev != "begin"
	}))
	if rejected.Ev != "rejected-end" {
		t.Fatalf("task %s token %d wrote %q after its lease expired and token %d began; want its end rejected by the fencing guard",
			a, mine[a].Token, rejected.Ev, took[a].Token)
	}

	// The runner resumes (with its exec supervisor), task B still frozen:
	// the runner finds B's lease lost and kills B.
	resumedAt := time.Now()
	fz.resume()
	waitFor(t, "task "+b+" killed by its resumed runner", killGrace+3*time.Second, untilGone(mine[b].Pid))
	t.Logf("task %s killed %v after its runner resumed (kill_grace %v)", b, time.Since(resumedAt).Round(time.Millisecond), killGrace)
	waitFor(t, "the resumed runner logging the lost lease of "+b, 5*time.Second, func() (bool, string) {
		return len(p.leaseLostLines(b, mine[b].Token)) > 0, "not logged"
	})
	// The task is its group's leader: its group is killed when it exits.
	if ok, _ := poll("", 3*time.Second, untilGroupsGone(groups)); !ok {
		t.Errorf("processes of the frozen runner's tasks still alive 3s after its task died: %+v", groupsAlive(groups))
	}

	// The runs of the runner that took over end normally.
	waitFor(t, "the taker's runs ending", takerSleep+5*time.Second, func() (bool, string) {
		n := count(e.events(), "end", func(ev event) bool { return ev.Token == took[ev.Item].Token })
		return n == 2, fmt.Sprintf("%d ended", n)
	})
	stopRunners(t, 10*time.Second, p, q)

	// The ledger: the frozen tokens wrote their begins and, after the
	// freeze, only the rejected end; nothing else was rejected, and with
	// that one write left out the ledger holds every invariant.
	evs := e.events()
	var rest []event
	for _, ev := range evs {
		frozen := ev.Token == mine[ev.Item].Token
		switch {
		case frozen && ev.Ev == "begin":
		case frozen && ev.Item == a && ev.Ev == "rejected-end":
			continue
		case frozen:
			t.Errorf("frozen token %d of %s wrote %q after the freeze: %+v", ev.Token, ev.Item, ev.Ev, ev)
		case ev.Token == took[ev.Item].Token && ev.Ev != "begin" && ev.Ev != "end":
			t.Errorf("the run that took %s over was disturbed: %+v", ev.Item, ev)
		}
		rest = append(rest, ev)
	}
	e.checkLedger(rest)
}

// chaosPause is one freeze of a runner in the soak.
type chaosPause struct {
	pid      int
	frozenAt time.Time // server time, once everything was stopped
	fence    int64     // the fencing counter then: its tokens are at most this
}

// covers reports whether ev is a write of a token the paused runner held
// (or was granted) before it was frozen, made after the freeze: the writes
// a pause may leave behind.
func (p chaosPause) covers(ev event) bool {
	return ownerPid(ev.Owner) == p.pid && ev.Token <= p.fence && !ev.at().Before(p.frozenAt)
}

// TestE2EChaosSoak runs 3 runners on 20 items in loop mode with short
// tasks and, for -chaos.duration (60s by default), injects a random fault
// every few hundred milliseconds: kill -9 a runner (a replacement starts at
// once), cut a runner off from Redis for 0.3s to 3.5s, or freeze a runner
// and its tasks as long, often longer than the lease TTL. Faults are
// injected one after another (a kill's takeover is measured before the
// next fault), so that each kill's bound is not blurred by a second fault
// hitting the runner taking over; and a kill waits until the other runners
// have a worker free for each of its items, so that its bound measures the
// lease's expiry and a wake-up, not a wait for a busy worker.
//
// Asserted, in the ledger's order (the order the server ran the writes):
//   - every accepted begin has a token above the item's previous one, and
//     every accepted end is the item's latest token: no stale write was
//     accepted, and accepted runs never overlap (checkLedger agrees);
//   - a write rejected by the fencing guard, or a task's term event after
//     a newer token of its item began (a task still running then), is
//     allowed only from a token a frozen runner held when it was frozen:
//     owner that runner, token at most the fencing counter read once it
//     was stopped, written after the freeze. Anything else fails;
//   - the tasks of a killed runner are gone (no process left in their
//     groups) before its items are run again, and none of them writes
//     more than 300ms after the kill;
//   - every item a killed runner held runs again (an accepted begin with
//     a newer token) within lease_ttl + 1s of the kill;
//   - every item runs again after the last fault;
//   - once the runners are stopped (exit 0 on SIGTERM), no process whose
//     environment names this test's ledger is alive: no recorder,
//     whichever runner started it, and none of the recorder pids the
//     ledger holds.
func TestE2EChaosSoak(t *testing.T) {
	parallelLong(t)
	soak := chaosSoakDuration(t)
	e := newE2E(t)
	items := itemNames(20)
	const ttl = 2 * time.Second
	const cooldown = 3 * time.Second
	// taskSleep is each run's length. A kill -9 of a runner stops its
	// tasks within tens of ms on an idle machine (its exec supervisor sees the socket to it close),
	// and up to a second or so on a loaded one: what is checked is that no
	// task of a killed runner writes after its process groups were seen
	// gone (a task that escaped them would write its end up to taskSleep
	// after the kill), and that they are gone within 3s.
	const taskSleep = 600 * time.Millisecond
	// The cooldown keeps workers idle most of the time (20 items, each run
	// about every 4s, 9 workers), so a dead runner's items are mostly taken
	// soon after they expire, and the 2 CPUs are not saturated by starting
	// race-built recorders (about 5 runs a second, 70ms of CPU each).
	// Each runner reaches Redis through a proxy of its own, so it can be
	// partitioned; the recorder and the test talk to Redis directly. The
	// safety margin (800ms) covers the scheduling delay of a loaded 2-CPU
	// machine: a partitioned runner must stop its tasks before their leases
	// can expire, or the ledger shows it.
	const conc = 3
	workerYAML := fmt.Sprintf(`worker:
  concurrency: %d
  lease_ttl: %v
  refresh_interval: 300ms
  safety_margin: 800ms
  cooldown: %v
  shutdown_grace: 2s
`, conc, ttl, cooldown)
	proxies := make([]*faultproxy.Proxy, 3)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	t.Logf("soak %v, seed %d", soak, seed)

	runners := make([]*runnerProc, 3)
	spawned := 0
	start := func(i int) {
		spawned++
		proxies[i] = e.proxy()
		cfg := e.configVia(proxies[i].Addr(), fmt.Sprintf("chaos-%d", spawned), items, workerYAML, taskSleep)
		runners[i] = startRunner(t, fmt.Sprintf("runner-%d", spawned), nil, "run", "-c", cfg)
	}
	for i := range runners {
		start(i)
	}
	led := &ledgerTail{e: e}
	waitFor(t, "the fleet at work", 30*time.Second, func() (bool, string) {
		n := count(led.read(), "end", nil)
		return n >= 20, fmt.Sprintf("%d runs ended", n)
	})

	ctx := context.Background()
	var pauses []chaosPause
	type chaosKill struct {
		pid  int
		at   time.Time // server time, just before the SIGKILL
		gone time.Time // server time, once its process groups were seen gone
	}
	var killed []chaosKill
	var freed, takeovers []time.Duration
	kills, longPauses := 0, 0
	// leases reads every item's lock value (owner#token), by item.
	keys := make([]string, len(items))
	for j, it := range items {
		keys[j] = e.lockKey(it)
	}
	leases := func() map[string]string {
		vals, err := e.client.MGet(ctx, keys...).Result()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for j, v := range vals {
			if s, ok := v.(string); ok {
				out[items[j]] = s
			}
		}
		return out
	}
	kill := func(i int) {
		v := runners[i]
		// Stopped first, so that it starts no task between the look at its
		// task groups and its death; its tasks run on.
		groups := stopRunner(t, v.pid())
		killAt := e.serverTime()
		v.signal(syscall.SIGKILL)
		v.wait(5 * time.Second)
		kills++
		start(i)
		// What it held: its leases stay in Redis until they expire.
		held := map[string]int64{}
		for it, l := range leases() {
			owner, tok, ok := strings.Cut(l, "#")
			if ok && ownerPid(owner) == v.pid() {
				n, _ := strconv.ParseInt(tok, 10, 64)
				held[it] = n
			}
		}
		// Its tasks die with it (its exec supervisor kills their groups on
		// the end of file of their socket, its parent-death signal or its
		// poll every second), before anyone can take its items.
		waitFor(t, fmt.Sprintf("the tasks of killed %s gone", v.name), 3*time.Second, untilGroupsGone(groups))
		goneAt := e.serverTime()
		killed = append(killed, chaosKill{pid: v.pid(), at: killAt, gone: goneAt})
		var took []string
		defer func() {
			t.Logf("kill %d: %s held %d items; its tasks gone %v after the kill; its items free again after %s",
				kills, v.name, len(held), goneAt.Sub(killAt).Round(time.Millisecond), strings.Join(took, ", "))
		}()
		// The promise is that a dead holder's items come back: each lock
		// stops holding the dead lease's value (it expired, or was taken
		// over) within lease_ttl of the kill, seen by polling every 10ms.
		// Then the item runs again, with a newer token, once some worker
		// is free for it: when that is depends on how busy the fleet is
		// (a loaded machine stretches 600ms tasks to seconds), so it has a
		// loose bound; how soon an idle waiter takes an expired item is
		// TestE2EKilledRunnersItemsAreTakenOver's bound.
		freedAt := e.waitFreed(held, ttl+5*time.Second)
		granted := e.waitGranted(held, ttl+15*time.Second)
		for _, it := range sortedKeys(held) {
			var next event
			waitFor(t, fmt.Sprintf("item %s of killed %s run again", it, v.name), ttl+15*time.Second, func() (bool, string) {
				for _, ev := range slices.Backward(led.read()) {
					if ev.Item == it && ev.Token > held[it] && (ev.Ev == "begin" || ev.Ev == "rejected-begin") {
						next = ev
					}
					if ev.at().Before(killAt) {
						break
					}
				}
				return next.Ev != "", "no begin with a newer token"
			})
			f, d := freedAt[it].Sub(killAt), granted[it].Sub(killAt)
			freed, takeovers = append(freed, f), append(takeovers, d)
			took = append(took, fmt.Sprintf("%v (granted %v, began %v)", f.Round(time.Millisecond), d.Round(time.Millisecond), next.at().Sub(killAt).Round(time.Millisecond)))
			switch {
			case next.Ev != "begin":
				t.Errorf("item %s of killed %s: the next run's begin was rejected: %+v", it, v.name, next)
			case f > ttl+takeoverMargin:
				t.Errorf("item %s of killed %s (token %d) free again %v after the kill; want within lease_ttl + %v = %v (seen by polling every 10ms; %v)",
					it, v.name, held[it], f, takeoverMargin, ttl+takeoverMargin, redistest.Sched)
			case !next.at().After(goneAt):
				t.Errorf("item %s of killed %s run again at %v, before its tasks were all gone (%v)", it, v.name, next.at(), goneAt)
			}
		}
	}
	pause := func(i int, d time.Duration) {
		v := runners[i]
		fz := freeze(t, v.pid())
		pauses = append(pauses, chaosPause{pid: v.pid(), frozenAt: e.serverTime(), fence: e.fence(e.client)})
		if d > ttl {
			longPauses++
		}
		time.Sleep(d)
		fz.thaw(rng.IntN(2) == 0)
	}

	// target picks a runner, one running tasks if any: a fault on an idle
	// runner tests little.
	target := func() int {
		var busy []int
		for i, r := range runners {
			if len(taskGroups(r.pid())) > 0 {
				busy = append(busy, i)
			}
		}
		if len(busy) == 0 {
			return rng.IntN(len(runners))
		}
		return busy[rng.IntN(len(busy))]
	}
	t0 := time.Now()
	partitions := 0
	partition := func(i int, d time.Duration) {
		// A cut runner's tasks must be stopped before their leases
		// expire; nothing in the ledger may show otherwise (no rejected
		// write and no overlap is explained by a partition).
		partitions++
		proxies[i].Cut()
		time.Sleep(d)
		proxies[i].Heal()
	}
	for time.Since(t0) < soak {
		time.Sleep(time.Duration(200+rng.IntN(400)) * time.Millisecond)
		i := target()
		switch rng.IntN(3) {
		case 0:
			kill(i)
			continue
		case 1:
			d := time.Duration(300+rng.IntN(900)) * time.Millisecond
			if rng.IntN(2) == 0 {
				d = time.Duration(2500+rng.IntN(1000)) * time.Millisecond // longer than the lease
			}
			partition(i, d)
			continue
		}
		d := time.Duration(300+rng.IntN(900)) * time.Millisecond // the lease usually survives
		if rng.IntN(2) == 0 {
			d = time.Duration(2500+rng.IntN(1000)) * time.Millisecond // it surely does not
		}
		pause(i, d)
	}
	lastFault := e.serverTime()

	// The fleet recovers: every item runs (begin and end accepted) after
	// the last fault.
	recovered := ttl + cooldown + 10*time.Second
	waitFor(t, "every item run after the last fault", recovered, func() (bool, string) {
		ran := map[string]bool{}
		began := map[string]int64{}
		for _, ev := range led.read() {
			if ev.at().Before(lastFault) {
				continue
			}
			switch ev.Ev {
			case "begin":
				began[ev.Item] = ev.Token
			case "end":
				if began[ev.Item] == ev.Token {
					ran[ev.Item] = true
				}
			}
		}
		return len(ran) == len(items), fmt.Sprintf("run: %v", sortedKeys(ran))
	})
	stopRunners(t, 15*time.Second, runners...)
	// No task process outlives the runners: not one recorder of this
	// ledger, whichever runner started it, killed ones included.
	if ok, why := poll("no task process left after every runner stopped", 3*time.Second, e.untilNoTasks()); !ok {
		t.Error(why)
	}

	// The ledger, in the order the server wrote it.
	evs := led.read()
	explained := func(ev event) bool {
		for _, p := range pauses {
			if p.covers(ev) {
				return true
			}
		}
		return false
	}
	last := map[string]int64{} // item -> token of its latest accepted begin
	pids := map[int]bool{}
	var rest []event
	runs, rejected, lateTerms := 0, 0, 0
	for _, ev := range evs {
		pids[ev.Pid] = true
		for _, k := range killed {
			// A task that survived its runner's kill would soon write
			// its end: none may write later than the kill takes to
			// reach it.
			if ownerPid(ev.Owner) == k.pid && ev.at().After(k.gone) {
				t.Errorf("item %s: task of token %d wrote %q %v after its runner was killed, %v after its process groups were seen gone",
					ev.Item, ev.Token, ev.Ev, ev.at().Sub(k.at), ev.at().Sub(k.gone))
			}
		}
		switch ev.Ev {
		case "begin":
			runs++
			if ev.Token <= last[ev.Item] {
				t.Errorf("item %s: begin of token %d accepted after token %d began", ev.Item, ev.Token, last[ev.Item])
			}
			last[ev.Item] = ev.Token
		case "end":
			if ev.Token != last[ev.Item] {
				t.Errorf("item %s: stale end of token %d accepted after token %d began", ev.Item, ev.Token, last[ev.Item])
			}
		case "term":
			if ev.Token != last[ev.Item] {
				// The task ran on after a newer token began.
				if !explained(ev) {
					t.Errorf("item %s: task of token %d (%s) still running after token %d began, and no freeze explains it: %+v", ev.Item, ev.Token, ev.Owner, last[ev.Item], ev)
				}
				lateTerms++
				continue
			}
		case "rejected-begin", "rejected-end":
			if !explained(ev) {
				t.Errorf("item %s: the fencing guard rejected a write no freeze explains: %+v", ev.Item, ev)
			}
			rejected++
			continue
		default:
			t.Errorf("unknown ledger event %+v", ev)
		}
		rest = append(rest, ev)
	}
	e.checkLedger(rest)
	// Every recorder that ever wrote is gone (a live pid of another
	// process is a reused pid).
	for pid := range pids {
		if pidAlive(pid) && ofLedger(pid, e.ledger) {
			t.Errorf("recorder pid %d still alive after every runner stopped", pid)
		}
	}

	quantiles := func(ds []time.Duration) string {
		if len(ds) == 0 {
			return "none"
		}
		slices.Sort(ds)
		return fmt.Sprintf("median %v, worst %v", ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
	}
	t.Logf("faults: %d kills, %d partitions, %d freezes (%d longer than lease_ttl %v); %d runners started; %d runs by %d recorder processes; "+
		"%d writes rejected and %d tasks stopped after a newer token began, all by frozen runners",
		kills, partitions, len(pauses), longPauses, ttl, spawned, runs, len(pids), rejected, lateTerms)
	t.Logf("a killed runner's %d items: free again %s (bound %v each); granted again %s",
		len(freed), quantiles(freed), ttl+takeoverMargin, quantiles(takeovers))
	if kills == 0 || len(pauses) == 0 || partitions == 0 {
		t.Errorf("the soak injected %d kills, %d freezes and %d partitions; want every kind (a longer -chaos.duration?)", kills, len(pauses), partitions)
	}
}
