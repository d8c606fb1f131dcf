package worker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/failcount"
	"github.com/lockpool/lockpool/internal/memberset"
	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/keyspace"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// storeEnv is one test's store, pool and allocator (its fixture), with
// the test and a context bounding it.
type storeEnv struct {
	t   *testing.T
	ctx context.Context
	*fixture
}

// env builds a fixture over a fresh empty pool for one store test.
func (b backend) env(t *testing.T) *storeEnv {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	return &storeEnv{t: t, ctx: ctx, fixture: b.new(t, nil)}
}

type storeBehaviour struct {
	name string
	fn   func(t *testing.T, e *storeEnv)
}

// TestStoreConformance runs every Store behaviour against every backend.
func TestStoreConformance(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, bh := range storeBehaviours {
			t.Run(bh.name, func(t *testing.T) {
				t.Parallel()
				bh.fn(t, b.env(t))
			})
		}
	})
}

var storeBehaviours = []storeBehaviour{
	{"failures-count-and-clear-per-scope", func(t *testing.T, e *storeEnv) {
		st := e.store
		e.wantFailures("", "a", 0)
		for want := 1; want <= 3; want++ {
			n, err := st.AddFailure(e.ctx, "", "a")
			must(t, err)
			if n != want {
				t.Fatalf("AddFailure(loop, a) #%d = %d, want %d", want, n, want)
			}
		}
		n, err := st.AddFailure(e.ctx, "b1", "a")
		must(t, err)
		if n != 1 {
			t.Fatalf("AddFailure(b1, a) = %d, want 1: scopes must not share counts", n)
		}
		_, err = st.AddFailure(e.ctx, "", "other")
		must(t, err)
		e.wantFailures("", "a", 3)
		e.wantFailures("b1", "a", 1)
		e.wantFailures("b2", "a", 0)
		e.wantFailures("", "other", 1)

		must(t, st.ClearFailures(e.ctx, "", "a"))
		e.wantFailures("", "a", 0)
		e.wantFailures("b1", "a", 1)
		e.wantFailures("", "other", 1)
		must(t, st.ClearFailures(e.ctx, "b1", "a"))
		e.wantFailures("b1", "a", 0)
		must(t, st.ClearFailures(e.ctx, "b1", "never-failed"))
		n, err = st.AddFailure(e.ctx, "", "a")
		must(t, err)
		if n != 1 {
			t.Fatalf("AddFailure after ClearFailures = %d, want 1", n)
		}
	}},
	{"stores-over-one-pool-share-state", func(t *testing.T, e *storeEnv) {
		e.extend("a", "b")
		_, err := e.store.AddFailure(e.ctx, "", "a")
		must(t, err)
		start := e.start("b1", 2)
		other := e.again()
		if n, err := other.Failures(e.ctx, "", "a"); err != nil || n != 1 {
			t.Fatalf("second store: Failures(a) = %d, %v; want 1", n, err)
		}
		p, err := other.StartBatch(e.ctx, "b1")
		must(t, err)
		if !p.Started.Equal(start.Started) || p.Total != 2 {
			t.Fatalf("second store joined batch b1 as %+v, want the first store's %+v", p, start)
		}
		e.finish(e.lease("a"), true)
		if ok, err := other.IsPending(e.ctx, "b1", "a"); err != nil || ok {
			t.Fatalf("second store: IsPending(a) = %v, %v after the first finished it; want false", ok, err)
		}
	}},
	{"start-batch-snapshots-the-pool", func(t *testing.T, e *storeEnv) {
		e.extend("a", "b", "c")
		before := e.clock()
		p := e.start("b1", 3)
		after := e.clock()
		if p.Done != 0 || p.Failed != 0 || p.Complete() || !p.Finished.IsZero() || p.Pending() != 3 {
			t.Fatalf("new batch = %+v, want 3 pending and not finished", p)
		}
		wantWithin(t, "Started", p.Started, before, after)

		e.extend("d")
		again := e.start("b1", 3)
		if again.Total != p.Total || again.Done != p.Done || again.Failed != p.Failed || !again.Started.Equal(p.Started) || !again.Finished.Equal(p.Finished) {
			t.Fatalf("second StartBatch = %+v, want the first %+v", again, p)
		}
		e.wantPending("b1", "a", "b", "c")
		if ok, err := e.store.IsPending(e.ctx, "b1", "d"); err != nil || ok {
			t.Fatalf("IsPending(d), added after the start, = %v, %v; want false", ok, err)
		}

		// Starting again after progress keeps it.
		e.finish(e.lease("a"), true)
		p = e.start("b1", 3)
		if p.Done != 1 {
			t.Fatalf("StartBatch after one item finished = %+v, want Done 1: it must not reset", p)
		}
		e.wantPending("b1", "b", "c")

		// Another id is another snapshot.
		e.start("b2", 4)
		e.wantPending("b2", "a", "b", "c", "d")
	}},
	{"concurrent-starts-create-the-batch-once", func(t *testing.T, e *storeEnv) {
		e.extend(stItems("i", 50)...)
		const n = 16
		stores := make([]worker.Store, n)
		for i := range stores {
			stores[i] = e.again()
		}
		res := make([]worker.Progress, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { res[i], errs[i] = stores[i].StartBatch(e.ctx, "b1") })
		}
		// Members added meanwhile may or may not be in the batch, but
		// every starter must see the one batch.
		must(t, e.pool.Extend(e.ctx, []string{"late"}))
		wg.Wait()
		for i := range n {
			must(t, errs[i])
			if res[i].Total != res[0].Total || !res[i].Started.Equal(res[0].Started) || res[i].Done != 0 {
				t.Fatalf("StartBatch #%d = %+v, #0 = %+v; want the same batch", i, res[i], res[0])
			}
		}
		if res[0].Total != 50 && res[0].Total != 51 {
			t.Fatalf("Total = %d, want 50 or 51", res[0].Total)
		}
	}},
	{"pending-samples-only-pending-items", func(t *testing.T, e *storeEnv) {
		all := stItems("i", 20)
		e.extend(all...)
		e.start("b1", 20)
		for _, it := range all[:5] {
			e.finish(e.lease(it), true)
		}
		for _, it := range all[5:8] {
			e.finish(e.lease(it), false)
		}
		pending := all[8:]
		e.wantPending("b1", pending...)

		got, err := e.store.Pending(e.ctx, "b1", 5)
		must(t, err)
		if len(got) != 5 || hasDup(got) || !subset(got, pending) {
			t.Fatalf("Pending(5) = %q, want 5 distinct of %q", got, pending)
		}
		for _, n := range []int{0, -3} {
			got, err = e.store.Pending(e.ctx, "b1", n)
			must(t, err)
			if len(got) != 1 || !subset(got, pending) {
				t.Fatalf("Pending(%d) = %q, want 1 pending item: n is at least 1", n, got)
			}
		}
		seen := map[string]bool{}
		for range 100 {
			got, err = e.store.Pending(e.ctx, "b1", 1)
			must(t, err)
			seen[got[0]] = true
		}
		if len(seen) < 2 {
			t.Fatalf("100 calls of Pending(1) over %d items all gave %q; want a random sample", len(pending), got)
		}

		for _, it := range pending {
			e.finish(e.lease(it), true)
		}
		if got, err := e.store.Pending(e.ctx, "b1", 10); err != nil || len(got) != 0 {
			t.Fatalf("Pending of a finished batch = %q, %v; want none", got, err)
		}
	}},
	{"finish-with-the-current-lease-records", func(t *testing.T, e *storeEnv) {
		e.extend("a", "b")
		e.start("b1", 2)
		if n, err := e.store.AddFailure(e.ctx, "b1", "a"); err != nil || n != 1 {
			t.Fatalf("AddFailure(b1, a) = %d, %v", n, err)
		}
		if n, err := e.store.AddFailure(e.ctx, "", "a"); err != nil || n != 1 {
			t.Fatalf("AddFailure(loop, a) = %d, %v", n, err)
		}
		l := e.lease("a")
		if ok, err := e.store.Finish(e.ctx, "b1", l, true, 0, nil); err != nil || !ok {
			t.Fatalf("Finish(a) with the current lease = %v, %v; want true", ok, err)
		}
		e.wantProgress("b1", 2, 1, 0)
		if ok, err := e.store.IsPending(e.ctx, "b1", "a"); err != nil || ok {
			t.Fatalf("IsPending(a) after Finish = %v, %v; want false", ok, err)
		}
		e.wantFailures("b1", "a", 0)
		e.wantFailures("", "a", 1) // the loop scope is not the batch's

		// Once recorded, the item is not pending: the same lease, still
		// current, records nothing more.
		if ok, err := e.store.Finish(e.ctx, "b1", l, false, 0, nil); err != nil || ok {
			t.Fatalf("second Finish of a = %v, %v; want false", ok, err)
		}
		e.wantProgress("b1", 2, 1, 0)
		must(t, l.Release(e.ctx))
	}},
	{"finish-with-a-released-lease-records-nothing", func(t *testing.T, e *storeEnv) {
		e.extend("a")
		e.start("b1", 1)
		l := e.lease("a")
		must(t, l.Release(e.ctx))
		if ok, err := e.store.Finish(e.ctx, "b1", l, true, 0, nil); err != nil || ok {
			t.Fatalf("Finish with a released lease = %v, %v; want false", ok, err)
		}
		e.wantProgress("b1", 1, 0, 0)
		if ok, err := e.store.IsPending(e.ctx, "b1", "a"); err != nil || !ok {
			t.Fatalf("IsPending(a) = %v, %v; want true", ok, err)
		}
	}},
	{"finish-with-a-superseded-lease-records-nothing", func(t *testing.T, e *storeEnv) {
		e.extend("a")
		e.start("b1", 1)
		old, err := e.alloc.TryAcquire(e.ctx, "old", allocator.AcquireOptions{Prefer: "a", Exact: true, TTL: 30 * time.Millisecond})
		must(t, err)
		var cur *allocator.Lease
		redistest.Eventually(t, "item a leased again after the old lease expired", 5*time.Second, func() bool {
			l, err := e.alloc.TryAcquire(e.ctx, "new", allocator.AcquireOptions{Prefer: "a", Exact: true, TTL: time.Minute})
			if errors.Is(err, allocator.ErrNoFreeItem) {
				return false
			}
			must(t, err)
			cur = l
			return true
		})
		if cur.Token() <= old.Token() {
			t.Fatalf("new token %d not above old %d", cur.Token(), old.Token())
		}
		if ok, err := e.store.Finish(e.ctx, "b1", old, true, 0, nil); err != nil || ok {
			t.Fatalf("Finish with the superseded lease = %v, %v; want false", ok, err)
		}
		e.wantProgress("b1", 1, 0, 0)
		e.finish(cur, false)
		e.wantProgress("b1", 1, 0, 1)
	}},
	{"failed-items-go-to-failed", func(t *testing.T, e *storeEnv) {
		e.extend("a", "b", "c")
		e.start("b1", 3)
		e.finish(e.lease("a"), false)
		e.finish(e.lease("b"), true)
		p := e.wantProgress("b1", 3, 1, 1)
		if p.Pending() != 1 || p.Complete() {
			t.Fatalf("progress %+v: want 1 pending, not complete", p)
		}
		e.wantPending("b1", "c")
	}},
	{"retry-failed-puts-failed-items-back", func(t *testing.T, e *storeEnv) {
		e.extend("a", "b", "c")
		e.start("b1", 3)
		e.finishIn("b1", e.lease("a"), false, time.Hour)
		e.finishIn("b1", e.lease("b"), true, time.Hour)
		e.finishIn("b1", e.lease("c"), false, time.Hour)
		if p := e.wantProgress("b1", 3, 1, 2); !p.Complete() {
			t.Fatalf("progress %+v: want complete", p)
		}
		n, err := e.store.RetryFailed(e.ctx, "b1")
		if err != nil || n != 2 {
			t.Fatalf("RetryFailed = %d, %v; want 2", n, err)
		}
		p := e.wantProgress("b1", 3, 1, 0)
		if p.Complete() || !p.Finished.IsZero() || p.Pending() != 2 {
			t.Fatalf("progress after RetryFailed %+v: want running, 2 pending", p)
		}
		e.wantPending("b1", "a", "c")
		if page, _, err := e.store.FailedItems(e.ctx, "b1", "", 10); err != nil || len(page) != 0 {
			t.Fatalf("FailedItems after RetryFailed = %v, %v; want none", page, err)
		}
		// The retried items run again and can finish the batch again.
		e.finishIn("b1", e.lease("a"), true, 0)
		e.finishIn("b1", e.lease("c"), true, 0)
		if p := e.wantProgress("b1", 3, 3, 0); !p.Complete() {
			t.Fatalf("progress %+v: want complete", p)
		}
		if n, err := e.store.RetryFailed(e.ctx, "b1"); err != nil || n != 0 {
			t.Fatalf("RetryFailed with none failed = %d, %v; want 0", n, err)
		}
		if n, err := e.store.RetryFailed(e.ctx, "nope"); err != nil || n != 0 {
			t.Fatalf("RetryFailed of no batch = %d, %v; want 0", n, err)
		}
		if _, err := e.store.RetryFailed(e.ctx, "b\x001"); !errors.Is(err, worker.ErrInvalidBatch) {
			t.Fatalf("RetryFailed of a bad id: %v, want ErrInvalidBatch", err)
		}
	}},
	{"last-item-finishes-the-batch", func(t *testing.T, e *storeEnv) {
		e.extend("a", "b")
		start := e.start("b1", 2)
		e.finish(e.lease("a"), true)
		p := e.wantProgress("b1", 2, 1, 0)
		if p.Complete() || !p.Finished.IsZero() {
			t.Fatalf("progress with one item left = %+v, want not complete", p)
		}
		before := e.clock()
		e.finish(e.lease("b"), false)
		after := e.clock()
		p = e.wantProgress("b1", 2, 1, 1)
		if !p.Complete() || p.Pending() != 0 {
			t.Fatalf("progress after the last item = %+v, want complete", p)
		}
		wantWithin(t, "Finished", p.Finished, before, after)
		if !p.Started.Equal(start.Started) {
			t.Fatalf("Started changed from %v to %v", start.Started, p.Started)
		}
		if got, err := e.store.Pending(e.ctx, "b1", 10); err != nil || len(got) != 0 {
			t.Fatalf("Pending of a finished batch = %q, %v; want none", got, err)
		}
		// Kept forever with retain 0.
		if _, found, err := e.store.Progress(e.ctx, "b1"); err != nil || !found {
			t.Fatalf("Progress of a finished batch kept forever: found %v, %v", found, err)
		}
	}},
	{"finished-batch-expires-after-retain", func(t *testing.T, e *storeEnv) {
		const retain = time.Second
		e.extend("a", "b")
		e.start("short", 2)
		e.start("kept", 2)
		e.finishIn("kept", e.lease("a"), true, 0)
		e.finishIn("kept", e.lease("b"), true, 0)
		// A running batch never expires, whatever retain its Finish calls
		// pass: only the last item's counts.
		e.finishIn("short", e.lease("b"), false, time.Millisecond)
		time.Sleep(20 * time.Millisecond)
		e.wantProgress("short", 2, 0, 1)
		start := time.Now()
		e.finishIn("short", e.lease("a"), true, retain)
		if _, found, err := e.store.Progress(e.ctx, "short"); err != nil || !found {
			t.Fatalf("Progress just after the last Finish: found %v, %v; want found until %v pass", found, err, retain)
		}
		redistest.Eventually(t, "batch gone after retain", retain+5*time.Second, func() bool {
			_, found, err := e.store.Progress(e.ctx, "short")
			must(t, err)
			return !found
		})
		if took := time.Since(start); took < retain-50*time.Millisecond {
			t.Fatalf("batch gone %v after its last Finish, before retain %v", took, retain)
		}
		if e.redis != nil {
			if keys := e.scanKeys("*|batch:short:*"); len(keys) > 0 {
				t.Fatalf("keys of the expired batch remain: %q", keys)
			}
		}
		if mem, ok := e.pool.(*lock.MemoryLockPool); ok {
			// The state shared with the allocator goes with the batch.
			k := keyspace.Memory().Batch("short")
			if _, found := memberset.Lookup(mem, k.Todo); found {
				t.Fatalf("the expired batch's todo set remains")
			}
			if _, found := failcount.Lookup(mem, k.Failures); found {
				t.Fatalf("the expired batch's failure counts remain")
			}
		}
		if got, err := e.store.Pending(e.ctx, "short", 10); err != nil || len(got) != 0 {
			t.Fatalf("Pending of an expired batch = %q, %v; want none", got, err)
		}
		e.wantProgress("kept", 2, 2, 0)

		// The id can start afresh.
		e.extend("c")
		e.start("short", 3)
		e.wantPending("short", "a", "b", "c")
	}},
	{"empty-pool-makes-no-batch", func(t *testing.T, e *storeEnv) {
		before := e.clock()
		p := e.start("b1", 0)
		after := e.clock()
		if !p.Complete() || p.Finished.IsZero() {
			t.Fatalf("empty batch = %+v, want complete with Finished set", p)
		}
		wantWithin(t, "Started", p.Started, before, after)
		wantWithin(t, "Finished", p.Finished, before, after)
		if got, err := e.store.Pending(e.ctx, "b1", 10); err != nil || len(got) != 0 {
			t.Fatalf("Pending of an empty batch = %q, %v; want none", got, err)
		}
		// Nothing was stored: once the pool has items, the same id starts
		// a real batch.
		if q, found, err := e.store.Progress(e.ctx, "b1"); err != nil || found {
			t.Fatalf("Progress after an empty start = %+v, %v, %v; want not found", q, found, err)
		}
		e.extend("a")
		e.start("b1", 1)
		e.wantPending("b1", "a")
	}},
	{"items-removed-from-the-pool-are-dropped", func(t *testing.T, e *storeEnv) {
		e.extend("a", "b", "c")
		e.start("b1", 3)
		e.finish(e.lease("a"), true)
		must(t, e.pool.Shrink(e.ctx, []string{"a", "b"}))
		// a is done (not pending), c is still a member: only b goes.
		n, err := e.store.DropRemoved(e.ctx, "b1", []string{"a", "b", "c", "ghost"}, 0)
		if err != nil || n != 1 {
			t.Fatalf("DropRemoved = %d, %v; want 1", n, err)
		}
		e.wantPending("b1", "c")
		e.wantProgress("b1", 2, 1, 0)
		if n, err := e.store.DropRemoved(e.ctx, "b1", []string{"b"}, 0); err != nil || n != 0 {
			t.Fatalf("second DropRemoved = %d, %v; want 0", n, err)
		}
		// Dropping the last pending item finishes the batch.
		must(t, e.pool.Shrink(e.ctx, []string{"c"}))
		if n, err := e.store.DropRemoved(e.ctx, "b1", []string{"c"}, 0); err != nil || n != 1 {
			t.Fatalf("DropRemoved(c) = %d, %v; want 1", n, err)
		}
		if p := e.wantProgress("b1", 1, 1, 0); !p.Complete() || p.Finished.IsZero() {
			t.Fatalf("batch not finished after its last item was dropped: %+v", p)
		}
		if n, err := e.store.DropRemoved(e.ctx, "nope", []string{"c"}, 0); err != nil || n != 0 {
			t.Fatalf("DropRemoved on an unknown batch = %d, %v", n, err)
		}
		if _, err := e.store.DropRemoved(e.ctx, "b1", []string{""}, 0); !errors.Is(err, lock.ErrInvalidKey) {
			t.Fatalf("DropRemoved with an empty item = %v, want ErrInvalidKey", err)
		}
	}},
	{"unknown-batch", func(t *testing.T, e *storeEnv) {
		e.extend("a")
		if p, found, err := e.store.Progress(e.ctx, "nope"); err != nil || found {
			t.Fatalf("Progress(nope) = %+v, %v, %v; want not found", p, found, err)
		}
		if got, err := e.store.Pending(e.ctx, "nope", 10); err != nil || len(got) != 0 {
			t.Fatalf("Pending(nope) = %q, %v; want none", got, err)
		}
		if ok, err := e.store.IsPending(e.ctx, "nope", "a"); err != nil || ok {
			t.Fatalf("IsPending(nope, a) = %v, %v; want false", ok, err)
		}
		if ok, err := e.store.Finish(e.ctx, "nope", e.lease("a"), true, 0, nil); err != nil || ok {
			t.Fatalf("Finish(nope, a) = %v, %v; want false", ok, err)
		}
		if _, found, err := e.store.Progress(e.ctx, "nope"); err != nil || found {
			t.Fatalf("Finish created batch nope: found %v, %v", found, err)
		}
	}},
	{"bad-input-writes-nothing", func(t *testing.T, e *storeEnv) {
		e.extend("a", "b")
		e.start("b1", 2)
		_, err := e.store.AddFailure(e.ctx, "b1", "a")
		must(t, err)
		_, err = e.store.AddFailure(e.ctx, "", "b")
		must(t, err)
		held := e.lease("a")
		before := e.state("b1", "a", "b")

		long := strings.Repeat("x", lock.MaxKeyLen+1)
		longID := strings.Repeat("x", worker.MaxBatchIDLen+1)
		st := e.store
		ctx := e.ctx
		cases := []struct {
			name string
			want error
			call func() error
		}{
			{"AddFailure empty item", lock.ErrInvalidKey, func() error { _, err := st.AddFailure(ctx, "", ""); return err }},
			{"AddFailure NUL item", lock.ErrInvalidKey, func() error { _, err := st.AddFailure(ctx, "b1", "a\x00"); return err }},
			{"AddFailure long item", lock.ErrInvalidKey, func() error { _, err := st.AddFailure(ctx, "", long); return err }},
			{"AddFailure NUL scope", worker.ErrInvalidBatch, func() error { _, err := st.AddFailure(ctx, "b1\x00", "a"); return err }},
			{"AddFailure long scope", worker.ErrInvalidBatch, func() error { _, err := st.AddFailure(ctx, longID, "a"); return err }},
			{"AddFailure newline scope", worker.ErrInvalidBatch, func() error { _, err := st.AddFailure(ctx, "b\n1", "a"); return err }},
			{"Failures NUL item", lock.ErrInvalidKey, func() error { _, err := st.Failures(ctx, "", "\x00"); return err }},
			{"Failures bad scope", worker.ErrInvalidBatch, func() error { _, err := st.Failures(ctx, longID, "a"); return err }},
			{"ClearFailures empty item", lock.ErrInvalidKey, func() error { return st.ClearFailures(ctx, "b1", "") }},
			{"ClearFailures bad scope", worker.ErrInvalidBatch, func() error { return st.ClearFailures(ctx, "\x00", "a") }},
			{"StartBatch empty id", worker.ErrInvalidBatch, func() error { _, err := st.StartBatch(ctx, ""); return err }},
			{"StartBatch long id", worker.ErrInvalidBatch, func() error { _, err := st.StartBatch(ctx, longID); return err }},
			{"StartBatch NUL id", worker.ErrInvalidBatch, func() error { _, err := st.StartBatch(ctx, "b\x00"); return err }},
			{"Pending bad id", worker.ErrInvalidBatch, func() error { _, err := st.Pending(ctx, "", 5); return err }},
			{"IsPending bad id", worker.ErrInvalidBatch, func() error { _, err := st.IsPending(ctx, "b\r", "a"); return err }},
			{"IsPending bad item", lock.ErrInvalidKey, func() error { _, err := st.IsPending(ctx, "b1", long); return err }},
			{"Finish bad id", worker.ErrInvalidBatch, func() error { _, err := st.Finish(ctx, "", held, true, 0, nil); return err }},
			// A lease names a valid item (the allocator grants no other, and
			// callers cannot change it); a zero Lease names none.
			{"Finish zero lease", lock.ErrInvalidKey, func() error {
				_, err := st.Finish(ctx, "b1", &allocator.Lease{}, true, 0, nil)
				return err
			}},
			{"Finish nil lease", worker.ErrInvalidConfig, func() error { _, err := st.Finish(ctx, "b1", nil, true, 0, nil); return err }},
			{"Progress bad id", worker.ErrInvalidBatch, func() error { _, _, err := st.Progress(ctx, longID); return err }},
		}
		for _, c := range cases {
			err := c.call()
			if !errors.Is(err, c.want) {
				t.Errorf("%s: got %v, want errors.Is %v", c.name, err, c.want)
				continue
			}
			if !strings.HasPrefix(err.Error(), "worker: ") {
				t.Errorf("%s: error %q does not start with \"worker: \"", c.name, err)
			}
		}
		if after := e.state("b1", "a", "b"); after != before {
			t.Fatalf("bad input changed the state:\nbefore %s\nafter  %s", before, after)
		}
	}},
}

// TestRedisStoreWrongType: a key holding another type than the keyspace
// says gives lock.ErrWrongType naming the key, and is left as it was.
func TestRedisStoreWrongType(t *testing.T) {
	t.Parallel()
	base := func(e *storeEnv) string { return e.prefix + "|" + lock.DefaultPoolSuffix }
	cases := []struct {
		name string
		key  func(e *storeEnv) string
		// setup runs before the key is spoiled.
		setup func(e *storeEnv)
		calls map[string]func(e *storeEnv, l *allocator.Lease) error
	}{
		{
			name: "todo",
			key:  func(e *storeEnv) string { return base(e) + "|batch:b1:todo" },
			calls: map[string]func(e *storeEnv, l *allocator.Lease) error{
				"StartBatch": func(e *storeEnv, l *allocator.Lease) error { _, err := e.store.StartBatch(e.ctx, "b1"); return err },
				"Pending":    func(e *storeEnv, l *allocator.Lease) error { _, err := e.store.Pending(e.ctx, "b1", 5); return err },
				"IsPending":  func(e *storeEnv, l *allocator.Lease) error { _, err := e.store.IsPending(e.ctx, "b1", "a"); return err },
				"Finish": func(e *storeEnv, l *allocator.Lease) error {
					_, err := e.store.Finish(e.ctx, "b1", l, true, time.Minute, nil)
					return err
				},
			},
		},
		{
			name: "loop failures",
			key:  func(e *storeEnv) string { return base(e) + "|run:failures" },
			calls: map[string]func(e *storeEnv, l *allocator.Lease) error{
				"Failures":      func(e *storeEnv, l *allocator.Lease) error { _, err := e.store.Failures(e.ctx, "", "a"); return err },
				"AddFailure":    func(e *storeEnv, l *allocator.Lease) error { _, err := e.store.AddFailure(e.ctx, "", "a"); return err },
				"ClearFailures": func(e *storeEnv, l *allocator.Lease) error { return e.store.ClearFailures(e.ctx, "", "a") },
			},
		},
		{
			name:  "batch failures",
			key:   func(e *storeEnv) string { return base(e) + "|batch:b1:failures" },
			setup: func(e *storeEnv) { e.start("b1", 1) },
			calls: map[string]func(e *storeEnv, l *allocator.Lease) error{
				"AddFailure": func(e *storeEnv, l *allocator.Lease) error {
					_, err := e.store.AddFailure(e.ctx, "b1", "a")
					return err
				},
				"Finish": func(e *storeEnv, l *allocator.Lease) error {
					_, err := e.store.Finish(e.ctx, "b1", l, true, time.Minute, nil)
					return err
				},
			},
		},
		{
			name:  "meta",
			key:   func(e *storeEnv) string { return base(e) + "|batch:b1:meta" },
			setup: func(e *storeEnv) {},
			calls: map[string]func(e *storeEnv, l *allocator.Lease) error{
				"StartBatch": func(e *storeEnv, l *allocator.Lease) error { _, err := e.store.StartBatch(e.ctx, "b1"); return err },
				"Progress":   func(e *storeEnv, l *allocator.Lease) error { _, _, err := e.store.Progress(e.ctx, "b1"); return err },
			},
		},
		{
			name: "pool",
			key:  func(e *storeEnv) string { return base(e) + "|pool" },
			calls: map[string]func(e *storeEnv, l *allocator.Lease) error{
				"StartBatch": func(e *storeEnv, l *allocator.Lease) error { _, err := e.store.StartBatch(e.ctx, "b1"); return err },
			},
		},
	}
	for _, c := range cases {
		for op, call := range c.calls {
			t.Run(c.name+"/"+op, func(t *testing.T) {
				t.Parallel()
				e := backendNamed(t, "redis").env(t)
				var l *allocator.Lease
				if c.name != "pool" {
					e.extend("a")
					l = e.lease("a")
				}
				if c.setup != nil {
					c.setup(e)
				}
				key := c.key(e)
				must(t, e.redis.Set(e.ctx, key, "not-mine", 0).Err())
				before := e.state("b1", "a")
				err := call(e, l)
				if !errors.Is(err, lock.ErrWrongType) {
					t.Fatalf("%s with a STRING at %q: got %v, want lock.ErrWrongType", op, key, err)
				}
				if !strings.Contains(err.Error(), key) || !strings.HasPrefix(err.Error(), "worker: "+op+" ") {
					t.Fatalf("%s: error %q should start with \"worker: %s \" and name the key %q", op, err, op, key)
				}
				if v, err := e.redis.Get(e.ctx, key).Result(); err != nil || v != "not-mine" {
					t.Fatalf("%q after %s = %q, %v; want it unchanged", key, op, v, err)
				}
				if after := e.state("b1", "a"); after != before {
					t.Fatalf("%s changed the state:\nbefore %s\nafter  %s", op, before, after)
				}
			})
		}
	}
}

// TestRedisStoreLargePool: a batch over a 100,000-item pool starts in one
// step and samples pending items from it.
func TestRedisStoreLargePool(t *testing.T) {
	t.Parallel()
	const n = 100_000
	e := backendNamed(t, "redis").env(t)
	all := stItems("item-", n)
	must(t, e.pool.Extend(e.ctx, all))
	e.start("big", n)
	got, err := e.store.Pending(e.ctx, "big", 5000)
	must(t, err)
	if len(got) != 1000 || hasDup(got) {
		t.Fatalf("Pending(5000) gave %d items (duplicates: %v), want 1000 distinct: n is capped", len(got), hasDup(got))
	}
	for _, it := range got {
		if !strings.HasPrefix(it, "item-") {
			t.Fatalf("Pending gave %q, not a pool item", it)
		}
	}
	if card := e.redis.SCard(e.ctx, e.prefix+"|"+lock.DefaultPoolSuffix+"|batch:big:todo").Val(); card != n {
		t.Fatalf("todo SET has %d members, want %d", card, n)
	}
	e.wantProgress("big", n, 0, 0)
}

// extend adds items to the pool and syncs the allocator.
func (e *storeEnv) extend(items ...string) {
	e.t.Helper()
	must(e.t, e.pool.Extend(e.ctx, items))
	must(e.t, e.alloc.Sync(e.ctx))
}

// start starts (or joins) batch id and checks its total.
func (e *storeEnv) start(id string, total int64) worker.Progress {
	e.t.Helper()
	p, err := e.store.StartBatch(e.ctx, id)
	must(e.t, err)
	if p.Total != total {
		e.t.Fatalf("StartBatch(%q).Total = %d, want %d", id, p.Total, total)
	}
	if p.Started.IsZero() {
		e.t.Fatalf("StartBatch(%q).Started is zero", id)
	}
	return p
}

// lease takes item with a fresh owner.
func (e *storeEnv) lease(item string) *allocator.Lease {
	e.t.Helper()
	l, err := e.alloc.TryAcquire(e.ctx, "owner-"+item, allocator.AcquireOptions{Prefer: item, Exact: true, TTL: time.Minute})
	if err != nil {
		e.t.Fatalf("TryAcquire(%q): %v", item, err)
	}
	return l
}

// finish records l's item in batch b1 and releases the lease.
func (e *storeEnv) finish(l *allocator.Lease, ok bool) {
	e.t.Helper()
	e.finishIn("b1", l, ok, 0)
}

func (e *storeEnv) finishIn(id string, l *allocator.Lease, ok bool, retain time.Duration) {
	e.t.Helper()
	recorded, err := e.store.Finish(e.ctx, id, l, ok, retain, nil)
	must(e.t, err)
	if !recorded {
		e.t.Fatalf("Finish(%q, %q, %v) with the current lease was not recorded", id, l.Item(), ok)
	}
	must(e.t, l.Release(e.ctx))
}

func (e *storeEnv) wantFailures(scope, item string, want int) {
	e.t.Helper()
	n, err := e.store.Failures(e.ctx, scope, item)
	must(e.t, err)
	if n != want {
		e.t.Fatalf("Failures(%q, %q) = %d, want %d", scope, item, n, want)
	}
}

// wantPending asserts that the batch's pending items are exactly want.
func (e *storeEnv) wantPending(id string, want ...string) {
	e.t.Helper()
	got, err := e.store.Pending(e.ctx, id, 1000)
	must(e.t, err)
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		e.t.Fatalf("Pending(%q) = %q, want %q", id, got, want)
	}
	for _, it := range want {
		if ok, err := e.store.IsPending(e.ctx, id, it); err != nil || !ok {
			e.t.Fatalf("IsPending(%q, %q) = %v, %v; want true", id, it, ok, err)
		}
	}
}

func (e *storeEnv) wantProgress(id string, total, done, failed int64) worker.Progress {
	e.t.Helper()
	p, found, err := e.store.Progress(e.ctx, id)
	must(e.t, err)
	if !found || p.Total != total || p.Done != done || p.Failed != failed {
		e.t.Fatalf("Progress(%q) = %+v, found %v; want total %d done %d failed %d", id, p, found, total, done, failed)
	}
	return p
}

// state describes everything the store keeps: for Redis every key under
// the test's prefix with its type, TTL and contents; for memory what the
// Store methods show of batch id and items.
func (e *storeEnv) state(id string, items ...string) string {
	e.t.Helper()
	if e.redis == nil {
		var b strings.Builder
		p, found, err := e.store.Progress(e.ctx, id)
		must(e.t, err)
		pending, err := e.store.Pending(e.ctx, id, 1000)
		must(e.t, err)
		slices.Sort(pending)
		fmt.Fprintf(&b, "progress %+v %v; pending %q;", p, found, pending)
		for _, it := range items {
			for _, scope := range []string{"", id} {
				n, err := e.store.Failures(e.ctx, scope, it)
				must(e.t, err)
				fmt.Fprintf(&b, " failures[%q][%q]=%d", scope, it, n)
			}
		}
		return b.String()
	}
	var lines []string
	for _, k := range e.scanKeys("*") {
		if strings.Contains(k, "|alloc:") {
			continue // the allocator's own, which its sync loop rewrites
		}
		typ := e.redis.Type(e.ctx, k).Val()
		var v any
		switch typ {
		case "string":
			v = e.redis.Get(e.ctx, k).Val()
		case "set":
			v = slices.Sorted(slices.Values(e.redis.SMembers(e.ctx, k).Val()))
		case "hash":
			v = e.redis.HGetAll(e.ctx, k).Val()
		case "zset":
			v = e.redis.ZRangeWithScores(e.ctx, k, 0, -1).Val()
		}
		persist := e.redis.PTTL(e.ctx, k).Val() < 0
		lines = append(lines, fmt.Sprintf("%s %s persist=%v %v", k, typ, persist, v))
	}
	return strings.Join(lines, "\n")
}

// scanKeys lists the keys under the test's prefix matching pattern.
func (e *storeEnv) scanKeys(pattern string) []string {
	e.t.Helper()
	var keys []string
	iter := e.redis.Scan(e.ctx, 0, keyspace.GlobEscape(e.prefix)+pattern, 1000).Iterator()
	for iter.Next(e.ctx) {
		keys = append(keys, iter.Val())
	}
	must(e.t, iter.Err())
	slices.Sort(keys)
	return keys
}

// wantWithin asserts that t, reported in whole milliseconds, lies between
// two readings of the backend's clock.
func wantWithin(t *testing.T, what string, got, before, after time.Time) {
	t.Helper()
	if got.Before(before.Truncate(time.Millisecond)) || got.After(after) {
		t.Fatalf("%s = %v, want between %v and %v", what, got, before, after)
	}
}

func stItems(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%06d", prefix, i)
	}
	return out
}

func hasDup(s []string) bool {
	seen := make(map[string]bool, len(s))
	for _, x := range s {
		if seen[x] {
			return true
		}
		seen[x] = true
	}
	return false
}

func subset(s, of []string) bool {
	for _, x := range s {
		if !slices.Contains(of, x) {
			return false
		}
	}
	return true
}
