package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// TestSetConcurrency raises a running pool from 2 to 4 workers, then
// lowers it to 1: raising starts workers at once, lowering lets the
// running tasks finish (none is cancelled, no lease is lost) and then
// never has more than 1 task running.
func TestSetConcurrency(t *testing.T) {
	t.Parallel()
	pool, err := lock.NewMemoryLockPool(lock.MemoryConfig{})
	must(t, err)
	its := items(8)
	must(t, pool.Extend(context.Background(), its))
	a, err := allocator.NewMemory(pool, allocator.Config{})
	must(t, err)
	defer a.Close()
	g := newLedger(t)
	var mu sync.Mutex
	running, peak := 0, 0
	release := make(chan struct{})
	task := g.recording(func(ctx context.Context, job worker.Job) error {
		mu.Lock()
		running++
		peak = max(peak, running)
		mu.Unlock()
		defer func() { mu.Lock(); running--; mu.Unlock() }()
		select {
		case <-release:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		return nil
	})
	obs := &countingObserver{}
	obs.init()
	p, err := worker.New(a, worker.NewMemoryStore(pool), task, worker.Config{Concurrency: 2, LeaseTTL: 2 * time.Second, Observer: obs})
	must(t, err)
	stop, _ := runPool(t, p)

	waitRunning := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5*time.Second + redistest.Slack())
		for {
			mu.Lock()
			n := running
			mu.Unlock()
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d tasks running, want %d (%s)", n, want, redistest.SchedDelay())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitRunning(2)
	must(t, p.SetConcurrency(4))
	waitRunning(4)
	if got := p.Config().Concurrency; got != 4 {
		t.Errorf("Config().Concurrency = %d, want 4", got)
	}
	must(t, p.SetConcurrency(1))
	close(release) // every task finishes now; then one at a time
	deadline := time.Now().Add(5*time.Second + redistest.Slack())
	for live := 4; live > 1; {
		live = 0
		for _, w := range p.Status() {
			if w.State != worker.StateStopped {
				live++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still live after SetConcurrency(1) (%s)", live, redistest.SchedDelay())
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	peak = 0
	mu.Unlock()
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	if peak > 1 {
		t.Errorf("after SetConcurrency(1), %d tasks ran at once", peak)
	}
	mu.Unlock()
	must(t, stop(10*time.Second+redistest.Slack()))
	if n := obs.lost.Load(); n != 0 {
		t.Errorf("%d leases lost while resizing, want 0", n)
	}
	wantAllFree(t, a, its)

	if err := p.SetConcurrency(0); !errors.Is(err, worker.ErrInvalidConfig) {
		t.Errorf("SetConcurrency(0) = %v, want ErrInvalidConfig", err)
	}
}

// TestConfigValidateReportsEveryField: Validate names each bad field in a
// *FieldError that still matches the sentinel.
func TestConfigValidateReportsEveryField(t *testing.T) {
	t.Parallel()
	err := worker.Config{Mode: "sometimes", Concurrency: -1, Cooldown: -time.Second, BatchID: "a\nb"}.Validate()
	var fields []string
	for _, fe := range worker.FieldErrors(err) {
		fields = append(fields, fe.Field)
	}
	want := []string{"Mode", "Concurrency", "Cooldown", "BatchID"}
	if len(fields) != len(want) {
		t.Fatalf("fields %v, want %v (error %v)", fields, want, err)
	}
	for i := range want {
		if fields[i] != want[i] {
			t.Errorf("fields %v, want %v", fields, want)
		}
	}
	if !errors.Is(err, worker.ErrInvalidConfig) || !errors.Is(err, worker.ErrInvalidBatch) {
		t.Errorf("errors.Is(%v, ErrInvalidConfig/ErrInvalidBatch) = false", err)
	}
	var fe *worker.FieldError
	if !errors.As(err, &fe) || fe.Field != "Mode" {
		t.Errorf("errors.As: %v", fe)
	}
	task := &worker.ExecTask{Command: []string{"true"}, Env: []string{"SECRET=hunter2\x00"}, KillGrace: 9 * time.Second}
	err = worker.Config{}.ValidateTask(task)
	fields = fields[:0]
	for _, fe := range worker.FieldErrors(err) {
		fields = append(fields, fe.Field)
	}
	if len(fields) != 2 || fields[0] != "ExecTask.Env" || fields[1] != "ExecTask.KillGrace" {
		t.Errorf("ValidateTask fields %v, want [ExecTask.Env ExecTask.KillGrace] (%v)", fields, err)
	}
	if err != nil && (errors.Is(err, worker.ErrInvalidBatch) || containsSecret(err.Error())) {
		t.Errorf("ValidateTask error shows the env value: %v", err)
	}
}

func containsSecret(s string) bool { return strings.Contains(s, "hunter2") }
