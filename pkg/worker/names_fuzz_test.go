//go:build linux

package worker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// FuzzItemNames sends arbitrary item names through the memory backend's
// whole path: pool membership, the allocator, the worker store and a
// batch run of an ExecTask (through the exec supervisor, as the runner
// runs it) whose shell script writes "$RUNNER_ITEM" to a file.
//
// A valid name (1 to lock.MaxKeyLen bytes, no NUL byte) is leased under
// exactly that name and reaches the task byte for byte, once. An invalid
// one is refused with lock.ErrInvalidKey by every layer that takes a name,
// is not added to the pool (nor is a valid name added with it), and no
// task runs. The seeds run in every "go test"; to explore further:
//
//	go test -run '^$' -fuzz FuzzItemNames -fuzztime 60s -fuzzminimizetime 100x ./pkg/worker
//
// (A run's coverage varies with goroutine timing, so with the default
// -fuzzminimizetime of 60s the fuzzer spends most of its time minimizing
// inputs whose new coverage does not reproduce.)
func FuzzItemNames(f *testing.F) {
	for _, name := range []string{
		"a",
		strings.Repeat("x", lock.MaxKeyLen),
		strings.Repeat("é", lock.MaxKeyLen/2),       // 1024 bytes of two-byte runes
		strings.Repeat("x", lock.MaxKeyLen+1),       // one byte too long
		strings.Repeat("é", lock.MaxKeyLen/2) + "x", // 1025 bytes
		"",
		"a\x00b",
		"\x00",
		"line1\nline2",
		"\r\n",
		"$(touch pwned)",
		"`touch pwned`",
		"; rm -rf ./victim; touch pwned",
		`'"`,
		"\\",
		"-n",
		"%s%n%d",
		"a=b",
		"=",
		"*",
		"ключ-🔑-鍵",
		"\u202eevil\u202c",
		"\xff\xfe",
		" leading and trailing ",
	} {
		f.Add(name)
	}
	f.Fuzz(func(t *testing.T, name string) {
		valid := name != "" && len(name) <= lock.MaxKeyLen && !strings.ContainsRune(name, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()

		pool, err := lock.NewMemoryLockPool(lock.MemoryConfig{})
		if err != nil {
			t.Fatal(err)
		}
		alloc, err := allocator.NewMemory(pool, allocator.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer alloc.Close()
		store := worker.NewMemoryStore(pool)

		out := filepath.Join(t.TempDir(), "out")
		if err := os.Mkdir(out, 0o700); err != nil {
			t.Fatal(err)
		}
		exec := &worker.ExecTask{
			// The item is only ever data: a quoted expansion of an
			// environment variable, written with printf '%s'.
			Command: []string{"sh", "-c", `printf '%s' "$RUNNER_ITEM" > "$OUT_DIR/$RUNNER_TOKEN"`},
			Env:     []string{"OUT_DIR=" + out},
			Wrapper: true,
		}
		var runs atomic.Int64
		var leased atomic.Value // the Job.Item of the run
		task := worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
			runs.Add(1)
			leased.Store(job.Item)
			return exec.Run(ctx, job)
		})

		// A valid companion rides along: Extend is all or nothing.
		err = pool.Extend(ctx, []string{"companion", name})
		if !valid {
			wantInvalidKey(t, "Extend", err)
			if n, err := pool.Len(ctx); err != nil || n != 0 {
				t.Fatalf("pool has %d members (err %v) after a refused Extend; want 0", n, err)
			}
			_, err = pool.Contains(ctx, name)
			wantInvalidKey(t, "Contains", err)
			_, err = store.AddFailure(ctx, "", name)
			wantInvalidKey(t, "AddFailure", err)
			_, err = store.Failures(ctx, "", name)
			wantInvalidKey(t, "Failures", err)
			wantInvalidKey(t, "ClearFailures", store.ClearFailures(ctx, "", name))
			if name != "" { // an empty Prefer means "no preference"
				_, err = alloc.TryAcquire(ctx, "fuzz", allocator.AcquireOptions{Prefer: name, Exact: true})
				wantInvalidKey(t, "TryAcquire", err)
			}
		} else if err != nil {
			t.Fatalf("Extend(%q): %v", name, err)
		} else if err := pool.Shrink(ctx, []string{"companion"}); err != nil {
			t.Fatal(err)
		}

		p, err := worker.New(alloc, store, task, worker.Config{
			Mode: worker.ModeBatch, Concurrency: 1, BatchID: "fuzz", LeaseTTL: 10 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Run(ctx); err != nil {
			t.Fatalf("batch over item %q: %v", name, err)
		}

		files, err := os.ReadDir(out)
		if err != nil {
			t.Fatal(err)
		}
		if !valid {
			if runs.Load() != 0 || len(files) != 0 {
				t.Fatalf("invalid item %q: %d runs, %d files written; want none", name, runs.Load(), len(files))
			}
			return
		}
		if runs.Load() != 1 || len(files) != 1 {
			t.Fatalf("item %q: %d runs, %d files written; want exactly 1 of each", name, runs.Load(), len(files))
		}
		if got := leased.Load().(string); got != name {
			t.Fatalf("leased item %q, want %q", got, name)
		}
		if _, err := strconv.ParseInt(files[0].Name(), 10, 64); err != nil {
			t.Fatalf("file %q is not named by the token", files[0].Name())
		}
		got, err := os.ReadFile(filepath.Join(out, files[0].Name()))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != name {
			t.Fatalf("the task saw RUNNER_ITEM=%q, want %q", got, name)
		}
		prog, found, err := store.Progress(ctx, "fuzz")
		if err != nil || !found || prog.Total != 1 || prog.Done != 1 || prog.Failed != 0 {
			t.Fatalf("batch progress %+v found %v err %v; want 1 of 1 done", prog, found, err)
		}

		// The name keeps working in every layer: failure counts and an
		// exact lease.
		if n, err := store.AddFailure(ctx, "", name); err != nil || n != 1 {
			t.Fatalf("AddFailure(%q) = %d, %v; want 1", name, n, err)
		}
		if n, err := store.Failures(ctx, "", name); err != nil || n != 1 {
			t.Fatalf("Failures(%q) = %d, %v; want 1", name, n, err)
		}
		if err := store.ClearFailures(ctx, "", name); err != nil {
			t.Fatal(err)
		}
		l, err := alloc.TryAcquire(ctx, "fuzz", allocator.AcquireOptions{Prefer: name, Exact: true})
		if err != nil {
			t.Fatalf("TryAcquire(%q) after the batch: %v", name, err)
		}
		if l.Item() != name {
			t.Fatalf("leased %q, want %q", l.Item(), name)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func wantInvalidKey(t *testing.T, op string, err error) {
	t.Helper()
	if !errors.Is(err, lock.ErrInvalidKey) {
		t.Fatalf("%s: got %v, want an error wrapping lock.ErrInvalidKey", op, err)
	}
}
