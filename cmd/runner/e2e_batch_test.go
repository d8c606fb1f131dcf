package main

// Batch mode end to end: every item of a batch completes exactly once,
// though a runner is killed mid-task, and "pool status" reports the batch.

import (
	"encoding/json"
	"syscall"
	"testing"
	"time"
)

func TestE2EBatchWithAKilledRunner(t *testing.T) {
	parallel(t)
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
	e.waitHeld(victim, 2)
	cfg := e.config("batch", items, extra, 300*time.Millisecond)
	rs := []*runnerProc{startRunner(t, "runner-1", nil, "run", "-c", cfg), startRunner(t, "runner-2", nil, "run", "-c", cfg)}
	waitFor(t, "the batch under way", 20*time.Second, e.untilEnds(4, nil))
	victim.signal(syscall.SIGKILL)
	victim.wait(5 * time.Second)
	rs = append(rs, startRunner(t, "replacement", nil, "run", "-c", cfg))
	for _, r := range rs {
		if code := r.wait(60 * time.Second); code != 0 {
			t.Fatalf("%s exited %d at the end of the batch", r.name, code)
		}
	}
	runs := e.checkLedger(e.events())
	done := completed(runs)
	for _, it := range items {
		if done[it] != 1 {
			t.Errorf("item %s completed %d times, want exactly once (runs %+v)", it, done[it], runs[it])
		}
	}
	// pool status reports the finished batch.
	st := runnerCmd(t, procOpts{within: 10 * time.Second}, "pool", "status", "--json", "-c", cfg)
	if st.code != 0 {
		t.Fatalf("pool status exited %d", st.code)
	}
	var rep statusReport
	if err := json.Unmarshal([]byte(st.out), &rep); err != nil {
		t.Fatalf("pool status --json: %v\n%s", err, st.out)
	}
	if rep.Batch == nil || rep.Batch.Done != 24 || rep.Batch.Failed != 0 || rep.Batch.Finished.IsZero() {
		t.Fatalf("pool status batch = %+v", rep.Batch)
	}
}
