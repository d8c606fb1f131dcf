package allocator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/lock"
)

// White-box tests of the in-memory store's own machinery: the index, sync
// by generation, the waiter queue and the shared per-pool state. Behaviour
// both stores share belongs in the conformance suite.

func newTestPool(t *testing.T, items ...string) *lock.MemoryLockPool {
	t.Helper()
	p, err := lock.NewMemoryLockPool(lock.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Extend(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkIndex checks the heap is a min-heap of exactly the map's entries by
// (score, item), each knowing its own position.
func checkIndex(t *testing.T, x *availIndex) {
	t.Helper()
	if len(x.heap) != len(x.entries) {
		t.Fatalf("heap holds %d entries, map %d", len(x.heap), len(x.entries))
	}
	for i, e := range x.heap {
		if e.pos != i {
			t.Fatalf("heap[%d] (%q) has pos %d", i, e.item, e.pos)
		}
		if x.entries[e.item] != e {
			t.Fatalf("heap[%d] (%q) is not the map's entry", i, e.item)
		}
		if parent := (i - 1) / 2; i > 0 && x.heap.Less(i, parent) {
			t.Fatalf("heap[%d] (%q, %d) sorts before its parent (%q, %d)", i, e.item, e.score, x.heap[parent].item, x.heap[parent].score)
		}
	}
}

// indexOf returns the index as "item:score" in index order.
func indexOf(st *memoryState) []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []string
	for _, item := range st.index.first(st.index.len(), 1<<62) {
		out = append(out, fmt.Sprintf("%s:%d", item, st.index.entries[item].score))
	}
	return out
}

func scoreOf(st *memoryState, item string) (int64, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	e := st.index.entries[item]
	if e == nil {
		return 0, false
	}
	return e.score, true
}

func queued(st *memoryState) []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []string
	for e := st.queue.Front(); e != nil; e = e.Next() {
		for id, w := range st.waiters {
			if w == e.Value.(*memWaiter) {
				out = append(out, id)
			}
		}
	}
	return out
}

func woken(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// mustGrant runs one acquire on the store and returns its lease.
func mustGrant(t *testing.T, s *memoryStore, owner string, ttl time.Duration, prefer, binding, waiter string) *Lease {
	t.Helper()
	g, m, ok, err := s.acquire(context.Background(), owner, ttl, prefer, binding, waiter, false)
	if err != nil || !ok {
		t.Fatalf("acquire(%q) = %v, %+v, %v; want a grant", owner, ok, m, err)
	}
	return &Lease{item: g.item, owner: owner, token: g.token, value: leaseValue(owner, g.token), ttl: ttl, deadline: g.deadline}
}

func mustMiss(t *testing.T, s *memoryStore, waiter string) miss {
	t.Helper()
	g, m, ok, err := s.acquire(context.Background(), "w", time.Minute, "", "", waiter, false)
	if err != nil || ok {
		t.Fatalf("acquire = %v (item %q), %v; want a miss", ok, g.item, err)
	}
	return m
}

func mustSync(t *testing.T, s *memoryStore, full bool) {
	t.Helper()
	running, err := s.sync(context.Background(), full)
	if err != nil || running {
		t.Fatalf("sync(%v) = %v, %v", full, running, err)
	}
}

func TestAvailIndexOrder(t *testing.T) {
	x := newAvailIndex()
	for _, e := range []struct {
		item  string
		score int64
	}{{"d", 5}, {"b", 0}, {"c", 5}, {"a", 0}, {"e", 3}, {"aa", 5}, {"B", 5}} {
		x.set(e.item, e.score)
		checkIndex(t, &x)
	}
	// Score first, then the item's bytes, as a Redis sorted set orders.
	if got, want := x.first(100, 100), []string{"a", "b", "e", "B", "aa", "c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("first = %v; want %v", got, want)
	}
	checkIndex(t, &x)
	if got, want := x.first(3, 100), []string{"a", "b", "e"}; !slices.Equal(got, want) {
		t.Fatalf("first(3) = %v; want %v", got, want)
	}
	if got, want := x.first(100, 4), []string{"a", "b", "e"}; !slices.Equal(got, want) {
		t.Fatalf("first(max 4) = %v; want %v", got, want)
	}
	if got := x.first(100, -1); len(got) != 0 {
		t.Fatalf("first(max -1) = %v; want none", got)
	}
	x.set("a", 6) // ZADD moves an existing entry
	x.set("d", -1)
	x.remove("b")
	x.remove("nope")
	checkIndex(t, &x)
	if got, want := x.first(100, 100), []string{"d", "e", "B", "aa", "c", "a"}; !slices.Equal(got, want) {
		t.Fatalf("first after moves = %v; want %v", got, want)
	}
	if e, ok := x.min(); !ok || e.item != "d" || e.score != -1 {
		t.Fatalf("min = %+v, %v; want d at -1", e, ok)
	}
	if x.len() != 6 || x.has("b") || !x.has("a") {
		t.Fatalf("len %d, has(b) %v, has(a) %v", x.len(), x.has("b"), x.has("a"))
	}
	for _, item := range []string{"d", "e", "B", "aa", "c", "a"} {
		x.remove(item)
		checkIndex(t, &x)
	}
	if _, ok := x.min(); ok || x.len() != 0 {
		t.Fatal("index not empty after removing everything")
	}
}

func TestAvailIndexRandom(t *testing.T) {
	x := newAvailIndex()
	want := map[string]int64{}
	for i := range 2000 {
		item := fmt.Sprintf("i%d", (i*7919)%97)
		switch i % 5 {
		case 0:
			x.remove(item)
			delete(want, item)
		default:
			score := int64((i * 31) % 13)
			x.set(item, score)
			want[item] = score
		}
		if i%50 == 0 {
			checkIndex(t, &x)
		}
	}
	checkIndex(t, &x)
	var sorted []string
	for item := range want {
		sorted = append(sorted, item)
	}
	slices.SortFunc(sorted, func(a, b string) int {
		if want[a] != want[b] {
			return int(want[a] - want[b])
		}
		if a < b {
			return -1
		}
		return 1
	})
	if got := x.first(len(sorted)+1, 1<<62); !slices.Equal(got, sorted) {
		t.Fatalf("order = %v; want %v", got, sorted)
	}
}

// TestMemoryFairnessOrder: new items go first, in item order; then the item
// available longest.
func TestMemoryFairnessOrder(t *testing.T) {
	pool := newTestPool(t, "c", "a", "b")
	s := newMemoryStore(pool, 1)
	m := mustMiss(t, s, "")
	if !m.behind || !m.next.IsZero() {
		t.Fatalf("miss on an unsynced index = %+v; want behind, no next", m)
	}
	mustSync(t, s, false)
	if got, want := indexOf(s.st), []string{"a:0", "b:0", "c:0"}; !slices.Equal(got, want) {
		t.Fatalf("index after sync = %v; want %v", got, want)
	}
	var leases []*Lease
	var last int64
	for _, want := range []string{"a", "b", "c"} {
		l := mustGrant(t, s, "w", time.Minute, "", "", "")
		if l.item != want {
			t.Fatalf("acquired %q; want %q", l.item, want)
		}
		if l.token <= last {
			t.Fatalf("token %d after %d", l.token, last)
		}
		last = l.token
		if v, ok, _ := pool.LockValue(context.Background(), l.item); !ok || v != l.value {
			t.Fatalf("pool lock of %q = %q, %v; want the lease value %q", l.item, v, ok, l.value)
		}
		leases = append(leases, l)
	}
	m = mustMiss(t, s, "")
	if m.behind || m.next.Sub(m.now) < 59*time.Second {
		t.Fatalf("miss with everything leased = %+v; want next a minute ahead", m)
	}
	// Released c, then b, then a, a few ms apart: they come back in that order.
	for _, i := range []int{2, 1, 0} {
		if ok, err := released(s, context.Background(), leases[i], 0); !ok || err != nil {
			t.Fatalf("release(%q) = %v, %v", leases[i].item, ok, err)
		}
		time.Sleep(3 * time.Millisecond)
	}
	for _, want := range []string{"c", "b", "a"} {
		if l := mustGrant(t, s, "w", time.Minute, "", "", ""); l.item != want {
			t.Fatalf("acquired %q; want %q", l.item, want)
		}
	}
}

func TestMemoryGrant(t *testing.T) {
	pool := newTestPool(t, "a")
	s := newMemoryStore(pool, 1)
	mustSync(t, s, false)
	before := time.Now()
	l := mustGrant(t, s, "owner", 1500*time.Millisecond+999*time.Microsecond, "", "", "")
	after := time.Now()
	if l.deadline.UnixMilli()*int64(time.Millisecond) != l.deadline.UnixNano() {
		t.Fatalf("deadline %v is not whole milliseconds", l.deadline)
	}
	lo, hi := before.Truncate(time.Millisecond).Add(1500*time.Millisecond), after.Add(1500*time.Millisecond)
	if l.deadline.Before(lo) || l.deadline.After(hi) {
		t.Fatalf("deadline %v not in [%v, %v]", l.deadline, lo, hi)
	}
	if l.token < before.UnixMicro() || l.token > after.UnixMicro() {
		t.Fatalf("token %d is not the time in µs", l.token)
	}
	if score, _ := scoreOf(s.st, "a"); score != l.deadline.UnixMilli() {
		t.Fatalf("index score %d; want the deadline %d", score, l.deadline.UnixMilli())
	}
	if ttl, ok, _ := pool.TTL(context.Background(), "a"); !ok || ttl > 1500*time.Millisecond || ttl < time.Second {
		t.Fatalf("pool TTL %v, %v; want the lease's whole milliseconds", ttl, ok)
	}
	// Tokens stay above the last one even when the clock would not move them.
	s.st.mu.Lock()
	s.st.fence = time.Now().Add(time.Hour).UnixMicro()
	fence := s.st.fence
	s.st.mu.Unlock()
	if _, err := released(s, context.Background(), l, 0); err != nil {
		t.Fatal(err)
	}
	if l2 := mustGrant(t, s, "owner", time.Minute, "", "", ""); l2.token != fence+1 {
		t.Fatalf("token %d; want %d", l2.token, fence+1)
	}
}

// TestMemoryHeldItems: items held through pkg/lock are skipped and looked
// at again when their lock expires; items that left the pool are dropped.
func TestMemoryHeldItems(t *testing.T) {
	ctx := context.Background()
	pool := newTestPool(t, "a", "b", "c", "d")
	s := newMemoryStore(pool, 1)
	mustSync(t, s, false)
	if ok, err := pool.Lock(ctx, "a", "direct", time.Minute); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if ok, err := pool.Lock(ctx, "b", "direct", lock.NoExpiry); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if err := pool.Shrink(ctx, []string{"c"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	l := mustGrant(t, s, "w", time.Minute, "", "", "")
	if l.item != "d" {
		t.Fatalf("acquired %q; want d", l.item)
	}
	if score, ok := scoreOf(s.st, "a"); !ok || score < now+59_000 || score > now+61_000 {
		t.Fatalf("a re-scored to %d (now %d); want its lock's expiry", score, now)
	}
	if score, ok := scoreOf(s.st, "b"); !ok || score < now+heldForeverMs-1000 || score > now+heldForeverMs+1000 {
		t.Fatalf("b re-scored to %d (now %d); want an hour ahead", score, now)
	}
	if _, ok := scoreOf(s.st, "c"); ok {
		t.Fatal("c, no longer a member, is still indexed")
	}
	// a's direct lock is removed early: its index score is still a minute
	// ahead, but the foreign-lock probe finds it free.
	if _, err := pool.Unlock(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.st.foreign["a"]; !ok {
		t.Fatal("a, found held by a direct lock, is not remembered as foreign")
	}
	if l := mustGrant(t, s, "w", time.Minute, "", "", ""); l.item != "a" {
		t.Fatalf("acquire after a's direct unlock gave %q; want a", l.item)
	}
	// A prefer naming a held item falls through; one naming a non-member
	// is dropped from the index; none hands out a held item.
	if _, _, ok, err := s.acquire(ctx, "w", time.Minute, "b", "", "", false); ok || err != nil {
		t.Fatalf("prefer b (held forever) = %v, %v; want a miss", ok, err)
	}
}

func TestMemoryAffinity(t *testing.T) {
	pool := newTestPool(t, "a", "b", "c")
	s := newMemoryStore(pool, 1)
	mustSync(t, s, false)
	l := mustGrant(t, s, "w", time.Minute, "c", "job", "")
	if l.item != "c" {
		t.Fatalf("prefer c gave %q", l.item)
	}
	if _, err := released(s, context.Background(), l, 0); err != nil {
		t.Fatal(err)
	}
	if l := mustGrant(t, s, "w", time.Minute, "", "job", ""); l.item != "c" {
		t.Fatalf("binding job gave %q; want its last item c", l.item)
	}
	// c is leased: the binding falls back to the oldest and remembers it.
	if l := mustGrant(t, s, "w", time.Minute, "", "job", ""); l.item != "a" {
		t.Fatalf("binding job with c leased gave %q; want a", l.item)
	}
	s.st.mu.Lock()
	bound := s.st.bindings["job"]
	s.st.mu.Unlock()
	if bound != "a" {
		t.Fatalf("binding job -> %q; want a", bound)
	}
}

// TestMemoryCandidateBudget: one acquire examines at most maxCandidates
// entries; the miss says to look again at once.
func TestMemoryCandidateBudget(t *testing.T) {
	ctx := context.Background()
	var items []string
	for i := range maxCandidates + 10 {
		items = append(items, fmt.Sprintf("i%03d", i))
	}
	pool := newTestPool(t, items...)
	s := newMemoryStore(pool, 1)
	mustSync(t, s, false)
	if err := pool.Shrink(ctx, items[:maxCandidates+5]); err != nil {
		t.Fatal(err)
	}
	// Keep the sync out: shrinking changed the generation, but the store
	// only looks when asked.
	m := mustMiss(t, s, "")
	if !m.retryNow() {
		t.Fatalf("miss %+v; want retryNow after a step spent on stale entries", m)
	}
	if n := len(indexOf(s.st)); n != len(items)-maxCandidates {
		t.Fatalf("index holds %d entries; want %d left after one bounded step", n, len(items)-maxCandidates)
	}
	if l := mustGrant(t, s, "w", time.Minute, "", "", ""); l.item != items[maxCandidates+5] {
		t.Fatalf("acquired %q; want %q", l.item, items[maxCandidates+5])
	}
}

// TestMemorySyncByGeneration: the index is reconciled when the pool's
// generation moves (even when the counts agree), when the counts disagree,
// and on a full sweep; otherwise sync does nothing.
func TestMemorySyncByGeneration(t *testing.T) {
	ctx := context.Background()
	pool := newTestPool(t, "a", "b")
	s := newMemoryStore(pool, 1)
	mustSync(t, s, false)
	if got, want := indexOf(s.st), []string{"a:0", "b:0"}; !slices.Equal(got, want) {
		t.Fatalf("index = %v; want %v", got, want)
	}
	// Swap b for a stray entry behind the store's back, counts unchanged:
	// a plain sync trusts the generation, a full one repairs.
	s.st.mu.Lock()
	s.st.index.remove("b")
	s.st.index.set("stray", 7)
	s.st.mu.Unlock()
	mustSync(t, s, false)
	if got, want := indexOf(s.st), []string{"a:0", "stray:7"}; !slices.Equal(got, want) {
		t.Fatalf("index after a plain sync = %v; want it untouched %v", got, want)
	}
	mustSync(t, s, true)
	if got, want := indexOf(s.st), []string{"a:0", "b:0"}; !slices.Equal(got, want) {
		t.Fatalf("index after a full sync = %v; want %v", got, want)
	}
	// Same count, other members: the generation moved.
	l := mustGrant(t, s, "w", time.Minute, "", "", "")
	if err := pool.Assign(ctx, []string{"a", "c"}); err != nil {
		t.Fatal(err)
	}
	mustSync(t, s, false)
	if got, want := indexOf(s.st), []string{"c:0", "a:" + fmt.Sprint(l.deadline.UnixMilli())}; !slices.Equal(got, want) {
		t.Fatalf("index after Assign = %v; want %v", got, want)
	}
	// A release of an item that left the pool re-adds it (as ZADD does);
	// the count mismatch makes the next sync drop it.
	if err := pool.Shrink(ctx, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	mustSync(t, s, false)
	if ok, err := released(s, ctx, l, 0); !ok || err != nil {
		t.Fatalf("release = %v, %v", ok, err)
	}
	if _, ok := scoreOf(s.st, "a"); !ok {
		t.Fatal("release did not index a")
	}
	mustSync(t, s, false)
	if got, want := indexOf(s.st), []string{"c:0"}; !slices.Equal(got, want) {
		t.Fatalf("index = %v; want %v", got, want)
	}
	// Added items wake waiters; a sync that adds nothing does not.
	id, wake, done := s.waiter()
	defer done()
	mustGrant(t, s, "w", time.Minute, "", "", "")
	mustMiss(t, s, id)
	mustSync(t, s, true)
	if woken(wake) {
		t.Fatal("a sync that added nothing woke a waiter")
	}
	if err := pool.Extend(ctx, []string{"d"}); err != nil {
		t.Fatal(err)
	}
	mustSync(t, s, false)
	if !woken(wake) {
		t.Fatal("a sync that added d woke nobody")
	}
}

// TestMemoryWaiterQueue: waiters queue on their first miss, are woken
// oldest first, WakeWaiters at a time, and leave the queue when woken, on
// a successful acquire, or when done.
func TestMemoryWaiterQueue(t *testing.T) {
	ctx := context.Background()
	pool := newTestPool(t, "a", "b", "c")
	s := newMemoryStore(pool, 2)
	mustSync(t, s, false)
	var leases []*Lease
	for range 3 {
		leases = append(leases, mustGrant(t, s, "w", time.Minute, "", "", ""))
	}
	id1, wake1, done1 := s.waiter()
	id2, wake2, done2 := s.waiter()
	id3, wake3, done3 := s.waiter()
	defer done1()
	defer done2()
	defer done3()
	if got := queued(s.st); len(got) != 0 {
		t.Fatalf("queue before any miss = %v", got)
	}
	mustMiss(t, s, id2)
	mustMiss(t, s, id1)
	mustMiss(t, s, id3)
	mustMiss(t, s, id2) // already queued: keeps its place
	if got, want := queued(s.st), []string{id2, id1, id3}; !slices.Equal(got, want) {
		t.Fatalf("queue = %v; want %v", got, want)
	}
	// A quarantine wakes nobody; a release wakes the two oldest.
	if ok, err := released(s, ctx, leases[0], time.Minute); !ok || err != nil {
		t.Fatalf("quarantine = %v, %v", ok, err)
	}
	if woken(wake1) || woken(wake2) || woken(wake3) {
		t.Fatal("a quarantine woke a waiter")
	}
	if ok, err := released(s, ctx, leases[1], 0); !ok || err != nil {
		t.Fatalf("release = %v, %v", ok, err)
	}
	if !woken(wake2) || !woken(wake1) || woken(wake3) {
		t.Fatal("release did not wake exactly the two oldest waiters")
	}
	if got, want := queued(s.st), []string{id3}; !slices.Equal(got, want) {
		t.Fatalf("queue after the wake = %v; want %v", got, want)
	}
	// A woken waiter that misses again queues at the back.
	mustGrant(t, s, "other", time.Minute, "", "", "")
	mustMiss(t, s, id1)
	if got, want := queued(s.st), []string{id3, id1}; !slices.Equal(got, want) {
		t.Fatalf("queue = %v; want %v", got, want)
	}
	// Success takes a waiter out; so does done.
	mustMiss(t, s, id3) // queued already
	mustMiss(t, s, id2)
	if got, want := queued(s.st), []string{id3, id1, id2}; !slices.Equal(got, want) {
		t.Fatalf("queue = %v; want %v", got, want)
	}
	// Free c without a release (its lock is taken over and expires), so
	// nobody is woken.
	if err := pool.Update(ctx, "c", "x", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	s.st.mu.Lock()
	s.st.index.set("c", 0)
	s.st.mu.Unlock()
	if l := mustGrant(t, s, "w", time.Minute, "", "", id1); l.item != "c" {
		t.Fatalf("acquired %q; want c", l.item)
	}
	if got, want := queued(s.st), []string{id3, id2}; !slices.Equal(got, want) {
		t.Fatalf("queue after id1 succeeded = %v; want %v", got, want)
	}
	done3()
	if got, want := queued(s.st), []string{id2}; !slices.Equal(got, want) {
		t.Fatalf("queue after done = %v; want %v", got, want)
	}
	s.st.mu.Lock()
	n := len(s.st.waiters)
	s.st.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d registered waiters; want 2", n)
	}
	mustMiss(t, s, id3) // unregistered: not queued again
	if got, want := queued(s.st), []string{id2}; !slices.Equal(got, want) {
		t.Fatalf("queue = %v; want %v", got, want)
	}
}

// TestMemoryQuarantine: a quarantine is the marker lock, held against
// every pool user and the allocator until it ends.
func TestMemoryQuarantine(t *testing.T) {
	ctx := context.Background()
	pool := newTestPool(t, "a", "b")
	s := newMemoryStore(pool, 1)
	mustSync(t, s, false)
	la := mustGrant(t, s, "w", time.Minute, "a", "", "")
	lb := mustGrant(t, s, "w", time.Minute, "b", "", "")
	const hold = 80 * time.Millisecond
	if ok, err := released(s, ctx, la, hold); !ok || err != nil {
		t.Fatalf("release(hold) = %v, %v", ok, err)
	}
	if ok, err := released(s, ctx, la, hold); ok || err != nil {
		t.Fatalf("second release(hold) = %v, %v; want false", ok, err)
	}
	if v, ok, _ := pool.LockValue(ctx, "a"); !ok || v != quarantineMarker {
		t.Fatalf("lock of a = %q, %v; want the marker", v, ok)
	}
	if ok, _ := pool.Lock(ctx, "a", "direct", time.Minute); ok {
		t.Fatal("a pool user locked a quarantined item")
	}
	if err := s.quarantine(ctx, "b", hold); err != nil {
		t.Fatal(err)
	}
	if ok, err := released(s, ctx, lb, 0); ok || err != nil {
		t.Fatalf("release of a lease quarantined by force = %v, %v; want false", ok, err)
	}
	m := mustMiss(t, s, "")
	if d := m.next.Sub(m.now); d <= 0 || d > hold {
		t.Fatalf("miss during quarantine = %+v; want next within %v", m, hold)
	}
	time.Sleep(hold + 20*time.Millisecond)
	got := []string{mustGrant(t, s, "w", time.Minute, "", "", "").item, mustGrant(t, s, "w", time.Minute, "", "", "").item}
	slices.Sort(got)
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("after the quarantine acquired %v; want a and b", got)
	}
}

func TestMemoryRefresh(t *testing.T) {
	ctx := context.Background()
	pool := newTestPool(t, "a", "b")
	s := newMemoryStore(pool, 1)
	mustSync(t, s, false)
	la := mustGrant(t, s, "w", time.Second, "a", "", "")
	lb := mustGrant(t, s, "w", time.Second, "b", "", "")
	if err := pool.Update(ctx, "b", "thief", time.Minute); err != nil {
		t.Fatal(err)
	}
	now, held, _, err := s.refresh(ctx, []*Lease{la, lb}, time.Minute)
	if err != nil || !slices.Equal(held, []verdict{verdictHeld, verdictTaken}) {
		t.Fatalf("refresh = %v, %v; want [held taken]", held, err)
	}
	if score, _ := scoreOf(s.st, "a"); score != now.UnixMilli()+60_000 {
		t.Fatalf("a scored %d; want now+ttl %d", score, now.UnixMilli()+60_000)
	}
	if ttl, _, _ := pool.TTL(ctx, "a"); ttl < 59*time.Second {
		t.Fatalf("a's lock TTL %v; want a minute", ttl)
	}
}

func TestMemoryCancelledContext(t *testing.T) {
	pool := newTestPool(t, "a")
	s := newMemoryStore(pool, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, _, err1 := s.acquire(ctx, "w", time.Minute, "", "", "", false)
	_, _, _, err2 := s.refresh(ctx, []*Lease{{item: "a", value: "v"}}, time.Minute)
	_, _, err3 := s.release(ctx, &Lease{item: "a", value: "v"}, 0, "")
	err4 := s.quarantine(ctx, "a", time.Minute)
	_, err5 := s.sync(ctx, true)
	for i, err := range []error{err1, err2, err3, err4, err5} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("call %d = %v; want context.Canceled", i+1, err)
		}
	}
	if ok, _ := pool.IsLocked(context.Background(), "a"); ok {
		t.Fatal("a cancelled call wrote a lock")
	}
}

func TestNewMemoryConfig(t *testing.T) {
	if _, err := NewMemory(nil, Config{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("NewMemory(nil pool) = %v; want ErrInvalidConfig", err)
	}
	if _, err := NewMemory(newTestPool(t), Config{LeaseTTL: time.Microsecond}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("NewMemory(LeaseTTL 1µs) = %v; want ErrInvalidConfig", err)
	}
	a, err := NewMemory(newTestPool(t), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestMemorySharedState: allocators over one pool share one state, as
// Redis allocators over one keyspace do; it is kept beside the pool.
func TestMemorySharedState(t *testing.T) {
	ctx := context.Background()
	pool := newTestPool(t, "a", "b", "c", "d")
	a1, err := NewMemory(pool, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer a1.Close()
	a2, err := NewMemory(pool, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	if a1.store.(*memoryStore).st != a2.store.(*memoryStore).st {
		t.Fatal("two allocators over one pool have separate states")
	}
	if newMemoryStore(newTestPool(t), 1).st == a1.store.(*memoryStore).st {
		t.Fatal("two pools share a state")
	}
	var last int64
	for i := range 4 {
		a := []*Allocator{a1, a2}[i%2]
		l, err := a.TryAcquire(ctx, "w", AcquireOptions{Binding: "job"})
		if err != nil {
			t.Fatal(err)
		}
		if l.token <= last {
			t.Fatalf("token %d after %d", l.token, last)
		}
		last = l.token
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if l2, err := []*Allocator{a2, a1}[i%2].TryAcquire(ctx, "w", AcquireOptions{Binding: "job"}); err != nil || l2.item != l.item {
			t.Fatalf("the other allocator's binding gave %v, %v; want %q", l2, err, l.item)
		} else {
			last = l2.token
			_ = l2.Release(ctx)
		}
	}

	// The shared state is the one kept beside the pool, and another pool
	// has its own.
	if got := lock.Shared(pool, "allocator", func() *memoryState { return nil }); got != a1.store.(*memoryStore).st {
		t.Fatal("the allocators' state is not the one lock.Shared keeps beside the pool")
	}
}

// TestMemoryConcurrentUse: allocators and direct pool users hammer a few
// items; no item is ever held by two at once, and every waiter is served.
func TestMemoryConcurrentUse(t *testing.T) {
	ctx := context.Background()
	items := []string{"a", "b", "c"}
	pool := newTestPool(t, items...)
	cfg := Config{LeaseTTL: 5 * time.Second, MaxWait: 50 * time.Millisecond, SyncInterval: 5 * time.Millisecond, FullSyncInterval: 20 * time.Millisecond}
	a1, err := NewMemory(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a1.Close()
	a2, err := NewMemory(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()

	var holders sync.Map // item -> holder
	var failures atomic.Int32
	enter := func(item, who string) {
		if prev, loaded := holders.LoadOrStore(item, who); loaded {
			t.Errorf("%s got %q while %v holds it", who, item, prev)
			failures.Add(1)
		}
	}
	leave := func(item string) { holders.Delete(item) }

	var wg sync.WaitGroup
	for w := range 8 {
		a := []*Allocator{a1, a2}[w%2]
		wg.Go(func() {
			for i := range 40 {
				who := fmt.Sprintf("alloc-%d", w)
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				l, err := a.Acquire(cctx, who, AcquireOptions{Binding: fmt.Sprint(w % 3)})
				cancel()
				if err != nil {
					t.Error(err)
					return
				}
				enter(l.item, who)
				time.Sleep(100 * time.Microsecond)
				leave(l.item)
				if i%7 == 0 {
					err = l.Quarantine(ctx, time.Millisecond)
				} else {
					err = l.Release(ctx)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for d := range 2 {
		wg.Go(func() {
			who := fmt.Sprintf("direct-%d", d)
			for i := range 100 {
				item := items[i%len(items)]
				// A short TTL: an allocator that finds the item locked
				// looks again only when that TTL would end (as with Redis),
				// however early the lock is released.
				ok, err := pool.Lock(ctx, item, who, 100*time.Millisecond)
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					time.Sleep(50 * time.Microsecond)
					continue
				}
				enter(item, who)
				time.Sleep(50 * time.Microsecond)
				leave(item)
				if ok, err := pool.Release(ctx, item, who); !ok || err != nil {
					t.Errorf("direct release = %v, %v", ok, err)
				}
			}
		})
	}
	wg.Go(func() { // membership churn
		for range 20 {
			_ = pool.Extend(ctx, []string{"x"})
			time.Sleep(time.Millisecond)
			_ = pool.Shrink(ctx, []string{"x"})
		}
	})
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d double allocations", failures.Load())
	}
	st := a1.store.(*memoryStore).st
	st.mu.Lock()
	defer st.mu.Unlock()
	checkIndex(t, &st.index)
	if st.queue.Len() != 0 || len(st.waiters) != 0 {
		t.Fatalf("%d queued and %d registered waiters left", st.queue.Len(), len(st.waiters))
	}
}

// TestMemoryAcquireHandoff: a blocked Acquire is woken by a release at
// once, and otherwise wakes when the earliest lease expires.
func TestMemoryAcquireHandoff(t *testing.T) {
	ctx := context.Background()
	pool := newTestPool(t, "a", "b")
	a, err := NewMemory(pool, Config{LeaseTTL: 300 * time.Millisecond, MaxWait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	l1, err := a.TryAcquire(ctx, "w1", AcquireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l2, err := a.TryAcquire(ctx, "w2", AcquireOptions{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.TryAcquire(ctx, "w3", AcquireOptions{}); !errors.Is(err, ErrNoFreeItem) {
		t.Fatalf("third TryAcquire = %v; want ErrNoFreeItem", err)
	}
	// l2 is released once w3's Acquire is blocked: queued for a wake-up.
	start := time.Now()
	type result struct {
		l   *Lease
		err error
		at  time.Time
	}
	blocked := make(chan result, 1)
	go func() {
		l, err := a.Acquire(ctx, "w3", AcquireOptions{TTL: time.Minute})
		blocked <- result{l, err, time.Now()}
	}()
	redistest.Eventually(t, "w3's Acquire queued for a wake-up", 10*time.Second, func() bool { return QueuedWaiters(pool) == 1 })
	_ = l2.Release(ctx)
	r := <-blocked
	l3, err := r.l, r.err
	if err != nil || l3.item != l2.item {
		t.Fatalf("Acquire = %v, %v; want %q", l3, err, l2.item)
	}
	if d := r.at.Sub(start); d > 250*time.Millisecond {
		t.Fatalf("hand-off took %v; want the release to wake the waiter (%s)", d, redistest.SchedDelay())
	}
	// Nothing is released now: the waiter sleeps until l1 expires.
	start = time.Now()
	l4, err := a.Acquire(ctx, "w4", AcquireOptions{TTL: time.Minute})
	if err != nil || l4.item != l1.item {
		t.Fatalf("Acquire = %v, %v; want %q after it expired", l4, err, l1.item)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("expiry wait took %v (%s)", d, redistest.SchedDelay())
	}
	if err := l1.Refresh(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Refresh of the expired lease = %v; want ErrLeaseLost", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := a.Acquire(cctx, "w5", AcquireOptions{}); !errors.Is(err, ErrNoFreeItem) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire with everything leased = %v; want ErrNoFreeItem and DeadlineExceeded", err)
	}
}

// released is release reduced to whether the lease was current.
func released(s *memoryStore, ctx context.Context, l *Lease, hold time.Duration) (bool, error) {
	v, _, err := s.release(ctx, l, hold, quarantineMarker)
	return v == verdictHeld, err
}
