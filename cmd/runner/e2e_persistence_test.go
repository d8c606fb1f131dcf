package main

// Restart-from-files tests: the pool's Redis crashes (kill -9) and comes
// back from files that miss its last seconds, as after a restart from an
// RDB snapshot, or an OS crash with AOF appendfsync everysec. The dataset
// then goes back to an earlier point T: leases granted after T are gone or
// hold an older holder's value, leases that ended after T are back for
// what is left of their TTL, and the fencing counter is back at its value
// at T. The allocator must notice the discontinuity (a new replication id)
// and (pkg/allocator's package comment):
//   - grant nothing until one longest lease TTL after it noticed, so that
//     every lease granted before has expired or was confirmed again;
//   - lift the fencing counter, so that no token repeats or goes back;
//   - let the leases that survived in the dataset keep refreshing, and
//     report the others lost (reason discontinuity), so that their holders
//     stop their tasks;
//   - say so in the runner's log ("redis dataset discontinuity").
//
// Design: the pool lives on a dedicated server that the test crashes; the
// ledger lives on the shared server, which is never faulted, so it loses
// nothing and its clock (TIME) is the one clock of every overlap check.
// The recorder's guard checks tokens only (e.tokenGuard): a begin is
// accepted only with a token above every token seen for the item, so a
// token issued twice, or one that went back, is a rejected write.
//
// Both points, T and the crash, are taken under CLIENT PAUSE WRITE on the
// pool's server (it also blocks scripts, and expiry), so what the test
// reads there (the fencing counter, every lease with its absolute expiry)
// is exactly the state the dataset goes back to, or the state at the
// crash.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
)

// The runners' task lengths, one per runner: at least the rollback window
// (T to the crash, at most persistFault.maxGap), so that every lease
// granted after T is still held at the crash; different, so that the
// runners' grants spread over time.
var persistSleeps = []time.Duration{4 * time.Second, 4250 * time.Millisecond, 4500 * time.Millisecond}

const (
	// persistItems: fewer than the workers (3 runners × 3), so that a
	// released item is taken at once by a waiting worker, often of another
	// runner, and every free item is taken as soon as the quiet period
	// ends.
	persistItems       = 8
	persistConcurrency = 3
	// persistMinGap is the least rollback window: the time from T to the
	// crash.
	persistMinGap = 1500 * time.Millisecond
	// persistSurvivorPTTL: a lease found in the restored dataset with at
	// least this much TTL left must survive: its holder refreshes every
	// faultRefresh, and this leaves room for reconnecting and a loaded
	// machine.
	persistSurvivorPTTL = 1200 * time.Millisecond
	// persistDetect bounds how long after the restart some runner notices
	// the discontinuity: its sync step runs every 250ms and its refreshes
	// every faultRefresh, but it must reconnect first, and a loaded 2-CPU
	// machine delays timers by several hundred ms.
	persistDetect = 2 * time.Second
	// persistStart bounds the start of a task once its item is granted:
	// the recorder, a -race build, starts (through the exec supervisor)
	// and writes its begin. About 150ms on an idle machine; up to
	// 10s was seen on this 2-CPU machine at a load average of 20-27
	// (other test runs and builds), the figure this bound must cover.
	persistStart = 15 * time.Second
)

// persistFault is how the dataset goes back to T: how T is marked while
// writes are paused, and what happens to the files after the kill -9.
type persistFault struct {
	args []string
	// maxGap bounds the rollback window.
	maxGap time.Duration
	// mark makes the files hold the dataset as it is now (writes are
	// paused): a BGSAVE, or the AOF's size noted.
	mark func(t *testing.T, srv *redistest.Server, pc *redis.Client) (note string)
	// lose runs after the kill -9, before the restart.
	lose func(t *testing.T, srv *redistest.Server) (note string)
}

// TestE2ERestartFromSnapshot crashes the pool's Redis (kill -9) 1.5-4s
// after a BGSAVE, with --save "" (no other snapshot): it comes back from
// the snapshot, which misses the grants and refreshes made since, and
// whose fencing counter is behind.
func TestE2ERestartFromSnapshot(t *testing.T) {
	parallel(t)
	testRestartFromFiles(t, persistFault{
		args: []string{"--save", "", "--appendonly", "no"},
		// A snapshot may be minutes old; but at most the shortest task
		// (persistSleeps), and with leases left in it to survive.
		maxGap: 4 * time.Second,
		mark: func(t *testing.T, srv *redistest.Server, pc *redis.Client) string {
			t.Helper()
			ctx := context.Background()
			// BGSAVE forks at once: the snapshot is the dataset now.
			n, err := pc.DBSize(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			if err := pc.BgSave(ctx).Err(); err != nil {
				t.Fatalf("BGSAVE: %v", err)
			}
			return fmt.Sprintf("BGSAVE of %d keys", n)
		},
		lose: func(t *testing.T, srv *redistest.Server) string {
			t.Helper()
			fi, err := os.Stat(filepath.Join(srv.Dir(), "dump.rdb"))
			if err != nil {
				t.Fatalf("no snapshot to restart from: %v", err)
			}
			return fmt.Sprintf("snapshot %d bytes", fi.Size())
		},
	})
}

// TestE2ERestartFromAOFEverysecCrash simulates an OS crash under AOF with
// appendfsync everysec. kill -9 of redis-server alone loses nothing (its
// writes reached the kernel); an OS crash loses what was written after the
// last fsync. So at T (writes paused, Redis's AOF buffer empty: a command
// boundary) the test notes the size of the AOF's incr file; after the
// kill -9 it cuts the file back to that size, which is what survives an
// OS crash whose last fsync covered the file up to T, and restarts.
func TestE2ERestartFromAOFEverysecCrash(t *testing.T) {
	parallel(t)
	var incr string
	var size int64
	testRestartFromFiles(t, persistFault{
		args: []string{"--save", "", "--appendonly", "yes", "--appendfsync", "everysec"},
		// An OS crash under everysec loses about the last second, up to
		// two when an fsync is slow: the window stays near that.
		maxGap: 3 * time.Second,
		mark: func(t *testing.T, srv *redistest.Server, pc *redis.Client) string {
			t.Helper()
			ctx := context.Background()
			// Everything executed before the pause is written to the file
			// once the AOF buffer is empty (a slow fsync may postpone a
			// write under everysec).
			waitFor(t, "the AOF buffer flushed after pausing writes", time.Second, func() (bool, string) {
				info, err := pc.Info(ctx, "persistence").Result()
				return err == nil && strings.Contains(info, "aof_buffer_length:0\r") &&
					strings.Contains(info, "aof_rewrite_in_progress:0\r") && strings.Contains(info, "aof_last_write_status:ok\r"), fmt.Sprintf("%v\n%s", err, info)
			})
			incr = persistIncrFile(t, srv.Dir())
			// The size must be stable: nothing is written while paused. It
			// is so once it stayed the same for 30ms.
			var prev int64 = -1
			var since time.Time
			waitFor(t, "the AOF's size stable while writes are paused", time.Second, func() (bool, string) {
				fi, err := os.Stat(incr)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Size() != prev {
					prev, since = fi.Size(), time.Now()
				}
				return time.Since(since) >= 30*time.Millisecond, fmt.Sprintf("%d bytes", prev)
			})
			size = prev
			return fmt.Sprintf("%s at %d bytes", filepath.Base(incr), size)
		},
		lose: func(t *testing.T, srv *redistest.Server) string {
			t.Helper()
			if now := persistIncrFile(t, srv.Dir()); now != incr {
				t.Fatalf("the AOF's incr file changed from %s to %s (a rewrite?): the cut would not be at T", incr, now)
			}
			fi, err := os.Stat(incr)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() <= size {
				t.Fatalf("the AOF's incr file is %d bytes at the crash, %d at T: nothing to lose", fi.Size(), size)
			}
			// The cut is at a command boundary: the file up to T ends a
			// command, and what follows starts one (RESP: "*<argc>").
			b, err := os.ReadFile(incr)
			if err != nil {
				t.Fatal(err)
			}
			if size < 2 || string(b[size-2:size]) != "\r\n" || b[size] != '*' {
				t.Fatalf("the AOF's size at T, %d, is not at a command boundary: %q|%q", size, b[max(0, size-40):size], b[size:min(int64(len(b)), size+40)])
			}
			if err := os.Truncate(incr, size); err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf("AOF %s cut from %d to %d bytes (%d bytes written since T lost)", filepath.Base(incr), fi.Size(), size, fi.Size()-size)
		},
	})
}

// persistIncrFile returns the path of the last incr file named by the
// multi-part AOF's manifest in dir.
func persistIncrFile(t *testing.T, dir string) string {
	t.Helper()
	aofDir := filepath.Join(dir, "appendonlydir")
	ents, err := os.ReadDir(aofDir)
	if err != nil {
		t.Fatalf("no AOF directory: %v", err)
	}
	var manifest string
	for _, ent := range ents {
		if strings.HasSuffix(ent.Name(), ".manifest") {
			manifest = filepath.Join(aofDir, ent.Name())
		}
	}
	if manifest == "" {
		t.Fatalf("no AOF manifest in %s", aofDir)
	}
	b, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	// Lines: "file <name> seq <n> type <b|h|i>".
	var incr string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 6 && f[0] == "file" && f[4] == "type" && f[5] == "i" {
			incr = f[1]
		}
	}
	if incr == "" {
		t.Fatalf("no incr file in the AOF manifest:\n%s", b)
	}
	return filepath.Join(aofDir, incr)
}

// persistKeys are the pool's keys that never expire and exist as soon as
// the runners work: its members, availability index, fencing counter and
// epoch record.
func persistKeys(e *e2eEnv) []string {
	ks := e.keys()
	return []string{ks.Members(), ks.Index(), ks.Fence(), ks.Epoch()}
}

// persistExist counts which of keys exist.
func persistExist(t *testing.T, c *redis.Client, keys []string) int64 {
	t.Helper()
	n, err := c.Exists(context.Background(), keys...).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// persistGrant is the first lease of an item the watcher saw with a token
// above the counter at the crash: a grant after the restart.
type persistGrant struct {
	token int64
	owner string
	// at is the lease's deadline minus lease_ttl when first seen: the
	// grant, or a later refresh (the watcher polls every 20ms, refreshes
	// come every 300ms), never earlier than the grant.
	at time.Time
	// after is when the poll before began, which did not see it: the
	// grant came later.
	after time.Time
}

// persistWatch polls the pool's leases from the restart on and notes the
// first grant of each item after it. Server and test share one host, hence
// one clock.
type persistWatch struct {
	mu     sync.Mutex
	grants map[string]persistGrant
	polls  int
	close  func()
}

func startPersistWatch(t *testing.T, c *redis.Client, e *e2eEnv, items []string, fence int64, ttl time.Duration) *persistWatch {
	w := &persistWatch{grants: map[string]persistGrant{}}
	prev := time.Now()
	w.close = startPolling(t, 20*time.Millisecond, func() {
		start := time.Now()
		ls, err := e.readLeases(c, items)
		if err != nil {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.polls++
		for it, l := range ls {
			if _, ok := w.grants[it]; !ok && l.token > fence {
				w.grants[it] = persistGrant{token: l.token, owner: l.owner, at: l.deadline.Add(-ttl), after: prev}
			}
		}
		prev = start
	})
	return w
}

func (w *persistWatch) snapshot() (map[string]persistGrant, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]persistGrant, len(w.grants))
	for k, v := range w.grants {
		out[k] = v
	}
	return out, w.polls
}

// testRestartFromFiles runs 3 runners in loop mode on a pool whose Redis
// is crashed and restarted from files that go back to an earlier point T,
// and checks what the product promises after such a discontinuity.
func testRestartFromFiles(t *testing.T, f persistFault) {
	srv := redistest.StartServer(t, f.args...)
	pc := srv.Client(t)
	e := newE2E(t) // the ledger: on the shared server, never faulted
	e.runnerAddr = srv.Addr
	e.tokenGuard = true
	probe := redistest.Sched // for failure messages
	ctx := context.Background()
	items := itemNames(persistItems)
	const ttl, margin = faultTTL, faultMargin
	maxSleep := slices.Max(persistSleeps)

	// The runners, started a little apart so that their runs do not all
	// end together.
	var rs []*runnerProc
	sleepOf := map[int]time.Duration{} // runner pid -> its task length
	for i, sl := range persistSleeps {
		cfg := e.config(fmt.Sprintf("persist-%d", i+1), items, faultWorkerYAML(persistConcurrency, 500*time.Millisecond), sl)
		r := startRunner(t, fmt.Sprintf("runner-%d", i+1), nil, "run", "-c", cfg)
		rs = append(rs, r)
		sleepOf[r.pid()] = sl
		time.Sleep(300 * time.Millisecond)
	}
	runnerOf := func(owner string) *runnerProc {
		for _, r := range rs {
			if r.pid() == ownerPid(owner) {
				return r
			}
		}
		return nil
	}
	// Runs flow: items were granted, ran, and were granted again.
	waitFor(t, "the runners at work (4 runs ended)", 30*time.Second, e.untilEnds(4, nil))

	// T is taken just before some run is due to end, so that its item is
	// released and granted again within the rollback window.
	if ok, _ := poll("", 6*time.Second, func() (bool, string) {
		now := e.serverTime()
		for _, ev := range openRuns(e.events()) {
			due := ev.at().Add(sleepOf[ownerPid(ev.Owner)])
			if d := due.Sub(now); d > 200*time.Millisecond && d < 700*time.Millisecond {
				return true, ""
			}
		}
		return false, ""
	}); !ok {
		t.Logf("no run due to end soon; taking T anyway")
	}
	pauseWrites(t, pc)
	markAt := e.serverTime()
	fenceT := e.fence(pc)
	atT := e.leases(pc, items)
	if n := persistExist(t, pc, persistKeys(e)); n != int64(len(persistKeys(e))) {
		t.Fatalf("test setup: only %d of the pool's keys %v exist at T", n, persistKeys(e))
	}
	markNote := f.mark(t, srv, pc)
	unpause(t, pc)
	// A snapshot is complete once the BGSAVE child is done (an AOF mark
	// has nothing in progress).
	waitFor(t, "the snapshot written", 10*time.Second, func() (bool, string) {
		info, err := pc.Info(ctx, "persistence").Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(info, "rdb_last_bgsave_status:err") {
			t.Fatalf("BGSAVE failed:\n%s", info)
		}
		return strings.Contains(info, "rdb_bgsave_in_progress:0\r") && strings.Contains(info, "rdb_last_bgsave_status:ok\r"), info
	})

	// runningSinceT counts the leases granted after T, and those of them
	// whose task has begun and not ended.
	runningSinceT := func(leases map[string]lease, open map[string]event) (granted, running int) {
		for it, l := range leases {
			if l.token > fenceT {
				granted++
				if open[it].Token == l.token {
					running++
				}
			}
		}
		return granted, running
	}
	// The rollback window: grants and refreshes the files will not hold.
	// It ends once persistMinGap has passed and some item was granted
	// after T (at maxGap if none was). It is kept short so that leases
	// refreshed just before T are still in the restored dataset with
	// some TTL left: those must survive. Leases lost with their task
	// running are those that expired in it, and those granted after T
	// whose task has begun (task starts are slow on a loaded machine).
	poll("", f.maxGap, func() (bool, string) {
		granted, _ := runningSinceT(e.leases(pc, items), nil)
		return granted > 0 && e.serverTime().Sub(markAt) >= persistMinGap, ""
	})

	// The crash, with writes paused: what is read is the state it ends.
	pauseWrites(t, pc)
	fenceCrash := e.fence(pc)
	atCrash := e.leases(pc, items)
	openAtCrash := openRuns(e.events())
	granted, running := runningSinceT(atCrash, openAtCrash)
	stoppedAt := e.serverTime()
	srv.Kill()
	loseNote := f.lose(t, srv)
	srv.Restart()
	restartedAt := e.serverTime() // the test saw redis back: PING, then this
	restored := e.leases(pc, items)
	watch := startPersistWatch(t, srv.Client(t), e, items, fenceCrash, ttl)
	// The dataset came back from the files: the pool's keys without a
	// TTL, there at T, are there.
	if n := persistExist(t, pc, persistKeys(e)); n != int64(len(persistKeys(e))) {
		t.Fatalf("test setup: only %d of the pool's keys %v exist after the restart: the dataset did not come back from the files", n, persistKeys(e))
	}
	t.Logf("fencing counter %d at T, %d at the crash: %d tokens issued since T are lost with the files", fenceT, fenceCrash, fenceCrash-fenceT)
	if granted == 0 {
		t.Errorf("test setup: no lease granted after T was held at the crash (rollback window %v): the loss of a lease is not exercised", stoppedAt.Sub(markAt).Round(time.Millisecond))
	}

	// The restarted dataset must be the one at T: no lease granted after T
	// is in it, every lease in it was there at T (a lease granted after
	// the restart, with a token above the counter at the crash, before the
	// quiet period could end, is the product's fault).
	for _, it := range sortedKeys(restored) {
		switch l := restored[it]; {
		case l.token > fenceCrash:
			t.Errorf("item %s granted at once after the restart (lease %s): no quiet period", it, l.value)
		case l.token > fenceT || atT[it].value != l.value:
			t.Fatalf("test setup: the restarted dataset holds lease %s on %s, which was not there at T (T: %+v): the files did not go back to T", l.value, it, atT[it])
		}
	}

	// (d) Every runner says so. The first script run after the restart
	// noticed it ("noticed", server time): redis was back by then, which
	// on a loaded machine can be well before the test saw it.
	var quietUntil, noticedAt time.Time
	backAt := restartedAt
	var noticed []string
	for _, r := range rs {
		var line string
		if ok, why := poll(r.name+" logging a \"redis dataset discontinuity\" warning after the restart", persistDetect+5*time.Second, func() (bool, string) {
			line = r.out.first("redis dataset discontinuity")
			return line != "", "not logged"
		}); !ok {
			t.Error(why)
			continue
		}
		if q := logTimeField(line, "quiet_until"); q.After(quietUntil) {
			quietUntil = q
		}
		if n := logTimeField(line, "noticed"); !n.IsZero() {
			if noticedAt.IsZero() || n.Before(noticedAt) {
				noticedAt = n
			}
			if n.Before(backAt) {
				backAt = n
			}
		}
		at, _ := logTime(line)
		noticed = append(noticed, fmt.Sprintf("%s at %s", r.name, at.Format("15:04:05.000")))
	}
	t.Logf("T: %s; rollback window %v (T to the crash): %d leases granted in it held at the crash, %d of them with their task running; %s; redis down for %v (back at %s, seen by the test %v later)",
		markNote, stoppedAt.Sub(markAt).Round(time.Millisecond), granted, running, loseNote, backAt.Sub(stoppedAt).Round(time.Millisecond),
		backAt.Format("15:04:05.000"), restartedAt.Sub(backAt).Round(time.Millisecond))
	if quietUntil.IsZero() {
		t.Errorf("no runner's discontinuity warning names the quiet period's end (quiet_until)")
	} else {
		t.Logf("discontinuity noticed at %s, quiet period until %v after redis was back (lease_ttl %v); warnings logged: %s",
			backAt.Format("15:04:05.000"), quietUntil.Sub(backAt).Round(time.Millisecond), ttl, strings.Join(noticed, ", "))
	}

	// The runs held at the crash: their lease survived in the restored
	// dataset, or it did not.
	survived, lost := map[string]lease{}, map[string]lease{}
	for it, l := range atCrash {
		if r, ok := restored[it]; ok && r.value == l.value {
			survived[it] = r
		} else {
			lost[it] = l
		}
	}
	var surv, gone []string
	for _, it := range sortedKeys(survived) {
		surv = append(surv, fmt.Sprintf("%s (%v left)", it, survived[it].deadline.Sub(restartedAt).Round(time.Millisecond)))
	}
	for _, it := range sortedKeys(lost) {
		why := "expired in it"
		if lost[it].token > fenceT {
			why = "granted after T"
		}
		if r, ok := restored[it]; ok {
			why += ", the key holds " + r.value
		}
		gone = append(gone, fmt.Sprintf("%s (%s)", it, why))
	}
	t.Logf("held at the crash: %d leases; %d missing from the restored dataset: %s; %d in it: %s",
		len(atCrash), len(lost), strings.Join(gone, ", "), len(survived), strings.Join(surv, ", "))

	// (c) The holders of lost leases stop their tasks at their next
	// refresh, at the latest when their guard gives up: ttl - margin after
	// their last confirmed refresh, which was sent before the crash. A
	// task that ended on its own first needs no stopping. The runner logs
	// "lease lost" once the task's process has exited, which on a loaded
	// machine (a race-built task still starting up) can take seconds more:
	// the wait allows for that, and what is asserted is that it happened
	// before the item was granted again (below).
	guardBound := ttl - margin + killGrace + 5*time.Second
	stoppedBy := map[string]time.Time{} // item -> when its lost lease's task was stopped
	for _, it := range sortedKeys(lost) {
		l := lost[it]
		r := runnerOf(l.owner)
		if r == nil {
			t.Errorf("item %s: lease owner %q is none of the runners", it, l.owner)
			continue
		}
		tok := "token=" + strconv.FormatInt(l.token, 10)
		var line string
		var began, out event
		outcome := func() {
			for _, ev := range e.events() {
				if ev.Item == it && ev.Token == l.token {
					switch ev.Ev {
					case "begin":
						began = ev
					case "end", "term":
						out = ev
					}
				}
			}
		}
		if ok, _ := poll("", time.Until(stoppedAt.Add(guardBound)), func() (bool, string) {
			line = r.out.first("lease lost", "item="+it+" ", tok)
			outcome()
			return line != "" || out.Ev == "end", ""
		}); !ok {
			t.Errorf("item %s token %d: its lease is missing from the restored dataset, and %s logged no \"lease lost\" within %v of the crash (nor did its task end); %s", it, l.token, r.name, guardBound, probe)
			continue
		}
		if line == "" {
			t.Logf("item %s token %d (%s): lease lost; its task ended on its own %v after the crash (redis back after %v), before its holder noticed",
				it, l.token, r.name, out.at().Sub(stoppedAt).Round(time.Millisecond), backAt.Sub(stoppedAt).Round(time.Millisecond))
			continue
		}
		at, _ := logTime(line)
		// The reason: the dataset changed; or, only if the holder heard
		// nothing from Redis until its guard could fire, no confirmation.
		guardFired := strings.Contains(line, "no refresh was confirmed in time")
		reason := "discontinuity"
		switch {
		case strings.Contains(line, "dataset changed") || strings.Contains(line, "discontinuity"):
		case guardFired && at.Sub(stoppedAt) >= ttl-margin-faultRefresh-200*time.Millisecond:
			reason = "unconfirmed: its guard gave up before a refresh reached the restarted redis"
		default:
			t.Errorf("item %s token %d: the lease-lost line does not give the discontinuity as the reason: %s", it, l.token, line)
		}
		stoppedBy[it] = at
		// Its task, if it began, is stopped (or ended on its own). A
		// recorder too slow to record its SIGTERM within kill_grace is
		// killed: then it is gone.
		poll("", 5*time.Second, func() (bool, string) { outcome(); return began.Ev == "" || out.Ev != "", "" })
		what := ""
		switch {
		case began.Ev == "":
			what = "its task had not begun"
		case out.Ev == "" && pidAlive(began.Pid) && ofLedger(began.Pid, e.ledger):
			t.Errorf("item %s token %d: lease lost, but its task (pid %d) neither ended nor was stopped within 5s; %s", it, l.token, began.Pid, probe)
		case out.Ev == "":
			what = "its task was killed before it could record its SIGTERM"
		case out.Ev == "term":
			what = fmt.Sprintf("its task stopped %v after redis was back", out.at().Sub(backAt).Round(time.Millisecond))
		default:
			what = fmt.Sprintf("its task ended on its own %v after redis was back", out.at().Sub(backAt).Round(time.Millisecond))
		}
		t.Logf("item %s token %d (%s): \"lease lost\" logged %v after the crash, %v after redis was back (reason %s); %s",
			it, l.token, r.name, at.Sub(stoppedAt).Round(time.Millisecond), at.Sub(backAt).Round(time.Millisecond), reason, what)
	}

	// Work resumes: every item is granted again, and runs. Nothing is
	// granted before the quiet period ends, one lease_ttl after the
	// discontinuity was noticed (within persistDetect of the restart);
	// the workers waiting then take the free items at once (there are
	// more workers than items): within 2s, for timers late on a loaded
	// machine and a worker's retry backoff after the connection errors.
	// An item still held by a survivor is free once its task ends: it
	// was granted before T, so it ends at most persistStart + the longest
	// task after T.
	firstBound := persistDetect + ttl + 2*time.Second
	allBound := max(firstBound, persistStart+maxSleep-persistMinGap+2*time.Second)
	var grants map[string]persistGrant
	var polls int
	if ok, _ := poll("", time.Until(backAt.Add(allBound)), func() (bool, string) {
		grants, polls = watch.snapshot()
		return len(grants) == len(items), ""
	}); !ok {
		var missing []string
		for _, it := range items {
			if _, ok := grants[it]; !ok {
				missing = append(missing, it)
			}
		}
		t.Errorf("items %v not granted again within %v of the restart (bound: max(detection %v + quiet %v, task start %v + longest task %v - rollback window %v) + 2s); quiet period until %s; %s",
			missing, allBound, persistDetect, ttl, persistStart, maxSleep, persistMinGap, quietUntil.Format("15:04:05.000"), probe)
	}
	var firstGrant, lastGrant time.Time
	for _, it := range sortedKeys(grants) {
		g := grants[it]
		if firstGrant.IsZero() || g.at.Before(firstGrant) {
			firstGrant = g.at
		}
		if g.at.After(lastGrant) {
			lastGrant = g.at
		}
		// (a) No grant in the quiet period: the grant came at or before
		// g.at, so g.at before the quiet period's end is proof.
		if g.at.Before(stoppedAt.Add(ttl)) || (!quietUntil.IsZero() && g.at.Before(quietUntil)) {
			t.Errorf("item %s token %d granted by %s, %v after the restart: before the quiet period ended (%s, lease_ttl %v after it was noticed)",
				it, g.token, g.at.Format("15:04:05.000"), g.at.Sub(backAt), quietUntil.Format("15:04:05.000"), ttl)
		}
		// (c) A lost lease's task was stopped before its item was granted
		// again.
		if at, ok := stoppedBy[it]; ok && g.at.Before(at) {
			l := lost[it]
			r := runnerOf(l.owner)
			t.Errorf("item %s granted again (token %d) by %s, before the holder of its lost lease (token %d) had stopped its task (%s logged it at %s); %s; %s's lines on it:\n%s",
				it, g.token, g.at.Format("15:04:05.000"), l.token, r.name, at.Format("15:04:05.000"), probe, r.name, strings.Join(r.out.grep("item="+it+" ", "token="+strconv.FormatInt(l.token, 10)), "\n"))
		}
		// An item no survivor held is granted as soon as the quiet
		// period ends.
		if _, ok := survived[it]; !ok && g.at.Sub(backAt) > firstBound {
			t.Errorf("item %s (no lease in the restored dataset) granted again %v after the restart; want within %v (detection %v + quiet %v + 2s to wake); quiet period until %s; %s",
				it, g.at.Sub(backAt), firstBound, persistDetect, ttl, quietUntil.Format("15:04:05.000"), probe)
		}
	}
	if !firstGrant.IsZero() {
		d := firstGrant.Sub(backAt)
		t.Logf("first new grant %v after redis was back (%v after the quiet period ended); every item granted again %v after it (%d polls)",
			d.Round(time.Millisecond), firstGrant.Sub(quietUntil).Round(time.Millisecond), lastGrant.Sub(backAt).Round(time.Millisecond), polls)
		if d > firstBound {
			t.Errorf("first new grant %v after the restart; want within %v (detection %v + quiet %v + 2s to wake); %s", d, firstBound, persistDetect, ttl, probe)
		}
	}
	newBegins := func(evs []event) map[string]event {
		first := map[string]event{}
		for _, ev := range evs {
			if _, ok := first[ev.Item]; !ok && ev.Ev == "begin" && ev.Token > fenceCrash {
				first[ev.Item] = ev
			}
		}
		return first
	}
	var again map[string]event
	if ok, _ := poll("", time.Until(lastGrant.Add(persistStart)), func() (bool, string) {
		again = newBegins(e.events())
		return len(again) == len(grants), ""
	}); !ok {
		t.Errorf("%d items granted again after the restart, only %d of them began within %v (task start) of the last grant; %s", len(grants), len(again), persistStart, probe)
	}
	var firstBegin, lastBegin event
	for _, ev := range again {
		if firstBegin.Ev == "" || ev.T < firstBegin.T {
			firstBegin = ev
		}
		if ev.T > lastBegin.T {
			lastBegin = ev
		}
	}
	if firstBegin.Ev != "" {
		t.Logf("first new begin %v after redis was back (item %s token %d, %d above the counter at the crash); every item ran again %v after it",
			firstBegin.at().Sub(backAt).Round(time.Millisecond), firstBegin.Item, firstBegin.Token, firstBegin.Token-fenceCrash, lastBegin.at().Sub(backAt).Round(time.Millisecond))
	}

	// (c) The leases that survived keep refreshing: those with time to
	// spare at the restart must run their tasks to the end.
	for _, it := range sortedKeys(survived) {
		l := survived[it]
		var out event
		poll("", maxSleep+persistStart, e.untilEvent(&out, func(ev event) bool {
			return ev.Item == it && ev.Token == l.token && (ev.Ev == "end" || ev.Ev == "term")
		}))
		left := l.deadline.Sub(restartedAt)
		lostLine := ""
		if r := runnerOf(l.owner); r != nil {
			lostLine = r.out.first("lease lost", "item="+it+" ", "token="+strconv.FormatInt(l.token, 10))
		}
		switch {
		case out.Ev == "end" && lostLine == "":
			t.Logf("item %s token %d: lease survived in the restored dataset (%v left at the restart) and kept refreshing; its task ended normally", it, l.token, left.Round(time.Millisecond))
		case left >= persistSurvivorPTTL:
			t.Errorf("item %s token %d: lease in the restored dataset with %v left at the restart, yet its task did not run to its end (last event %+v; %s); %s", it, l.token, left, out, lostLine, probe)
		default:
			t.Logf("item %s token %d: lease in the restored dataset with only %v left at the restart; task outcome %q; %s", it, l.token, left.Round(time.Millisecond), out.Ev, lostLine)
		}
	}

	watch.close()
	stopRunners(t, 15*time.Second, rs...)

	// Every run open at the crash ended normally or was stopped (a term
	// event; or, too slow to record its SIGTERM within kill_grace, killed).
	evs := e.events()
	outcome := map[string]int{}
	for _, it := range sortedKeys(openAtCrash) {
		o := openAtCrash[it]
		what := ""
		for _, ev := range evs {
			if ev.Item == it && ev.Token == o.Token && (ev.Ev == "end" || ev.Ev == "term") {
				what = ev.Ev
			}
		}
		if what == "" {
			if pidAlive(o.Pid) && ofLedger(o.Pid, e.ledger) {
				t.Errorf("item %s token %d: run open at the crash never ended, and its recorder (pid %d) is still alive", it, o.Token, o.Pid)
				continue
			}
			what = "killed"
		}
		outcome[what]++
	}
	t.Logf("runs open at the crash: %d; %d ended normally, %d stopped (term), %d killed after kill_grace",
		len(openAtCrash), outcome["end"], outcome["term"], outcome["killed"])

	// The ledger, before and after the restart: nothing rejected, tokens
	// increasing per item, no overlap in server time.
	e.checkLedger(evs)
	// Tokens never repeat, across items either; every run that began after
	// the restart has a token above the counter at the crash, unless it
	// is a run granted before the crash whose task began late.
	seen := map[int64]event{}
	runsBefore, runsAfter := 0, 0
	for _, ev := range evs {
		if ev.Ev != "begin" {
			continue
		}
		if prev, ok := seen[ev.Token]; ok {
			t.Errorf("token %d began twice: %+v and %+v", ev.Token, prev, ev)
		}
		seen[ev.Token] = ev
		if ev.Token <= fenceCrash {
			runsBefore++
			if ev.at().After(stoppedAt) && atCrash[ev.Item].token != ev.Token {
				t.Errorf("item %s began with token %d after the crash; the counter stood at %d at the crash, and no lease held then had that token", ev.Item, ev.Token, fenceCrash)
			}
			continue
		}
		runsAfter++
		// (a) again, from the ledger: no run of a new grant began before
		// one lease_ttl after the crash.
		if ev.at().Before(stoppedAt.Add(ttl)) {
			t.Errorf("item %s token %d began %v after the crash: granted before the quiet period (lease_ttl %v) could end", ev.Item, ev.Token, ev.at().Sub(stoppedAt), ttl)
		}
		// (b) The counter was lifted to max(counter + 1e6, server time in
		// µs) when the discontinuity was noticed: every later token is
		// above both (the counter was back at its value at T).
		if ev.Token <= fenceT+1_000_000 || (!noticedAt.IsZero() && ev.Token <= noticedAt.UnixMicro()) {
			t.Errorf("item %s token %d after the restart: want above the counter at T + 1e6 (%d) and the server time in µs when the discontinuity was noticed (%d)",
				ev.Item, ev.Token, fenceT+1_000_000, noticedAt.UnixMicro())
		}
	}
	t.Logf("runs: %d began before the crash (tokens up to %d), %d after (first token %d, %d above); %s",
		runsBefore, fenceCrash, runsAfter, firstBegin.Token, firstBegin.Token-fenceCrash, probe)
}
