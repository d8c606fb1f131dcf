package allocator_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// Discontinuities of the Redis dataset (see the package comment): data
// lost with a restart, a dataset taken over by another server (a replica
// promoted by hand, as Sentinel does), a record deleted, and the quiet
// period, fencing counter and lost-lease reasons that follow; and the
// changes of replication id that lose nothing (a first replica attaching).

// movable is a client whose connections go wherever target points: the
// master of a small replication set the test fails over by hand.
type movable struct {
	c      *redis.Client
	target atomic.Pointer[string]
	master *redistest.Server
}

func newMovable(t *testing.T) *movable {
	m := &movable{master: redistest.StartServer(t)}
	addr := m.master.Addr
	m.target.Store(&addr)
	m.c = redis.NewClient(&redis.Options{
		Addr:                  "master",
		ContextTimeoutEnabled: true,
		Dialer: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, *m.target.Load())
		},
	})
	redistest.CheckScripts(m.c)
	t.Cleanup(func() { m.c.Close() })
	return m
}

// failover promotes a replica of the master, as Sentinel does: a replica
// is attached and caught up, made a master (REPLICAOF NO ONE: a new
// replication id), clients are sent to it, and the old master is stopped,
// dropping their connections to it.
func (m *movable) failover(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	replica := m.master.StartReplica(t)
	rc := replica.Client(t)
	// Writes stop on the old master and the replica catches up before it
	// is promoted, so nothing acknowledged is lost: the test is about
	// the new identity, not lost writes. (Clients' scripts block on the
	// paused master until it is killed, then go to the new one.)
	oc := m.master.Client(t)
	must(t, oc.Do(ctx, "CLIENT", "PAUSE", "10000", "WRITE").Err())
	redistest.Eventually(t, "the replica caught up", 10*time.Second, func() bool {
		mi, _ := oc.Info(ctx, "replication").Result()
		ri, _ := rc.Info(ctx, "replication").Result()
		off := func(info, field string) string {
			_, v, _ := strings.Cut(info, field+":")
			v, _, _ = strings.Cut(v, "\r")
			return v
		}
		return off(mi, "master_repl_offset") != "" && off(mi, "master_repl_offset") == off(ri, "slave_repl_offset")
	})
	must(t, rc.Do(ctx, "REPLICAOF", "NO", "ONE").Err())
	addr := replica.Addr
	m.target.Store(&addr)
	m.master.Kill()
	m.master = replica
}

// wantQuiet asserts that err is the quiet period's refusal.
func wantQuiet(t *testing.T, what string, err error) {
	t.Helper()
	wantErr(t, what, err, allocator.ErrNoFreeItem, allocator.ErrQuietPeriod)
}

// lostReason returns the reason of a LostError, or "".
func lostReason(err error) allocator.LostReason {
	var lost *allocator.LostError
	if errors.As(err, &lost) {
		return lost.Reason
	}
	return ""
}

func TestDiscontinuityNewPoolHasNoQuietPeriod(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	a, pool, ctx := redisSetup(t, c, allocator.Config{LeaseTTL: long})
	must(t, pool.Extend(ctx, []string{"a"}))
	l := mustTryOn(t, ctx, a, "w", allocator.AcquireOptions{})
	if d := a.Dataset(); d.Gen != 1 || !d.QuietUntil.IsZero() {
		t.Fatalf("Dataset of a new pool = %+v; want generation 1, no quiet period", d)
	}
	must(t, l.Release(ctx))
}

// TestDiscontinuityDataLoss restarts a server without persistence: every
// key is lost, the epoch record and the fencing counter included.
func TestDiscontinuityDataLoss(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second // long enough for a loaded machine between grant and release
	s := redistest.StartServer(t)
	c := s.Client(t)
	var seen atomic.Int64
	a, pool, ctx := redisSetup(t, c, allocator.Config{LeaseTTL: ttl, OnDiscontinuity: func(d allocator.Dataset) { seen.Store(d.Gen) }})
	must(t, pool.Extend(ctx, []string{"a", "b"}))
	var last int64
	for range 50 {
		l := mustTryOn(t, ctx, a, "w", allocator.AcquireOptions{})
		last = l.Token()
		must(t, l.Release(ctx))
	}
	held := mustTryOn(t, ctx, a, "w", allocator.AcquireOptions{})
	last = held.Token()

	s.Restart()
	redistest.Eventually(t, "Extend after restart", 5*time.Second, func() bool { return pool.Extend(ctx, []string{"a", "b"}) == nil })
	// The process remembers the dataset it saw: the empty one is a
	// discontinuity, not a new pool.
	_, err := tryOn(t, ctx, a, "w", allocator.AcquireOptions{})
	wantQuiet(t, "TryAcquire after the data loss", err)
	d := a.Dataset()
	if d.Gen != 2 || d.QuietUntil.Sub(d.Since) < ttl {
		t.Fatalf("Dataset after the data loss = %+v; want generation 2, quiet for at least the lease TTL %v", d, ttl)
	}
	if seen.Load() != 2 {
		t.Fatalf("OnDiscontinuity saw generation %d; want 2", seen.Load())
	}
	err = held.Refresh(ctx)
	if !errors.Is(err, allocator.ErrLeaseLost) || lostReason(err) != allocator.LostDiscontinuity {
		t.Fatalf("Refresh after the data loss = %v; want ErrLeaseLost, reason discontinuity", err)
	}
	// A blocked Acquire is granted once the quiet period is over, not before.
	l, err := acquireOn(t, ctx, a, "w", allocator.AcquireOptions{})
	must(t, err)
	if granted := l.Deadline().Add(-ttl); granted.Before(d.QuietUntil) {
		t.Fatalf("granted at %v (server time), inside the quiet period ending %v", granted, d.QuietUntil)
	}
	if l.Token() <= last {
		t.Fatalf("token %d after the data loss; not above %d", l.Token(), last)
	}
	last = l.Token()
	must(t, l.Release(ctx))
	for i := range 20 {
		l := mustTryOn(t, ctx, a, "w", allocator.AcquireOptions{})
		if l.Token() <= last {
			t.Fatalf("acquire %d after data loss: token %d, not above %d", i, l.Token(), last)
		}
		last = l.Token()
		must(t, l.Release(ctx))
	}
}

// TestDiscontinuityPromotionKeepsSurvivingLeases: the dataset is intact
// but served by another server (a promoted replica). Leases in it survive
// and keep refreshing; nothing is granted for the quiet period; tokens jump
// above everything issued before.
func TestDiscontinuityPromotionKeepsSurvivingLeases(t *testing.T) {
	t.Parallel()
	// The surviving lease's keep-alive must outlast the failover (writes
	// paused, the replica caught up and promoted, the old master killed:
	// seconds on a loaded machine) and the quiet period after it. 5s once
	// let the lease expire in an 18s run under make test.
	const ttl = 8 * time.Second
	m := newMovable(t)
	c := m.c
	a, pool, ctx := redisSetup(t, c, allocator.Config{LeaseTTL: ttl})
	must(t, pool.Extend(ctx, []string{"a", "b", "c"}))
	held := mustTryOn(t, ctx, a, "w", allocator.AcquireOptions{Prefer: "a"})
	fence := func() int64 {
		n, err := c.Get(ctx, pool.Keys().Fence()).Int64()
		must(t, err)
		return n
	}
	before := fence()
	ka, err := held.KeepAlive(ctx, allocator.KeepAliveOptions{Interval: ttl / 5})
	must(t, err)
	m.failover(t)

	must(t, held.Refresh(ctx)) // survived: not a grant
	_, err = tryOn(t, ctx, a, "w", allocator.AcquireOptions{})
	wantQuiet(t, "TryAcquire after the promotion", err)
	d := a.Dataset()
	if d.Gen != 2 {
		t.Fatalf("Dataset after the promotion = %+v; want generation 2", d)
	}
	if got := fence(); got < before+1_000_000 {
		t.Fatalf("fencing counter %d after the promotion; want lifted to at least %d", got, before+1_000_000)
	}
	l, err := acquireOn(t, ctx, a, "w", allocator.AcquireOptions{})
	must(t, err)
	if granted := l.Deadline().Add(-ttl); granted.Before(d.QuietUntil) {
		t.Fatalf("granted at %v, inside the quiet period ending %v", granted, d.QuietUntil)
	}
	if l.Item() == "a" || l.Token() <= before+1_000_000 {
		t.Fatalf("granted %s token %d; want another item than the surviving lease's, token above %d", l.Item(), l.Token(), before+1_000_000)
	}
	if ka.Err() != nil {
		t.Fatalf("the surviving lease's keep-alive ended: %v", ka.Err())
	}
	ka.Stop()
	if err := held.Release(ctx); err != nil {
		t.Fatalf("releasing the surviving lease: %v (%s)", err, redistest.SchedDelay())
	}
	must(t, l.Release(ctx))
}

// TestDiscontinuityQuietLastsTheLongestTTL: the quiet period covers the
// longest lease TTL in use on the pool, recorded by any allocator, not only
// the TTL of the one that noticed; and a process that knows a longer one
// lengthens it.
func TestDiscontinuityQuietLastsTheLongestTTL(t *testing.T) {
	t.Parallel()
	m := newMovable(t)
	c := m.c
	a, pool, ctx := redisSetup(t, c, allocator.Config{LeaseTTL: 300 * time.Millisecond})
	must(t, pool.Extend(ctx, []string{"a", "b"}))
	// Another process's lease with a long TTL, once.
	other, err := allocator.NewRedis(pool, allocator.Config{LeaseTTL: 2 * time.Second})
	must(t, err)
	closeOnCleanup(t, other)
	l := mustTryOn(t, ctx, other, "other", allocator.AcquireOptions{})
	must(t, l.Release(ctx))

	m.failover(t)
	_, err = tryOn(t, ctx, a, "w", allocator.AcquireOptions{})
	wantQuiet(t, "TryAcquire after the promotion", err)
	d := a.Dataset()
	if q := d.QuietUntil.Sub(d.Since); q < 2*time.Second {
		t.Fatalf("quiet period %v; want at least the 2s TTL recorded by the other allocator", q)
	}

	// A third process with a 3s TTL that was never recorded lengthens it
	// when it calls during the quiet period.
	third, err := allocator.NewRedis(pool, allocator.Config{LeaseTTL: 3 * time.Second})
	must(t, err)
	closeOnCleanup(t, third)
	_, err = tryOn(t, ctx, third, "third", allocator.AcquireOptions{})
	wantQuiet(t, "TryAcquire of the third process", err)
	if d3 := third.Dataset(); d3.QuietUntil.Sub(d.Since) < 3*time.Second {
		t.Fatalf("quiet period after the third process %v; want at least its 3s TTL", d3.QuietUntil.Sub(d.Since))
	}
}

// TestDiscontinuityRecordDeleted: the pool's keys lost one by one (an
// operator's DEL, an eviction) are a discontinuity too, seen by a process
// that never saw the pool before.
func TestDiscontinuityRecordDeleted(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	a, pool, ctx := redisSetup(t, c, allocator.Config{LeaseTTL: long})
	must(t, pool.Extend(ctx, []string{"a"}))
	l := mustTryOn(t, ctx, a, "w", allocator.AcquireOptions{})
	must(t, l.Release(ctx))
	// a knew the pool: left running, its background sync would see the
	// record fresh writes and start a generation of its own (as
	// TestDiscontinuityRecordRecreated checks), which fresh could learn
	// before its Dataset is read (seen under make test).
	must(t, a.Close())
	must(t, c.Del(ctx, pool.Keys().Epoch()).Err())

	fresh, err := allocator.NewRedis(pool, allocator.Config{LeaseTTL: 200 * time.Millisecond})
	must(t, err)
	closeOnCleanup(t, fresh)
	_, err = tryOn(t, ctx, fresh, "w", allocator.AcquireOptions{})
	wantQuiet(t, "TryAcquire once the epoch record is gone", err)
	// The fencing counter and the index show the pool was used: the quiet
	// period covers the fresh process's TTL (the record of the minute-long
	// TTL was lost with it).
	if d := fresh.Dataset(); d.Gen != 1 || d.QuietUntil.Sub(d.Since) < 200*time.Millisecond {
		t.Fatalf("Dataset = %+v; want generation 1 with a quiet period", d)
	}
}

// TestDiscontinuityRecordRecreated: after everything was lost, a process
// new to the pool writes a new record before any process that knew the
// pool comes back. The first of those to call notices, and starts the
// quiet period then. Everything lost: with a restart, and on the same
// server (FLUSHALL keeps the replication id).
func TestDiscontinuityRecordRecreated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		lose func(*testing.T, *redistest.Server, *redis.Client)
	}{
		{"restart", func(_ *testing.T, s *redistest.Server, _ *redis.Client) { s.Restart() }},
		{"flushall", func(t *testing.T, _ *redistest.Server, c *redis.Client) {
			must(t, c.FlushAll(context.Background()).Err())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testRecordRecreated(t, tc.lose)
		})
	}
}

func testRecordRecreated(t *testing.T, lose func(*testing.T, *redistest.Server, *redis.Client)) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	old, pool, ctx := redisSetup(t, c, allocator.Config{LeaseTTL: 400 * time.Millisecond, SyncInterval: time.Hour, FullSyncInterval: time.Hour})
	must(t, pool.Extend(ctx, []string{"a", "b"}))
	l := mustTryOn(t, ctx, old, "w", allocator.AcquireOptions{})
	must(t, l.Release(ctx))

	lose(t, s, c)
	newcomer, err := allocator.NewRedis(pool, allocator.Config{LeaseTTL: 400 * time.Millisecond})
	must(t, err)
	closeOnCleanup(t, newcomer)
	must(t, pool.Extend(ctx, []string{"a", "b"}))
	nl, err := tryOn(t, ctx, newcomer, "new", allocator.AcquireOptions{})
	must(t, err) // a new pool, as far as it can tell
	_, err = tryOn(t, ctx, old, "w", allocator.AcquireOptions{})
	wantQuiet(t, "TryAcquire of the process that knew the pool", err)
	_, err = tryOn(t, ctx, newcomer, "new", allocator.AcquireOptions{})
	wantQuiet(t, "TryAcquire of the newcomer once the other noticed", err)
	if d := old.Dataset(); d.Gen != 2 {
		t.Fatalf("Dataset = %+v; want generation 2, above the 1 the old process saw", d)
	}
	must(t, nl.Release(ctx))
}

func TestCheckServerRefusesEviction(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args  []string
		safe  bool
		about string
	}{
		{[]string{"--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"}, false, "allkeys-lru"},
		{[]string{"--maxmemory", "100mb", "--maxmemory-policy", "volatile-lru"}, false, "volatile-lru"},
		{[]string{"--maxmemory", "100mb", "--maxmemory-policy", "volatile-ttl"}, false, "volatile-ttl"},
		{[]string{"--maxmemory", "100mb", "--maxmemory-policy", "noeviction"}, true, ""},
		{[]string{"--maxmemory", "0", "--maxmemory-policy", "allkeys-lru"}, true, ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			s := redistest.StartServer(t, tc.args...)
			c := s.Client(t)
			lcfg := lock.Config{Prefix: redistest.Prefix(t)}
			a, err := allocator.NewRedis(poolOn(t, c, lcfg), allocator.Config{})
			if tc.safe {
				must(t, err)
				closeOnCleanup(t, a)
				return
			}
			wantErr(t, "NewRedis on a server that evicts", err, allocator.ErrUnsafeServer)
			if !strings.Contains(err.Error(), "maxmemory-policy "+tc.about) || !strings.Contains(err.Error(), "noeviction") {
				t.Fatalf("error %q does not name the setting and the fix", err)
			}
			if n, err := c.DBSize(context.Background()).Result(); err != nil || n != 0 {
				t.Fatalf("DBSIZE %d, %v after the refusal; want nothing written", n, err)
			}
			a, err = allocator.NewRedis(poolOn(t, c, lcfg), allocator.Config{AllowEviction: true})
			must(t, err)
			closeOnCleanup(t, a)
		})
	}
}

// TestLostLeaseEvicted: with eviction accepted, a lease whose key Redis
// evicted says so. volatile-lru evicts keys with a TTL first: the locks.
func TestLostLeaseEvicted(t *testing.T) {
	t.Parallel()
	s := redistest.StartServer(t, "--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru")
	c := s.Client(t)
	a, pool, ctx := redisSetup(t, c, allocator.Config{LeaseTTL: long, AllowEviction: true})
	must(t, pool.Extend(ctx, []string{"a"}))
	l := mustTryOn(t, ctx, a, "w", allocator.AcquireOptions{})
	big := strings.Repeat("x", 64<<10)
	for i := 0; ; i++ {
		if n, _ := c.Exists(ctx, pool.Key("a")).Result(); n == 0 {
			break
		}
		if i > 1000 {
			t.Fatal("the lock key was not evicted after 64 MB of writes")
		}
		// Filler keys with a TTL too, so that volatile-lru has a choice.
		_ = c.Set(ctx, "filler:"+pool.Keys().Prefix()+":"+strconv.Itoa(i), big, time.Hour).Err()
	}
	err := l.Refresh(ctx)
	if !errors.Is(err, allocator.ErrLeaseLost) || lostReason(err) != allocator.LostEvicted {
		t.Fatalf("Refresh of an evicted lease = %v; want reason evicted", err)
	}
}

// TestMinReplicasAcked: with MinReplicasAcked a grant counts only once a
// replica acknowledged it. Without a replica, grants are undone and
// reported; with one, they work.
func TestMinReplicasAcked(t *testing.T) {
	t.Parallel()
	primary := redistest.StartServer(t)
	c := primary.Client(t)
	cfg := allocator.Config{LeaseTTL: long, MinReplicasAcked: 1, ReplicaAckTimeout: 100 * time.Millisecond}
	a, pool, ctx := redisSetup(t, c, cfg)
	must(t, pool.Extend(ctx, []string{"a"}))
	_, err := tryOn(t, ctx, a, "w", allocator.AcquireOptions{})
	wantErr(t, "TryAcquire with no replica", err, allocator.ErrNotReplicated)
	if locked, _ := pool.IsLocked(ctx, "a"); locked {
		t.Fatalf("the unacknowledged grant was left in place (TryAcquire said: %v; %s)", err, redistest.SchedDelay())
	}

	rc := primary.StartReplica(t).Client(t)
	// Another process, with a timeout a loaded machine's replica meets.
	a, err = allocator.NewRedis(pool, allocator.Config{LeaseTTL: long, MinReplicasAcked: 1, ReplicaAckTimeout: 5 * time.Second})
	must(t, err)
	closeOnCleanup(t, a)
	// The master drew a new replication id for its first replica: no
	// discontinuity.
	l := mustTryOn(t, ctx, a, "w", allocator.AcquireOptions{})
	if d := a.Dataset(); d.Gen != 1 {
		t.Fatalf("Dataset after a replica attached = %+v; want generation 1 still", d)
	}
	must(t, l.Refresh(ctx))
	if v, err := rc.Get(ctx, pool.Key("a")).Result(); err != nil || v != l.Value() {
		t.Fatalf("replica holds %q, %v; want the acknowledged lease %q", v, err, l.Value())
	}
	must(t, l.Release(ctx))
}
