package worker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/worker"
)

// The pool's registration and its runs' history are part of the pool
// conformance suite (TestPoolConformance).
func init() { poolBehaviours = append(poolBehaviours, fleetPoolBehaviours...) }

var fleetPoolBehaviours = []poolBehaviour{
	{"registry-shows-the-running-pool-and-history-its-runs", func(t *testing.T, b backend) {
		its := items(4)
		a, st, _ := b.build(t, its)
		ctx := context.Background()
		p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
			if job.Item == "item-00" {
				return errors.New("item-00 always fails")
			}
			time.Sleep(time.Millisecond)
			return nil
		}), worker.Config{Concurrency: 2, LeaseTTL: 2 * time.Second, Heartbeat: 50 * time.Millisecond, Version: "v9.9",
			MaxAttempts: 2, Backoff: 5 * time.Millisecond, MaxBackoff: 5 * time.Millisecond, Quarantine: time.Hour, Cooldown: 20 * time.Millisecond})
		must(t, err)
		stop, _ := runPool(t, p)
		id := p.Config().ID
		var me worker.Runner
		redistest.Eventually(t, "the pool registered with runs and failures counted", 10*time.Second, func() bool {
			rs, err := st.Runners(ctx)
			must(t, err)
			for _, r := range rs {
				if r.ID == id {
					me = r
				}
			}
			return me.Runs >= 6 && me.Failures >= 2 && me.RunsPerSec > 0
		})
		// Each lease granted is a run finished, or one held now.
		if me.Grants < me.Runs || me.Grants > me.Runs+int64(me.Held)+2 {
			t.Fatalf("registration: %d grants for %d runs and %d held", me.Grants, me.Runs, me.Held)
		}
		redistest.Eventually(t, "the fleet's throughput counts the runs", 10*time.Second, func() bool {
			grants, runs := throughputTotals(t, st)
			return runs >= 6 && grants >= runs
		})
		host, _ := os.Hostname()
		if me.Mode != worker.ModeLoop || me.Concurrency != 2 || me.Version != "v9.9" || me.PID != os.Getpid() || me.Host != host ||
			me.Held < 0 || me.Held > 2 || me.Failures != 2 || me.Started.IsZero() {
			t.Fatalf("registration = %+v", me)
		}
		ok, found, err := st.LastRun(ctx, "item-01")
		must(t, err)
		if !found || ok.Outcome != worker.OutcomeSuccess || ok.Runner != id || ok.Attempts != 1 || ok.Error != "" {
			t.Fatalf("LastRun(item-01) = %+v, %v; want a success by %s", ok, found, id)
		}
		bad, found, err := st.LastRun(ctx, "item-00")
		must(t, err)
		if !found || bad.Outcome != worker.OutcomeFailure || bad.Attempts != 2 || bad.Error != "item-00 always fails" || bad.ExitStatus != -1 {
			t.Fatalf("LastRun(item-00) = %+v, %v; want its second failure in a row (then quarantined)", bad, found)
		}
		must(t, stop(5*time.Second))
		rs, err := st.Runners(ctx)
		must(t, err)
		for _, r := range rs {
			if r.ID == id {
				t.Fatalf("the pool is still registered after Run returned: %+v", r)
			}
		}
	}},
	{"registry-reports-the-age-of-the-oldest-lease-held", func(t *testing.T, b backend) {
		a, st, _ := b.build(t, items(1))
		release := make(chan struct{})
		p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}), worker.Config{Concurrency: 1, LeaseTTL: 2 * time.Second, Heartbeat: 50 * time.Millisecond})
		must(t, err)
		stop, _ := runPool(t, p)
		start := time.Now()
		var me worker.Runner
		redistest.Eventually(t, "a heartbeat reports a lease held for 300ms", 10*time.Second, func() bool {
			rs, err := st.Runners(context.Background())
			must(t, err)
			for _, r := range rs {
				me = r
			}
			return len(rs) == 1 && me.Held == 1 && me.OldestLeaseMS >= 300
		})
		// The lease was granted after the pool started.
		if age := time.Duration(me.OldestLeaseMS) * time.Millisecond; age > time.Since(start) {
			t.Fatalf("oldest lease %v old, but the pool started %v ago", age, time.Since(start))
		}
		close(release)
		redistest.Eventually(t, "a heartbeat reports no lease once the task returned", 10*time.Second, func() bool {
			rs, err := st.Runners(context.Background())
			must(t, err)
			return len(rs) == 1 && (rs[0].Held == 0 || rs[0].OldestLeaseMS < me.OldestLeaseMS)
		})
		must(t, stop(5*time.Second))
	}},
	{"throughput-counts-the-runs-since-the-last-heartbeat-on-stop", func(t *testing.T, b backend) {
		// One heartbeat at the start (counting what the pool did before
		// it: a few runs at most) and none after, for the test's length:
		// only the pool's last heartbeat, as Run returns, can count the
		// 20 runs.
		a, st, _ := b.build(t, items(4))
		var ran atomic.Int64
		p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
			ran.Add(1)
			return nil
		}), worker.Config{Concurrency: 2, LeaseTTL: 2 * time.Second, Heartbeat: 10 * time.Minute})
		must(t, err)
		stop, _ := runPool(t, p)
		redistest.Eventually(t, "20 runs", 10*time.Second, func() bool { return ran.Load() >= 20 })
		must(t, stop(5*time.Second))
		grants, runs := throughputTotals(t, st)
		if n := ran.Load(); runs < n || grants < runs {
			t.Fatalf("throughput after Run returned: %d grants, %d runs; want the %d task runs counted", grants, runs, n)
		}
	}},
	{"batch-history-names-failed-items-with-their-errors", func(t *testing.T, b backend) {
		its := items(5)
		a, st, _ := b.build(t, its)
		p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
			if job.Item == "item-02" {
				return fmt.Errorf("bad 02, attempt %d", job.Attempt)
			}
			return nil
		}), worker.Config{Mode: worker.ModeBatch, BatchID: "hb", Concurrency: 2, LeaseTTL: 2 * time.Second,
			MaxAttempts: 2, Backoff: 5 * time.Millisecond, MaxBackoff: 5 * time.Millisecond})
		must(t, err)
		_, done := runPool(t, p)
		if err := waitErr(t, "batch", done, 20*time.Second); !errors.Is(err, worker.ErrBatchFailed) {
			t.Fatalf("Run = %v, want ErrBatchFailed", err)
		}
		ctx := context.Background()
		page, next, err := st.FailedItems(ctx, "hb", "", 100)
		must(t, err)
		if len(page) != 1 || next != "" || page[0] != (worker.FailedItem{Item: "item-02", Error: "bad 02, attempt 2"}) {
			t.Fatalf("FailedItems = %+v, %q; want item-02 with its last error", page, next)
		}
		h, found, err := st.LastRun(ctx, "item-02")
		must(t, err)
		if !found || h.Outcome != worker.OutcomeFailure || h.Attempts != 2 || h.Error != "bad 02, attempt 2" {
			t.Fatalf("LastRun(item-02) = %+v, %v", h, found)
		}
		h, found, err = st.LastRun(ctx, "item-04")
		must(t, err)
		if !found || h.Outcome != worker.OutcomeSuccess || h.Attempts != 1 {
			t.Fatalf("LastRun(item-04) = %+v, %v", h, found)
		}
	}},
	{"exec-failure-keeps-exit-status-and-stderr-tail", func(t *testing.T, b backend) {
		a, st, _ := b.build(t, []string{"x"})
		task := &worker.ExecTask{Command: []string{"sh", "-c", `i=1; while [ $i -le 30 ]; do echo "err $i" >&2; echo "out $i"; i=$((i+1)); done; exit 3`}, KillGrace: 100 * time.Millisecond}
		p, err := worker.New(a, st, task, worker.Config{Mode: worker.ModeBatch, BatchID: "ex", LeaseTTL: 2 * time.Second, MaxAttempts: 1})
		must(t, err)
		_, done := runPool(t, p)
		if err := waitErr(t, "batch", done, 20*time.Second); !errors.Is(err, worker.ErrBatchFailed) {
			t.Fatalf("Run = %v, want ErrBatchFailed", err)
		}
		h, found, err := st.LastRun(context.Background(), "x")
		must(t, err)
		var want []string
		for i := 11; i <= 30; i++ {
			want = append(want, "err "+strconv.Itoa(i))
		}
		if !found || h.Outcome != worker.OutcomeFailure || h.ExitStatus != 3 || !strings.Contains(h.Error, "exit status 3") {
			t.Fatalf("LastRun(x) = %+v, %v; want a failure with exit status 3", h, found)
		}
		if h.Stderr != strings.Join(want, "\n") || h.StderrToken != h.Token {
			t.Fatalf("LastRun(x).Stderr = %q (token %d); want the last 20 stderr lines, no stdout, of run %d", h.Stderr, h.StderrToken, h.Token)
		}
	}},
	{"lost-lease-is-in-the-history", func(t *testing.T, b backend) {
		a, st, pool := b.build(t, []string{"only"})
		started := make(chan worker.Job, 1)
		var first atomic.Bool
		p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
			if first.CompareAndSwap(false, true) {
				started <- job
			}
			<-ctx.Done()
			return ctx.Err()
		}), worker.Config{LeaseTTL: 3 * time.Second, RefreshInterval: 50 * time.Millisecond, ShutdownGrace: time.Millisecond})
		must(t, err)
		stop, _ := runPool(t, p)
		job := <-started
		wantTrue(t, "Unlock")(pool.Unlock(context.Background(), job.Item))
		var h worker.ItemHistory
		redistest.Eventually(t, "the lost lease recorded", 5*time.Second, func() bool {
			var found bool
			h, found, err = st.LastRun(context.Background(), "only")
			must(t, err)
			return found
		})
		if h.Outcome != worker.OutcomeLeaseLost || h.Token != job.Token || h.Attempts != 1 || h.Runner != p.Config().ID {
			t.Fatalf("LastRun(only) = %+v; want lease_lost for token %d", h, job.Token)
		}
		must(t, stop(5*time.Second))
	}},
	{"history-and-registry-can-be-turned-off", func(t *testing.T, b backend) {
		a, st, _ := b.build(t, items(2))
		var runs atomic.Int64
		p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
			runs.Add(1)
			return nil
		}), worker.Config{LeaseTTL: 2 * time.Second, Heartbeat: -1, HistoryRetain: -1})
		must(t, err)
		stop, _ := runPool(t, p)
		redistest.Eventually(t, "runs", 5*time.Second, func() bool { return runs.Load() >= 4 })
		ctx := context.Background()
		rs, err := st.Runners(ctx)
		must(t, err)
		must(t, stop(5*time.Second))
		if len(rs) != 0 {
			t.Fatalf("Runners = %+v with Heartbeat -1", rs)
		}
		for _, it := range items(2) {
			if h, found, err := st.LastRun(ctx, it); err != nil || found {
				t.Fatalf("LastRun(%s) = %+v, %v, %v with HistoryRetain -1", it, h, found, err)
			}
		}
	}},
}

// throughputTotals is the grants and runs of the fleet's whole throughput
// window.
func throughputTotals(t *testing.T, r worker.Registry) (grants, runs int64) {
	t.Helper()
	pts, err := r.Throughput(context.Background())
	must(t, err)
	for _, pt := range pts {
		grants, runs = grants+pt.Grants, runs+pt.Runs
	}
	return grants, runs
}
