package worker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/benchpair"
	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// build builds a fixture over a fresh pool holding items and returns its
// allocator, store and pool.
func (b backend) build(t testing.TB, items []string) (*allocator.Allocator, worker.Store, lock.Pool) {
	f := b.new(t, items)
	return f.alloc, f.store, f.pool
}

// ledger is a fenced record of task runs: it fails the test the moment
// an item has two live holders or a token that does not increase, and
// keeps every run for later checks.
type ledger struct {
	t       testing.TB
	mu      sync.Mutex
	holder  map[string]int64 // item -> token of the live run
	last    map[string]int64 // item -> highest token seen
	runs    map[string][]run
	overlap atomic.Int64
}

type run struct {
	token      int64
	attempt    int
	start, end time.Time
	ok         bool
}

func newLedger(t testing.TB) *ledger {
	return &ledger{t: t, holder: map[string]int64{}, last: map[string]int64{}, runs: map[string][]run{}}
}

func (g *ledger) begin(job worker.Job) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if tok, busy := g.holder[job.Item]; busy {
		g.overlap.Add(1)
		g.t.Errorf("item %q: run with token %d started while token %d still runs", job.Item, job.Token, tok)
	}
	if job.Token <= g.last[job.Item] {
		g.t.Errorf("item %q: token %d not above earlier %d", job.Item, job.Token, g.last[job.Item])
	}
	g.holder[job.Item] = job.Token
	g.last[job.Item] = job.Token
	g.runs[job.Item] = append(g.runs[job.Item], run{token: job.Token, attempt: job.Attempt, start: time.Now()})
}

func (g *ledger) end(job worker.Job, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holder[job.Item] == job.Token {
		delete(g.holder, job.Item)
	}
	rs := g.runs[job.Item]
	for i := range rs {
		if rs[i].token == job.Token {
			rs[i].end, rs[i].ok = time.Now(), ok
		}
	}
}

func (g *ledger) snapshot() map[string][]run {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string][]run{}
	for k, v := range g.runs {
		out[k] = slices.Clone(v)
	}
	return out
}

// recording wraps fn so every run goes through the ledger.
func (g *ledger) recording(fn func(ctx context.Context, job worker.Job) error) worker.Task {
	return worker.TaskFunc(func(ctx context.Context, job worker.Job) (err error) {
		g.begin(job)
		defer func() { g.end(job, err == nil) }()
		return fn(ctx, job)
	})
}

// stoppedFirstRun is a task whose first run sends its job on started and
// runs until its context ends, then sends the context's cause; later runs
// wait for shutdown.
func stoppedFirstRun() (worker.Task, <-chan worker.Job, <-chan error) {
	started := make(chan worker.Job, 1)
	cause := make(chan error, 1)
	return worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
		select {
		case started <- job:
		default:
			<-ctx.Done() // later runs: wait for shutdown
			return ctx.Err()
		}
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return ctx.Err()
	}), started, cause
}

func items(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("item-%02d", i)
	}
	return out
}

// runPool runs p in the background and returns a function that stops it
// (cancelling its context) and returns Run's error, bounded by within.
func runPool(t *testing.T, p *worker.Pool) (stop func(within time.Duration) error, done <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- p.Run(ctx) }()
	t.Cleanup(func() { p.Abort(); cancel() })
	return func(within time.Duration) error {
		cancel()
		select {
		case err := <-ch:
			return err
		case <-time.After(within):
			t.Fatalf("Run did not return within %v of cancel (%s)", within, redistest.SchedDelay())
			return nil
		}
	}, ch
}

// wantAllFree asserts every item can be leased at once: nothing was left
// held.
func wantAllFree(t *testing.T, a *allocator.Allocator, its []string) {
	t.Helper()
	ctx := context.Background()
	for _, it := range its {
		l, err := a.TryAcquire(ctx, "checker", allocator.AcquireOptions{Prefer: it, Exact: true})
		if err != nil {
			t.Fatalf("item %q not free after the pool stopped: %v", it, err)
		}
		must(t, l.Release(ctx))
	}
}

type poolBehaviour struct {
	name string
	fn   func(t *testing.T, b backend)
}

// TestPoolConformance runs every worker pool behaviour against every
// backend.
func TestPoolConformance(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, bh := range poolBehaviours {
			t.Run(bh.name, func(t *testing.T) {
				t.Parallel()
				bh.fn(t, b)
			})
		}
	})
}

var poolBehaviours = []poolBehaviour{
	{"loop-runs-every-item-with-one-holder-each", func(t *testing.T, b backend) {
		its := items(10)
		a, st, _ := b.build(t, its)
		g := newLedger(t)
		var runs atomic.Int64
		p, err := worker.New(a, st, g.recording(func(ctx context.Context, job worker.Job) error {
			runs.Add(1)
			time.Sleep(2 * time.Millisecond)
			return nil
		}), worker.Config{Concurrency: 8, LeaseTTL: 2 * time.Second})
		must(t, err)
		stop, _ := runPool(t, p)
		redistest.Eventually(t, "every item run twice", 10*time.Second, func() bool {
			snap := g.snapshot()
			for _, it := range its {
				if len(snap[it]) < 2 {
					return false
				}
			}
			return true
		})
		must(t, stop(5*time.Second))
		if p.Held() != 0 {
			t.Fatalf("Held = %d after Run returned", p.Held())
		}
		wantAllFree(t, a, its)
		for _, w := range p.Status() {
			if w.State != worker.StateStopped {
				t.Fatalf("worker %d is %s after Run returned", w.ID, w.State)
			}
		}
	}},
	{"batch-runs-every-item-exactly-once", func(t *testing.T, b backend) {
		its := items(30)
		a, st, _ := b.build(t, its)
		g := newLedger(t)
		p, err := worker.New(a, st, g.recording(func(ctx context.Context, job worker.Job) error {
			time.Sleep(time.Millisecond)
			return nil
		}), worker.Config{Mode: worker.ModeBatch, BatchID: "b1", Concurrency: 4, LeaseTTL: 2 * time.Second})
		must(t, err)
		_, done := runPool(t, p)
		must(t, waitErr(t, "batch", done, 20*time.Second))
		snap := g.snapshot()
		for _, it := range its {
			if n := len(snap[it]); n != 1 || !snap[it][0].ok {
				t.Fatalf("item %q ran %d times (%+v), want once with success", it, n, snap[it])
			}
		}
		prog, found, err := st.Progress(context.Background(), "b1")
		must(t, err)
		if !found || prog.Done != 30 || prog.Failed != 0 || !prog.Complete() || prog.Finished.IsZero() {
			t.Fatalf("Progress = %+v, %v", prog, found)
		}
		wantAllFree(t, a, its)
		// The same batch again has nothing left to do.
		p2, err := worker.New(a, st, g.recording(func(context.Context, worker.Job) error { return nil }),
			worker.Config{Mode: worker.ModeBatch, BatchID: "b1", LeaseTTL: 2 * time.Second})
		must(t, err)
		must(t, p2.Run(context.Background()))
		if n := len(g.snapshot()["item-00"]); n != 1 {
			t.Fatalf("a finished batch ran item-00 again (%d runs)", n)
		}
	}},
	{"batch-reports-items-that-exhaust-attempts", func(t *testing.T, b backend) {
		its := items(6)
		a, st, _ := b.build(t, its)
		g := newLedger(t)
		p, err := worker.New(a, st, g.recording(func(ctx context.Context, job worker.Job) error {
			switch job.Item {
			case "item-01":
				return errors.New("always fails")
			case "item-02":
				if job.Attempt == 1 {
					panic("first attempt panics")
				}
			case "item-03":
				if job.Attempt < 3 {
					return fmt.Errorf("attempt %d fails", job.Attempt)
				}
			}
			return nil
		}), worker.Config{Mode: worker.ModeBatch, BatchID: "b", Concurrency: 3, LeaseTTL: 2 * time.Second,
			MaxAttempts: 3, Backoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
		must(t, err)
		_, done := runPool(t, p)
		err = waitErr(t, "batch", done, 20*time.Second)
		if !errors.Is(err, worker.ErrBatchFailed) {
			t.Fatalf("Run = %v, want ErrBatchFailed", err)
		}
		snap := g.snapshot()
		attempts := func(it string) []int {
			var out []int
			for _, r := range snap[it] {
				out = append(out, r.attempt)
			}
			return out
		}
		for it, want := range map[string][]int{"item-00": {1}, "item-01": {1, 2, 3}, "item-02": {1, 2}, "item-03": {1, 2, 3}} {
			if got := attempts(it); !slices.Equal(got, want) {
				t.Fatalf("item %q attempts %v, want %v", it, got, want)
			}
		}
		prog, _, err := st.Progress(context.Background(), "b")
		must(t, err)
		if prog.Done != 5 || prog.Failed != 1 {
			t.Fatalf("Progress = %+v, want 5 done, 1 failed", prog)
		}
	}},
	{"batch-drops-items-removed-from-the-pool", func(t *testing.T, b backend) {
		its := items(4)
		a, st, pool := b.build(t, its)
		g := newLedger(t)
		removed := make(chan struct{})
		p, err := worker.New(a, st, g.recording(func(ctx context.Context, job worker.Job) error {
			if job.Item == "item-00" {
				// While item-00 runs, someone removes item-03, which an
				// outside lock keeps from ever being leased by the batch.
				<-removed
			}
			return nil
		}), worker.Config{Mode: worker.ModeBatch, BatchID: "b", Concurrency: 1, LeaseTTL: 2 * time.Second})
		must(t, err)
		wantTrue(t, "Lock item-03")(pool.Lock(context.Background(), "item-03", "outsider", time.Minute))
		_, done := runPool(t, p)
		redistest.Eventually(t, "batch started with 4 items", 5*time.Second, func() bool {
			prog, found, err := st.Progress(context.Background(), "b")
			return err == nil && found && prog.Total == 4
		})
		must(t, pool.Shrink(context.Background(), []string{"item-03"}))
		close(removed)
		must(t, waitErr(t, "batch", done, 10*time.Second))
		prog, _, err := st.Progress(context.Background(), "b")
		must(t, err)
		if prog.Total != 3 || prog.Done != 3 || !prog.Complete() {
			t.Fatalf("Progress = %+v, want 3 of 3 done after item-03 left the pool", prog)
		}
	}},
	{"a-fatal-error-drains-the-other-workers", func(t *testing.T, b backend) {
		a, st, _ := b.build(t, items(3))
		blocked := make(chan struct{}, 3)
		var cause atomic.Value
		p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
			if job.Worker == 0 {
				blocked <- struct{}{}
				<-ctx.Done()
				cause.Store(context.Cause(ctx))
				return ctx.Err()
			}
			<-blocked // worker 1 finishes once worker 0 is busy
			return nil
		}), worker.Config{Concurrency: 2, LeaseTTL: 30 * time.Second, ShutdownGrace: 100 * time.Millisecond})
		must(t, err)
		_, done := runPool(t, p)
		redistest.Eventually(t, "worker 0 busy", 5*time.Second, func() bool { return len(blocked) > 0 || p.Held() == 2 })
		// The allocator closes under the pool: the next Acquire is fatal.
		must(t, a.Close())
		blocked <- struct{}{}
		err = waitErr(t, "Run after a fatal error", done, 5*time.Second)
		if !errors.Is(err, allocator.ErrClosed) {
			t.Fatalf("Run = %v, want ErrClosed", err)
		}
		if c, _ := cause.Load().(error); !errors.Is(c, worker.ErrShutdown) {
			t.Fatalf("the other worker's task ended with cause %v, want ErrShutdown after the grace", c)
		}
	}},
	{"lost-lease-cancels-the-task-with-ErrLeaseLost", func(t *testing.T, b backend) {
		a, st, pool := b.build(t, []string{"only"})
		obs := &countingObserver{}
		task, started, cause := stoppedFirstRun()
		p, err := worker.New(a, st, task, worker.Config{LeaseTTL: 3 * time.Second, RefreshInterval: 100 * time.Millisecond, Observer: obs, ShutdownGrace: time.Millisecond})
		must(t, err)
		stop, _ := runPool(t, p)
		job := <-started
		// Someone removes the lock out from under the worker.
		removed := time.Now()
		wantTrue(t, "Unlock")(pool.Unlock(context.Background(), job.Item))
		select {
		case c := <-cause:
			if !errors.Is(c, worker.ErrLeaseLost) {
				t.Fatalf("task cause %v, want ErrLeaseLost", c)
			}
			if d := time.Since(removed); d > 100*time.Millisecond+300*time.Millisecond {
				t.Fatalf("task stopped %v after its lock was removed; refresh interval is 100ms (%s)", d, redistest.SchedDelay())
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("task not cancelled within 3s of losing its lock (%s)", redistest.SchedDelay())
		}
		redistest.Eventually(t, "LeaseLost observed", 2*time.Second, func() bool { return obs.lost.Load() == 1 })
		must(t, stop(5*time.Second))
	}},
	{"cancelled-lease-stops-the-task-at-once", func(t *testing.T, b backend) {
		a, st, _ := b.build(t, []string{"only"})
		obs := &countingObserver{}
		task, started, cause := stoppedFirstRun()
		p, err := worker.New(a, st, task, worker.Config{LeaseTTL: 10 * time.Second, RefreshInterval: 3 * time.Second, Observer: obs, ShutdownGrace: time.Millisecond})
		must(t, err)
		stop, _ := runPool(t, p)
		job := <-started
		cancelled := time.Now()
		must(t, a.Cancel(context.Background(), job.Item))
		// Told at once, not at the next refresh 3s away.
		bound := 500*time.Millisecond + redistest.Slack()
		select {
		case c := <-cause:
			var lost *allocator.LostError
			if !errors.As(c, &lost) || lost.Reason != allocator.LostCancelled {
				t.Fatalf("task cause %v, want a LostError of reason %q", c, allocator.LostCancelled)
			}
			t.Logf("task stopped %v after Cancel", time.Since(cancelled))
		case <-time.After(bound):
			t.Fatalf("task not stopped within %v of Cancel (%s)", bound, redistest.SchedDelay())
		}
		redistest.Eventually(t, "LeaseLost observed", 2*time.Second, func() bool { return obs.lost.Load() == 1 })
		must(t, stop(5*time.Second))
	}},
	{"pause-holds-new-runs-until-resume", func(t *testing.T, b backend) {
		a, st, _ := b.build(t, items(2))
		var mu sync.Mutex
		var granted []time.Time // each run's grant, by the server's clock
		p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
			mu.Lock()
			granted = append(granted, job.Lease.Deadline().Add(-job.Lease.TTL()))
			mu.Unlock()
			return nil
		}), worker.Config{Concurrency: 2, LeaseTTL: 5 * time.Second})
		must(t, err)
		ctx := context.Background()
		runs := func() int {
			mu.Lock()
			defer mu.Unlock()
			return len(granted)
		}
		stop, _ := runPool(t, p)
		redistest.Eventually(t, "runs before the pause", 5*time.Second, func() bool { return runs() >= 10 })
		since, err := a.Pause(ctx)
		must(t, err)
		time.Sleep(500 * time.Millisecond)
		mu.Lock()
		for _, g := range granted {
			if g.After(since) {
				t.Errorf("a run's lease was granted at %v, after the pause at %v", g, since)
			}
		}
		paused := len(granted)
		mu.Unlock()
		must(t, a.Resume(ctx))
		redistest.Eventually(t, "runs after the resume", 5*time.Second, func() bool { return runs() >= paused+10 })
		must(t, stop(5*time.Second))
	}},
	{"task-timeout-is-a-failure", func(t *testing.T, b backend) {
		a, st, _ := b.build(t, []string{"slow"})
		obs := &countingObserver{}
		cause := make(chan error, 4)
		p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return ctx.Err()
		}), worker.Config{Mode: worker.ModeBatch, LeaseTTL: 2 * time.Second, TaskTimeout: 50 * time.Millisecond,
			MaxAttempts: 2, Backoff: 10 * time.Millisecond, Observer: obs})
		must(t, err)
		_, done := runPool(t, p)
		if err := waitErr(t, "batch", done, 10*time.Second); !errors.Is(err, worker.ErrBatchFailed) {
			t.Fatalf("Run = %v, want ErrBatchFailed", err)
		}
		for range 2 {
			if c := <-cause; !errors.Is(c, worker.ErrTaskTimeout) {
				t.Fatalf("cause %v, want ErrTaskTimeout", c)
			}
		}
		if n := obs.outcomes[worker.OutcomeTimeout].Load(); n != 2 {
			t.Fatalf("%d timeouts observed, want 2", n)
		}
	}},
	{"shutdown-lets-tasks-finish-then-frees-items", func(t *testing.T, b backend) {
		its := items(4)
		a, st, _ := b.build(t, its)
		g := newLedger(t)
		var running atomic.Int64
		p, err := worker.New(a, st, g.recording(func(ctx context.Context, job worker.Job) error {
			running.Add(1)
			defer running.Add(-1)
			select {
			case <-time.After(300 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return fmt.Errorf("cancelled: %w", context.Cause(ctx))
			}
		}), worker.Config{Concurrency: 4, LeaseTTL: 30 * time.Second, ShutdownGrace: 5 * time.Second})
		must(t, err)
		stop, _ := runPool(t, p)
		redistest.Eventually(t, "4 tasks running", 5*time.Second, func() bool { return running.Load() == 4 })
		must(t, stop(5*time.Second))
		for it, rs := range g.snapshot() {
			for _, r := range rs {
				if !r.ok {
					t.Fatalf("item %q run %d was cancelled despite the grace period", it, r.token)
				}
			}
		}
		wantAllFree(t, a, its) // at once, not after the 30s TTL
	}},
	{"shutdown-grace-over-cancels-with-ErrShutdown", func(t *testing.T, b backend) {
		its := items(3)
		a, st, _ := b.build(t, its)
		causes := make(chan error, 3)
		var running atomic.Int64
		p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
			running.Add(1)
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return ctx.Err()
		}), worker.Config{Concurrency: 3, LeaseTTL: 30 * time.Second, ShutdownGrace: 100 * time.Millisecond})
		must(t, err)
		stop, _ := runPool(t, p)
		redistest.Eventually(t, "3 tasks running", 5*time.Second, func() bool { return running.Load() == 3 })
		began := time.Now()
		must(t, stop(5*time.Second))
		if d := time.Since(began); d < 100*time.Millisecond {
			t.Fatalf("Run returned %v after cancel, before the 100ms grace", d)
		}
		for range 3 {
			if c := <-causes; !errors.Is(c, worker.ErrShutdown) {
				t.Fatalf("cause %v, want ErrShutdown", c)
			}
		}
		wantAllFree(t, a, its)
		// Cancelled runs are not failures.
		for _, it := range its {
			n, err := st.Failures(context.Background(), "", it)
			must(t, err)
			if n != 0 {
				t.Fatalf("item %q has %d failures after a shutdown", it, n)
			}
		}
	}},
	{"abort-cancels-at-once", func(t *testing.T, b backend) {
		its := items(2)
		a, st, _ := b.build(t, its)
		var running atomic.Int64
		p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
			running.Add(1)
			<-ctx.Done()
			return ctx.Err()
		}), worker.Config{Concurrency: 2, LeaseTTL: 30 * time.Second, ShutdownGrace: time.Hour})
		must(t, err)
		_, done := runPool(t, p)
		redistest.Eventually(t, "2 tasks running", 5*time.Second, func() bool { return running.Load() == 2 })
		p.Abort()
		must(t, waitErr(t, "after Abort", done, 5*time.Second))
		wantAllFree(t, a, its)
	}},
	{"loop-cooldown-and-quarantine-hold-items-back", func(t *testing.T, b backend) {
		a, st, _ := b.build(t, []string{"good", "bad"})
		g := newLedger(t)
		p, err := worker.New(a, st, g.recording(func(ctx context.Context, job worker.Job) error {
			if job.Item == "bad" {
				return errors.New("bad item")
			}
			return nil
		}), worker.Config{Concurrency: 2, LeaseTTL: 2 * time.Second, Cooldown: 150 * time.Millisecond,
			MaxAttempts: 2, Backoff: 20 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Quarantine: 5 * time.Second})
		must(t, err)
		stop, _ := runPool(t, p)
		time.Sleep(1200 * time.Millisecond)
		must(t, stop(5*time.Second))
		snap := g.snapshot()
		good := snap["good"]
		if len(good) < 3 || len(good) > 9 {
			t.Fatalf("good ran %d times in 1.2s with a 150ms cooldown", len(good))
		}
		for i := 1; i < len(good); i++ {
			// The cooldown is measured by the store's clock from the
			// release, which comes after the ledger's end.
			if gap := good[i].start.Sub(good[i-1].end); gap < 140*time.Millisecond {
				t.Fatalf("good ran again %v after its last run; cooldown 150ms", gap)
			}
		}
		if n := len(snap["bad"]); n != 2 {
			t.Fatalf("bad ran %d times; want 2 (MaxAttempts), then quarantine for 5s", n)
		}
		if snap["bad"][1].attempt != 2 {
			t.Fatalf("bad's second run is attempt %d", snap["bad"][1].attempt)
		}
	}},
}

// countingObserver counts the pool's events.
type countingObserver struct {
	worker.NopObserver
	lost     atomic.Int64
	outcomes map[worker.Outcome]*atomic.Int64
	once     sync.Once
}

func (o *countingObserver) init() {
	o.once.Do(func() {
		o.outcomes = map[worker.Outcome]*atomic.Int64{}
		for _, oc := range []worker.Outcome{worker.OutcomeSuccess, worker.OutcomeFailure, worker.OutcomePanic,
			worker.OutcomeTimeout, worker.OutcomeLeaseLost, worker.OutcomeCancelled} {
			o.outcomes[oc] = new(atomic.Int64)
		}
	})
}

func (o *countingObserver) LeaseLost(worker.Job) { o.lost.Add(1) }

func (o *countingObserver) TaskDone(_ worker.Job, oc worker.Outcome, _ time.Duration) {
	o.init()
	o.outcomes[oc].Add(1)
}

func wantTrue(t *testing.T, what string) func(bool, error) {
	return func(ok bool, err error) {
		t.Helper()
		if err != nil || !ok {
			t.Fatalf("%s = %v, %v; want true", what, ok, err)
		}
	}
}

// TestPoolBatchStateLost: the batch's keys vanish mid-run (a Redis restart
// without persistence does this): Run must say so, not report success.
func TestPoolBatchStateLost(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	f := newRedisFixture(t, c, redistest.Prefix(t), allocator.Config{}, items(6))
	a, st, pool := f.alloc, f.store, f.pool.(*lock.RedisLockPool)
	var runs atomic.Int64
	p, err := worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
		if runs.Add(1) == 2 {
			keys, err := c.Keys(ctx, pool.Keys().BatchPattern()).Result()
			if err == nil && len(keys) > 0 {
				err = c.Del(ctx, keys...).Err()
			}
			if err != nil {
				t.Error(err)
			}
		}
		return nil
	}), worker.Config{Mode: worker.ModeBatch, BatchID: "lost", LeaseTTL: 2 * time.Second})
	must(t, err)
	_, done := runPool(t, p)
	if err := waitErr(t, "batch", done, 10*time.Second); !errors.Is(err, worker.ErrBatchLost) {
		t.Fatalf("Run = %v after the batch's keys vanished, want ErrBatchLost", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	pool, err := lock.NewMemoryLockPool(lock.MemoryConfig{})
	must(t, err)
	a, err := allocator.NewMemory(pool, allocator.Config{})
	must(t, err)
	defer a.Close()
	st := worker.NewMemoryStore(pool)
	task := worker.TaskFunc(func(context.Context, worker.Job) error { return nil })
	for name, cfg := range map[string]worker.Config{
		"mode":             {Mode: "sometimes"},
		"concurrency":      {Concurrency: -1},
		"lease ttl":        {LeaseTTL: time.Millisecond},
		"refresh interval": {LeaseTTL: time.Second, RefreshInterval: 600 * time.Millisecond},
		"safety margin":    {LeaseTTL: time.Second, RefreshInterval: 400 * time.Millisecond, SafetyMargin: 700 * time.Millisecond},
		"cooldown":         {Cooldown: -time.Second},
		"max attempts":     {MaxAttempts: -1},
		"max backoff":      {Backoff: time.Minute, MaxBackoff: time.Second},
		"batch id":         {BatchID: "a\x00b"},
		"heartbeat":        {Heartbeat: time.Millisecond},
		"history retain":   {HistoryRetain: time.Microsecond},
		"version length":   {Version: strings.Repeat("v", 129)},
		"version newline":  {Version: "v1\nv2"},
		"id length":        {ID: strings.Repeat("h", worker.MaxRunnerID+1)},
		"id NUL":           {ID: "h\x00:1"},
	} {
		if _, err := worker.New(a, st, task, cfg); !errors.Is(err, worker.ErrInvalidConfig) && !errors.Is(err, worker.ErrInvalidBatch) {
			t.Errorf("%s: New = %v, want ErrInvalidConfig", name, err)
		}
	}
	// An exec task must be killed before a lost lease can expire.
	slow := &worker.ExecTask{Command: []string{"true"}, KillGrace: 2 * time.Second}
	if _, err := worker.New(a, st, slow, worker.Config{LeaseTTL: 10 * time.Second}); !errors.Is(err, worker.ErrInvalidConfig) {
		t.Errorf("KillGrace 2s with SafetyMargin 2s: New = %v, want ErrInvalidConfig", err)
	}
	if _, err := worker.New(a, st, slow, worker.Config{LeaseTTL: 30 * time.Second}); err != nil {
		t.Errorf("KillGrace 2s with SafetyMargin 6s: %v", err)
	}
	if _, err := worker.New(nil, st, task, worker.Config{}); !errors.Is(err, worker.ErrInvalidConfig) {
		t.Errorf("nil allocator: %v", err)
	}
	if _, err := worker.New(a, nil, task, worker.Config{}); !errors.Is(err, worker.ErrInvalidConfig) {
		t.Errorf("nil store: %v", err)
	}
	if _, err := worker.New(a, st, nil, worker.Config{}); !errors.Is(err, worker.ErrInvalidConfig) {
		t.Errorf("nil task: %v", err)
	}
}

// tripFixture is a Redis fixture over n items whose client counts its
// round trips, with no background sync: only the runs' traffic counts.
func tripFixture(t *testing.T, n int) (*fixture, *benchpair.RoundTrips) {
	c := redis.NewClient(&redis.Options{Addr: redistest.Addr(t)})
	t.Cleanup(func() { _ = c.Close() })
	trips := &benchpair.RoundTrips{}
	c.AddHook(trips)
	return newRedisFixture(t, c, redistest.Prefix(t), allocator.Config{SyncInterval: time.Hour, FullSyncInterval: time.Hour}, itemNames(n)), trips
}

// TestLoopRunIsOneRoundTrip: in loop mode a run's end (its failure count,
// the release or hold back) and the next grant are one script, so a
// worker going from item to item makes one round trip per run: successes,
// failures (counted) and cooldowns alike. (16 items: with fewer, all may be
// cooling down at once, and the worker waits in Acquire.)
func TestLoopRunIsOneRoundTrip(t *testing.T) {
	t.Parallel()
	f, trips := tripFixture(t, 16)
	const runs = 200
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var n atomic.Int64
	var from, to int64
	p, err := worker.New(f.alloc, f.store, worker.TaskFunc(func(_ context.Context, job worker.Job) error {
		switch n.Add(1) {
		case 1:
			from = trips.N()
		case runs + 1:
			to = trips.N()
			cancel()
		}
		if job.Attempt == 1 && job.Item == "item-1" {
			return errors.New("item-1 fails once")
		}
		return nil
	}), worker.Config{Concurrency: 1, LeaseTTL: time.Minute, Backoff: time.Millisecond, MaxBackoff: time.Millisecond, Cooldown: time.Millisecond})
	must(t, err)
	must(t, p.Run(ctx))
	if got := to - from; got > runs+runs/20 {
		t.Fatalf("%d round trips for %d loop runs; want about one per run", got, runs)
	}
	t.Logf("%d round trips for %d loop runs", to-from, runs)
}

// itemNames is item-0 .. item-(n-1).
func itemNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("item-%d", i)
	}
	return out
}

// TestBatchRunIsTwoRoundTrips: in batch mode a run that finishes its item
// makes two round trips, Finish (the result, under the lease check) and
// Lease.Next, which ends the lease and grants an item still pending in the
// batch with its batch failure count; a retry makes one, Next, counting
// the failure in the batch's failures HASH.
func TestBatchRunIsTwoRoundTrips(t *testing.T) {
	t.Parallel()
	f, trips := tripFixture(t, 400)
	const runs = 200
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var n atomic.Int64
	var from, to int64
	var mu sync.Mutex
	failed := map[string]bool{} // items that failed once
	var wrong []string
	p, err := worker.New(f.alloc, f.store, worker.TaskFunc(func(_ context.Context, job worker.Job) error {
		i := n.Add(1)
		switch i {
		case 1:
			from = trips.N()
		case runs + 1:
			to = trips.N()
			cancel()
		}
		mu.Lock()
		defer mu.Unlock()
		if failed[job.Item] != (job.Attempt == 2) || job.Attempt > 2 {
			wrong = append(wrong, fmt.Sprintf("%s as attempt %d", job.Item, job.Attempt))
		}
		if i%10 == 0 && job.Attempt == 1 {
			failed[job.Item] = true
			return errors.New("every tenth run fails once")
		}
		return nil
	}), worker.Config{Mode: worker.ModeBatch, BatchID: "rt", Concurrency: 1, LeaseTTL: time.Minute, Backoff: 2 * time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	must(t, err)
	must(t, p.Run(ctx))
	if got := to - from; got > 2*runs+runs/10 {
		t.Fatalf("%d round trips for %d batch runs; want about two per run", got, runs)
	}
	t.Logf("%d round trips for %d batch runs", to-from, runs)
	mu.Lock()
	defer mu.Unlock()
	if len(wrong) > 0 {
		t.Fatalf("ran %v; want attempt 1 for a new item, 2 for one that failed once (the batch's count, read by Next)", wrong)
	}
}
