package worker_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// The item history and the runner registry are part of the Store
// conformance suite (TestStoreConformance).
func init() { storeBehaviours = append(storeBehaviours, fleetBehaviours...) }

var fleetBehaviours = []storeBehaviour{
	{"history-keeps-the-last-outcome-and-the-last-failure-tail", func(t *testing.T, e *storeEnv) {
		before := e.clock()
		fail := allocator.RunRecord{Outcome: string(worker.OutcomeFailure), Attempts: 2, Runner: "r1", ExitStatus: 3,
			Error: "exit status 3", Stderr: "line 1\nline 2", Retain: time.Hour}
		must(t, e.store.RecordRun(e.ctx, "a", 10, fail))
		after := e.clock()
		h := e.lastRun("a")
		wantWithin(t, "At", h.At, before, after)
		if h.Outcome != worker.OutcomeFailure || h.Token != 10 || h.Attempts != 2 || h.Runner != "r1" || h.ExitStatus != 3 ||
			h.Error != "exit status 3" || h.Stderr != "line 1\nline 2" || h.StderrToken != 10 || !h.StderrAt.Equal(h.At) {
			t.Fatalf("LastRun after a failure = %+v", h)
		}
		// A later success replaces the outcome; the failure's tail stays.
		must(t, e.store.RecordRun(e.ctx, "a", 12, allocator.RunRecord{Outcome: string(worker.OutcomeSuccess), Attempts: 3, Runner: "r2", ExitStatus: -1, Retain: time.Hour}))
		h = e.lastRun("a")
		if h.Outcome != worker.OutcomeSuccess || h.Token != 12 || h.Runner != "r2" || h.Error != "" || h.ExitStatus != -1 ||
			h.Stderr != "line 1\nline 2" || h.StderrToken != 10 {
			t.Fatalf("LastRun after a success = %+v; want the success, with the earlier failure's tail", h)
		}
		// A late writer of an earlier run hides nothing.
		must(t, e.store.RecordRun(e.ctx, "a", 11, allocator.RunRecord{Outcome: string(worker.OutcomeLeaseLost), Runner: "late", Retain: time.Hour}))
		if h := e.lastRun("a"); h.Token != 12 || h.Outcome != worker.OutcomeSuccess {
			t.Fatalf("LastRun after a record of token 11 = %+v; want token 12's success kept", h)
		}
		if _, found, err := e.store.LastRun(e.ctx, "never-ran"); err != nil || found {
			t.Fatalf("LastRun(never-ran) = found %v, %v; want not found", found, err)
		}
	}},
	{"history-cuts-long-errors-and-tails", func(t *testing.T, e *storeEnv) {
		long := strings.Repeat("é", 3000) // 6,000 bytes of 2-byte runes
		must(t, e.store.RecordRun(e.ctx, "a", 1, allocator.RunRecord{Outcome: "failure", Error: long, Stderr: long + "end", ExitStatus: -1, Retain: time.Hour}))
		h := e.lastRun("a")
		if len(h.Error) > 1024 || !strings.HasPrefix(long, h.Error) || len(h.Error) < 1020 {
			t.Fatalf("Error kept %d bytes; want the first 1 KiB, cut at a rune boundary", len(h.Error))
		}
		if len(h.Stderr) > 4096 || !strings.HasSuffix(h.Stderr, "éend") || len(h.Stderr) < 4090 {
			t.Fatalf("Stderr kept %d bytes ending %q; want the last 4 KiB, cut at a rune boundary", len(h.Stderr), h.Stderr[max(0, len(h.Stderr)-8):])
		}
	}},
	{"history-ends-with-its-retention", func(t *testing.T, e *storeEnv) {
		const retain = 1500 * time.Millisecond
		must(t, e.store.RecordRun(e.ctx, "a", 1, allocator.RunRecord{Outcome: "failure", Stderr: "tail", ExitStatus: -1, Retain: retain}))
		at := e.lastRun("a").At
		// Invariant, whatever the scheduling: a read that comes back empty
		// ran after the retention ended, by the backend's clock.
		redistest.Eventually(t, "the record's retention over", retain+5*time.Second+redistest.Slack(), func() bool {
			_, found, err := e.store.LastRun(e.ctx, "a")
			must(t, err)
			if !found {
				if now := e.clock(); now.Before(at.Add(retain)) {
					t.Fatalf("the record vanished at %v, before its retention ended at %v", now, at.Add(retain))
				}
			}
			return !found
		})
		if e.redis != nil {
			// The keys' TTLs start when the script's PEXPIRE and SET PX
			// run, a millisecond or two after the record's time: they go
			// that much later than the record is hidden.
			redistest.Eventually(t, "the history keys gone", time.Second+redistest.Slack(), func() bool {
				return len(e.scanKeys("*hist*")) == 0
			})
		}
	}},
	{"last-runs-reads-a-page-of-items-at-once", func(t *testing.T, e *storeEnv) {
		long := allocator.RunRecord{Outcome: "failure", Attempts: 2, Runner: "r", ExitStatus: 5, Error: "boom", Stderr: "tail", Retain: time.Hour}
		must(t, e.store.RecordRun(e.ctx, "a", 1, long))
		must(t, e.store.RecordRun(e.ctx, "b", 2, allocator.RunRecord{Outcome: "success", Attempts: 1, Runner: "r", ExitStatus: -1, Retain: time.Hour}))
		must(t, e.store.RecordRun(e.ctx, "short", 3, allocator.RunRecord{Outcome: "success", ExitStatus: -1, Retain: time.Millisecond}))
		redistest.Eventually(t, "the 1ms record past its retention", 2*time.Second+redistest.Slack(), func() bool {
			_, found, err := e.store.LastRun(e.ctx, "short")
			must(t, err)
			return !found
		})
		page, err := e.store.LastRuns(e.ctx, []string{"a", "missing", "b", "short"})
		must(t, err)
		if len(page) != 2 {
			t.Fatalf("LastRuns = %+v, want a and b only (missing has none, short is past its retention)", page)
		}
		for _, it := range []string{"a", "b"} {
			want := e.lastRun(it)
			want.Stderr, want.StderrAt, want.StderrToken = "", time.Time{}, 0
			if got := page[it]; got != want {
				t.Fatalf("LastRuns[%s] = %+v\nwant LastRun's %+v without the tail", it, got, want)
			}
		}
		if page, err := e.store.LastRuns(e.ctx, nil); err != nil || len(page) != 0 {
			t.Fatalf("LastRuns(nil) = %v, %v; want an empty page", page, err)
		}
		if _, err := e.store.LastRuns(e.ctx, []string{"a", "b\x00"}); !errors.Is(err, lock.ErrInvalidKey) {
			t.Fatalf("LastRuns with a NUL item = %v, want lock.ErrInvalidKey", err)
		}
		if _, err := e.store.LastRuns(e.ctx, stItems("x", 1001)); !errors.Is(err, worker.ErrInvalidConfig) {
			t.Fatalf("LastRuns of 1,001 items = %v, want ErrInvalidConfig", err)
		}
		if page, err := e.store.LastRuns(e.ctx, stItems("x", 1000)); err != nil || len(page) != 0 {
			t.Fatalf("LastRuns of 1,000 items without history = %d, %v", len(page), err)
		}
	}},
	{"history-rejects-bad-items-and-writes-nothing", func(t *testing.T, e *storeEnv) {
		rec := allocator.RunRecord{Outcome: "success", Retain: time.Hour}
		for _, item := range []string{"", "a\x00b", strings.Repeat("x", lock.MaxKeyLen+1)} {
			if err := e.store.RecordRun(e.ctx, item, 1, rec); !errors.Is(err, lock.ErrInvalidKey) {
				t.Errorf("RecordRun(%.20q) = %v, want lock.ErrInvalidKey", item, err)
			}
			if _, _, err := e.store.LastRun(e.ctx, item); !errors.Is(err, lock.ErrInvalidKey) {
				t.Errorf("LastRun(%.20q) = %v, want lock.ErrInvalidKey", item, err)
			}
		}
		if _, _, err := e.store.FailedItems(e.ctx, "", "", 10); !errors.Is(err, worker.ErrInvalidBatch) {
			t.Errorf("FailedItems with no batch id = %v, want ErrInvalidBatch", err)
		}
		if e.redis != nil {
			if keys := e.scanKeys("*hist*"); len(keys) != 0 {
				t.Fatalf("bad input wrote %q", keys)
			}
		}
	}},
	{"finish-records-history-and-names-failed-items", func(t *testing.T, e *storeEnv) {
		const n = 30
		its := stItems("f-", n)
		e.extend(append(its, "ok")...)
		e.start("b1", n+1)
		for i, it := range its {
			l := e.lease(it)
			rec := allocator.RunRecord{Outcome: "failure", Attempts: 3, Runner: "r", ExitStatus: i, Error: "boom " + it, Retain: time.Hour}
			e.finishRec(l, false, &rec)
		}
		l := e.lease("ok")
		e.finishRec(l, true, &allocator.RunRecord{Outcome: "success", Attempts: 1, Runner: "r", ExitStatus: -1, Retain: time.Hour})
		if h := e.lastRun("ok"); h.Outcome != worker.OutcomeSuccess || h.Token != l.Token() {
			t.Fatalf("LastRun(ok) after Finish = %+v, want the success with token %d", h, l.Token())
		}
		if h := e.lastRun("f-000007"); h.Outcome != worker.OutcomeFailure || h.ExitStatus != 7 || h.Error != "boom f-000007" {
			t.Fatalf("LastRun(f-000007) after Finish = %+v", h)
		}
		// Pages of about 7: every failed item at least once, with its error.
		seen := map[string]string{}
		cursor, pages := "", 0
		for {
			page, next, err := e.store.FailedItems(e.ctx, "b1", cursor, 7)
			must(t, err)
			for _, f := range page {
				seen[f.Item] = f.Error
			}
			if pages++; next == "" || pages > 100 {
				break
			}
			cursor = next
		}
		if len(seen) != n {
			t.Fatalf("FailedItems named %d items over %d pages, want %d: %v", len(seen), pages, n, slices.Sorted(func(y func(string) bool) {
				for k := range seen {
					if !y(k) {
						return
					}
				}
			}))
		}
		for _, it := range its {
			if seen[it] != "boom "+it {
				t.Fatalf("FailedItems gave %q the error %q, want %q", it, seen[it], "boom "+it)
			}
		}
		if _, ok := seen["ok"]; ok {
			t.Fatalf("FailedItems named the item that succeeded")
		}
		if page, next, err := e.store.FailedItems(e.ctx, "no-such-batch", "", 10); err != nil || len(page) != 0 || next != "" {
			t.Fatalf("FailedItems(no-such-batch) = %v, %q, %v; want nothing", page, next, err)
		}
	}},
	{"registry-lists-live-processes-and-forgets-those-that-leave", func(t *testing.T, e *storeEnv) {
		started := time.UnixMilli(time.Now().UnixMilli())
		r1 := worker.Runner{ID: "host-a:1", Instance: "i1", Host: "host-a", PID: 1, Version: "v1.2.3", Mode: worker.ModeLoop,
			Concurrency: 8, Started: started, Held: 3, Runs: 42, Failures: 2, LeasesLost: 1}
		r2 := worker.Runner{ID: "host-b:7", Instance: "i2", Host: "host-b", PID: 7, Mode: worker.ModeBatch, Batch: "b1", Concurrency: 1, Started: started}
		before := e.clock()
		for _, r := range []worker.Runner{r2, r1} {
			if other, err := e.store.Heartbeat(e.ctx, r, time.Minute); err != nil || other != "" {
				t.Fatalf("Heartbeat(%s) = %q, %v", r.ID, other, err)
			}
		}
		after := e.clock()
		rs := e.runners()
		if len(rs) != 2 || rs[0].ID != r1.ID || rs[1].ID != r2.ID {
			t.Fatalf("Runners = %+v, want %s and %s by id", rs, r1.ID, r2.ID)
		}
		got := rs[0]
		wantWithin(t, "Beat", got.Beat, before, after)
		if d := got.Expires.Sub(got.Beat); d != time.Minute {
			t.Fatalf("Expires - Beat = %v, want the ttl 1m", d)
		}
		if !got.Started.Equal(r1.Started) {
			t.Fatalf("Runners[0].Started = %v, want %v", got.Started, r1.Started)
		}
		want := r1
		got.Beat, got.Expires, got.Started, want.Started = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if got != want {
			t.Fatalf("Runners[0] = %+v\nwant %+v", got, want)
		}
		// Another process under r1's id is told of the first.
		clash := r1
		clash.Instance = "i3"
		if other, err := e.store.Heartbeat(e.ctx, clash, time.Minute); err != nil || other != "i1" {
			t.Fatalf("Heartbeat of a second instance of %s = %q, %v; want the first's instance i1", r1.ID, other, err)
		}
		// Leave takes out only the instance's own registration.
		must(t, e.store.Leave(e.ctx, r1.ID, "i1"))
		must(t, e.store.Leave(e.ctx, r2.ID, "i2"))
		if rs := e.runners(); len(rs) != 1 || rs[0].Instance != "i3" {
			t.Fatalf("Runners after both left = %+v; want only the second instance of %s", rs, r1.ID)
		}
		must(t, e.store.Leave(e.ctx, r1.ID, "i3"))
		if rs := e.runners(); len(rs) != 0 {
			t.Fatalf("Runners after every process left = %+v", rs)
		}
		if e.redis != nil {
			if keys := e.scanKeys("*fleet*"); len(keys) != 0 {
				t.Fatalf("registry keys left once every process left: %q", keys)
			}
		}
	}},
	{"throughput-adds-what-each-heartbeat-reports-since-the-last", func(t *testing.T, e *storeEnv) {
		if pts, err := e.store.Throughput(e.ctx); err != nil || len(pts) != 0 {
			t.Fatalf("Throughput of a new pool = %+v, %v; want none", pts, err)
		}
		r := worker.Runner{ID: "a", Instance: "i1", Mode: worker.ModeLoop, Concurrency: 2, Grants: 7, Runs: 5}
		before := e.clock()
		// A heartbeat that finds no report of its instance counts
		// nothing (its registration expired: its counts are from before),
		// nor does one of another instance under the same id; a pool's
		// first heartbeat (First) counts its counts whole.
		beat := func(r worker.Runner) {
			t.Helper()
			if _, err := e.store.Heartbeat(e.ctx, r, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		beat(r)
		r.Grants, r.Runs = 12, 9
		beat(r)
		r.Grants, r.Runs = 20, 15
		beat(r)
		other := worker.Runner{ID: "a", Instance: "i2", Mode: worker.ModeLoop, Concurrency: 1, Grants: 1000, Runs: 1000}
		beat(other)
		beat(worker.Runner{ID: "b", Instance: "j", Mode: worker.ModeLoop, Concurrency: 1, Grants: 500, Runs: 500})
		beat(worker.Runner{ID: "c", Instance: "k", Mode: worker.ModeLoop, Concurrency: 1, Grants: 3, Runs: 2, First: true})
		// A counter that went back (a report not of this process) adds nothing.
		other.Grants, other.Runs = 3, 4
		beat(other)
		after := e.clock()
		pts, err := e.store.Throughput(e.ctx)
		must(t, err)
		var grants, runs int64
		for i, pt := range pts {
			grants, runs = grants+pt.Grants, runs+pt.Runs
			if pt.At.Before(before.Truncate(worker.ThroughputBucket)) || pt.At.After(after) || pt.At.UnixMilli()%worker.ThroughputBucket.Milliseconds() != 0 {
				t.Fatalf("point %d at %v: want a bucket start within [%v, %v]", i, pt.At, before, after)
			}
			if i > 0 && !pts[i-1].At.Before(pt.At) {
				t.Fatalf("points not oldest first: %+v", pts)
			}
		}
		if grants != 13+3 || runs != 10+2 || len(pts) == 0 || len(pts) > 2 {
			t.Fatalf("Throughput = %+v: %d grants and %d runs; want a's 13 and 10 since its first heartbeat and c's first 3 and 2, in 1 or 2 buckets", pts, grants, runs)
		}
		if e.redis != nil {
			base := e.prefix + "|" + lock.DefaultPoolSuffix
			if ttl := e.redis.PTTL(e.ctx, base+"|fleet:rate").Val(); ttl <= 59*time.Minute || ttl > 61*time.Minute {
				t.Fatalf("fleet:rate's TTL = %v, want about an hour", ttl)
			}
		}
	}},
	{"registry-forgets-dead-processes-and-does-not-grow", func(t *testing.T, e *storeEnv) {
		// 100 processes that each register once and die (no Leave), while
		// one stays alive: the registry holds the live one, plus at most
		// the few that died since its last heartbeat.
		const ttl = 20 * time.Millisecond
		live := worker.Runner{ID: "live", Instance: "l", Mode: worker.ModeLoop, Concurrency: 1}
		for i := range 100 {
			dead := worker.Runner{ID: fmt.Sprintf("dead-%d", i), Instance: "d", Mode: worker.ModeLoop, Concurrency: 1}
			if _, err := e.store.Heartbeat(e.ctx, dead, ttl); err != nil {
				t.Fatal(err)
			}
			if _, err := e.store.Heartbeat(e.ctx, live, time.Minute); err != nil {
				t.Fatal(err)
			}
			if e.redis != nil {
				base := e.prefix + "|" + lock.DefaultPoolSuffix
				if n := e.redis.ZCard(e.ctx, base+"|fleet:runners").Val(); n > 1+17 {
					t.Fatalf("after %d dead processes the registry ZSET holds %d entries; want the live one and at most 17 others (%s)", i+1, n, redistest.SchedDelay())
				}
				if n := e.redis.HLen(e.ctx, base+"|fleet:info").Val(); n > 1+17 {
					t.Fatalf("after %d dead processes the registry HASH holds %d entries", i+1, n)
				}
			}
			// At most ttl/(ttl/4) = 4 dead registrations are unexpired at a
			// time, however fast the loop runs; the expired ones are
			// pruned, up to 16 per heartbeat.
			time.Sleep(ttl / 4)
		}
		var rs []worker.Runner
		redistest.Eventually(t, "only the live process registered", 5*time.Second+redistest.Slack(), func() bool {
			rs = e.runners()
			return len(rs) == 1
		})
		if rs[0].ID != "live" {
			t.Fatalf("Runners = %+v, want only the live process", rs)
		}
		// A registration expires ttl after its last heartbeat: one read
		// at a time before that sees it.
		if _, err := e.store.Heartbeat(e.ctx, live, 1500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		exp := e.runners()[0].Expires
		redistest.Eventually(t, "the live process's registration expired", 7*time.Second+redistest.Slack(), func() bool {
			rs := e.runners()
			if len(rs) == 0 {
				if now := e.clock(); now.Before(exp) {
					t.Fatalf("the registration vanished at %v, before it expired at %v", now, exp)
				}
			}
			return len(rs) == 0
		})
		if e.redis != nil {
			if keys := e.scanKeys("*fleet*"); len(keys) != 0 {
				t.Fatalf("registry keys left once every registration expired: %q", keys)
			}
		}
	}},
	{"registry-rejects-bad-registrations", func(t *testing.T, e *storeEnv) {
		for _, c := range []struct {
			r   worker.Runner
			ttl time.Duration
		}{
			{worker.Runner{}, time.Minute},
			{worker.Runner{ID: "a\x00b"}, time.Minute},
			{worker.Runner{ID: strings.Repeat("x", worker.MaxRunnerID+1)}, time.Minute},
			{worker.Runner{ID: "ok"}, 0},
		} {
			if _, err := e.store.Heartbeat(e.ctx, c.r, c.ttl); !errors.Is(err, worker.ErrInvalidConfig) || !strings.HasPrefix(err.Error(), "worker: Heartbeat") {
				t.Errorf("Heartbeat(%.20q, %v) = %v, want a \"worker: Heartbeat\" error wrapping ErrInvalidConfig", c.r.ID, c.ttl, err)
			}
		}
		if err := e.store.Leave(e.ctx, "", "x"); !errors.Is(err, worker.ErrInvalidConfig) {
			t.Errorf("Leave of an empty id = %v, want ErrInvalidConfig", err)
		}
		if rs := e.runners(); len(rs) != 0 {
			t.Fatalf("bad registrations registered %+v", rs)
		}
	}},
	// A run's end records its history in Lease.Next's step only while
	// the lease is current: a lease someone else ended records nothing.
	{"next-records-history-only-under-a-current-lease", func(t *testing.T, e *storeEnv) {
		e.extend("a", "b")
		rec := &allocator.RunRecord{Outcome: "success", Attempts: 1, Runner: "r", ExitStatus: -1, Retain: time.Hour}
		l := e.lease("a")
		next, ended, err := l.Next(e.ctx, allocator.EndOptions{Record: rec}, "w", allocator.AcquireOptions{Prefer: "b", Exact: true})
		must(t, err)
		must(t, ended)
		if h := e.lastRun("a"); h.Token != l.Token() || h.Outcome != worker.OutcomeSuccess {
			t.Fatalf("LastRun(a) after Next = %+v, want the success of token %d", h, l.Token())
		}
		wantTrue(t, "Unlock b")(e.pool.Unlock(e.ctx, "b"))
		_, ended, err = next.Next(e.ctx, allocator.EndOptions{Record: rec}, "w", allocator.AcquireOptions{})
		if ended == nil || err != nil && !errors.Is(err, allocator.ErrNoFreeItem) {
			t.Fatalf("Next of a lease someone ended = ended %v, err %v; want it reported ended", ended, err)
		}
		if _, found, err := e.store.LastRun(e.ctx, "b"); err != nil || found {
			t.Fatalf("LastRun(b) = found %v, %v: a lease that was no longer current recorded its run", found, err)
		}
	}},
}

// lastRun returns item's history, failing the test when there is none.
func (e *storeEnv) lastRun(item string) worker.ItemHistory {
	e.t.Helper()
	h, found, err := e.store.LastRun(e.ctx, item)
	must(e.t, err)
	if !found {
		e.t.Fatalf("LastRun(%q): no history", item)
	}
	return h
}

// runners returns the live registrations.
func (e *storeEnv) runners() []worker.Runner {
	e.t.Helper()
	rs, err := e.store.Runners(e.ctx)
	must(e.t, err)
	return rs
}

// finishRec is finish with a history record.
func (e *storeEnv) finishRec(l *allocator.Lease, ok bool, rec *allocator.RunRecord) {
	e.t.Helper()
	recorded, err := e.store.Finish(e.ctx, "b1", l, ok, 0, rec)
	must(e.t, err)
	if !recorded {
		e.t.Fatalf("Finish(b1, %q, %v) with the current lease was not recorded", l.Item(), ok)
	}
	must(e.t, l.Release(e.ctx))
}

// TestRedisFleetWrongType: a history, batch error or registry key holding
// another type gives lock.ErrWrongType naming the key, the key is left as
// it was, and nothing else is written: not the history, not the batch, and
// a run's end through Lease.Next leaves its lease held.
func TestRedisFleetWrongType(t *testing.T) {
	t.Parallel()
	rec := &allocator.RunRecord{Outcome: "failure", Error: "e", Stderr: "s", ExitStatus: 1, Retain: time.Hour}
	r := worker.Runner{ID: "r", Instance: "i", Mode: worker.ModeLoop, Concurrency: 1}
	type call func(e *storeEnv, l *allocator.Lease) error
	finish := func(e *storeEnv, l *allocator.Lease) error {
		_, err := e.store.Finish(e.ctx, "b1", l, false, 0, rec)
		return err
	}
	next := func(e *storeEnv, l *allocator.Lease) error {
		_, _, err := l.Next(e.ctx, allocator.EndOptions{Record: rec}, "w", allocator.AcquireOptions{})
		return err
	}
	cases := []struct {
		key   string // after the base
		calls map[string]call
	}{
		{"|hist:last", map[string]call{
			"RecordRun": func(e *storeEnv, l *allocator.Lease) error { return e.store.RecordRun(e.ctx, "a", 1, *rec) },
			"LastRun":   func(e *storeEnv, l *allocator.Lease) error { _, _, err := e.store.LastRun(e.ctx, "a"); return err },
			"LastRuns": func(e *storeEnv, l *allocator.Lease) error {
				_, err := e.store.LastRuns(e.ctx, []string{"a"})
				return err
			},
			"Finish": finish, "Next": next,
		}},
		{"|hist:expiry", map[string]call{"RecordRun": func(e *storeEnv, l *allocator.Lease) error { return e.store.RecordRun(e.ctx, "a", 1, *rec) }, "Finish": finish, "Next": next}},
		{"|hist:tail:a", map[string]call{
			"LastRun": func(e *storeEnv, l *allocator.Lease) error { _, _, err := e.store.LastRun(e.ctx, "a"); return err },
			"Finish":  finish, "Next": next,
		}},
		{"|batch:b1:errors", map[string]call{
			"Finish": finish,
			"FailedItems": func(e *storeEnv, l *allocator.Lease) error {
				_, _, err := e.store.FailedItems(e.ctx, "b1", "", 10)
				return err
			},
		}},
		{"|fleet:runners", map[string]call{
			"Heartbeat": func(e *storeEnv, l *allocator.Lease) error {
				_, err := e.store.Heartbeat(e.ctx, r, time.Minute)
				return err
			},
			"Runners": func(e *storeEnv, l *allocator.Lease) error { _, err := e.store.Runners(e.ctx); return err },
			"Leave":   func(e *storeEnv, l *allocator.Lease) error { return e.store.Leave(e.ctx, "r", "i") },
		}},
		{"|fleet:info", map[string]call{
			"Heartbeat": func(e *storeEnv, l *allocator.Lease) error {
				_, err := e.store.Heartbeat(e.ctx, r, time.Minute)
				return err
			},
			"Runners": func(e *storeEnv, l *allocator.Lease) error { _, err := e.store.Runners(e.ctx); return err },
		}},
	}
	for _, c := range cases {
		for op, call := range c.calls {
			t.Run(strings.TrimPrefix(c.key, "|")+"/"+op, func(t *testing.T) {
				t.Parallel()
				e := backendNamed(t, "redis").env(t)
				e.extend("a", "b")
				e.start("b1", 2)
				l := e.lease("a")
				key := e.prefix + "|" + lock.DefaultPoolSuffix + c.key
				// A STRING where the keyspace has another type; a SET
				// where it has the tail's STRING.
				typ := "string"
				if strings.Contains(c.key, "tail") {
					typ = "set"
					must(t, e.redis.SAdd(e.ctx, key, "not-mine").Err())
				} else {
					must(t, e.redis.Set(e.ctx, key, "not-mine", 0).Err())
				}
				before := e.state("b1", "a", "b")
				err := call(e, l)
				if !errors.Is(err, lock.ErrWrongType) || !strings.Contains(err.Error(), key) {
					t.Fatalf("%s with a %s at %q: got %v, want lock.ErrWrongType naming the key", op, typ, key, err)
				}
				if got := e.redis.Type(e.ctx, key).Val(); got != typ {
					t.Fatalf("%q after %s is a %s, want the %s left as it was", key, op, got, typ)
				}
				if after := e.state("b1", "a", "b"); after != before {
					t.Fatalf("%s changed the state:\nbefore %s\nafter  %s", op, before, after)
				}
			})
		}
	}
}

// TestRedisHistoryIsBounded: the history's HASH and ZSET hold the items
// whose records are within their retention: every write drops up to 8
// whose retention ended, and the keys and tails carry the retention as
// their TTL.
func TestRedisHistoryIsBounded(t *testing.T) {
	t.Parallel()
	e := backendNamed(t, "redis").env(t)
	base := e.prefix + "|" + lock.DefaultPoolSuffix
	const retain = time.Second
	old := allocator.RunRecord{Outcome: "failure", Stderr: "tail", ExitStatus: -1, Retain: retain}
	for i := range 40 {
		must(t, e.store.RecordRun(e.ctx, fmt.Sprintf("old-%d", i), int64(i+1), old))
	}
	written := time.Now()
	if ttl := e.redis.PTTL(e.ctx, base+"|hist:tail:old-39").Val(); ttl > retain || ttl < 0 && time.Since(written) < retain {
		t.Fatalf("a tail's TTL is %v, want the retention %v at most", ttl, retain)
	}
	// One record kept an hour keeps the keys alive past the old ones.
	fresh := allocator.RunRecord{Outcome: "success", ExitStatus: -1, Retain: time.Hour}
	must(t, e.store.RecordRun(e.ctx, "keeper", 50, fresh))
	n0 := e.redis.HLen(e.ctx, base+"|hist:last").Val()
	if n0 != 41 && time.Since(written) < retain/2 {
		t.Fatalf("hist:last holds %d entries after 41 items, want 41", n0)
	}
	time.Sleep(time.Until(written.Add(retain + 50*time.Millisecond)))
	// Each write now drops up to 8 of the old records, all past their
	// retention (fewer than 40 if a stalled keeper write dropped some).
	stale := n0 - 1
	for i := range 5 {
		must(t, e.store.RecordRun(e.ctx, fmt.Sprintf("new-%d", i), int64(100+i), fresh))
		stale -= min(8, stale)
		if n, want := e.redis.HLen(e.ctx, base+"|hist:last").Val(), 1+int64(i+1)+stale; n != want {
			t.Fatalf("hist:last holds %d entries after %d fresh writes, want %d", n, i+1, want)
		}
	}
	if n := e.redis.ZCard(e.ctx, base+"|hist:expiry").Val(); n != 6 {
		t.Fatalf("hist:expiry holds %d entries, want the 6 within their retention", n)
	}
	for _, k := range []string{base + "|hist:last", base + "|hist:expiry"} {
		if ttl := e.redis.PTTL(e.ctx, k).Val(); ttl < 52*time.Minute {
			t.Fatalf("%s's TTL is %v, want the longest retention, 1h, within an eighth", k, ttl)
		}
	}
	if keys := e.scanKeys("*hist:tail:*"); len(keys) != 0 {
		t.Fatalf("tails outlived their retention: %q", keys)
	}
}
