package redistest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
)

// setAndReplicate writes key=val through c and waits until every replica of
// the master has acknowledged it (WAIT), so that a failover cannot lose it.
func setAndReplicate(t *testing.T, c *redis.Client, key, val string, replicas int) {
	t.Helper()
	if err := c.Set(ctx(t), key, val, 0).Err(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
	n, err := c.Wait(ctx(t), replicas, 5*time.Second).Result()
	if err != nil || n < int64(replicas) {
		t.Fatalf("WAIT %d after SET %s: %d, %v", replicas, key, n, err)
	}
}

// role returns ROLE's first element and, for a replica, its master and link
// state.
func role(t *testing.T, addr string) (string, string, string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer c.Close()
	v, err := c.Do(ctx(t), "ROLE").Slice()
	if err != nil || len(v) == 0 {
		t.Fatalf("ROLE on %s: %v, %v", addr, v, err)
	}
	if v[0] == "slave" {
		return "slave", fmt.Sprintf("%v:%v", v[1], v[2]), fmt.Sprint(v[3])
	}
	return fmt.Sprint(v[0]), "", ""
}

func TestSentinelStartAndRepeatedFailover(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	if s.MasterName() != "lockpool" || len(s.SentinelAddrs()) != 3 || len(s.Addrs()) != 2 {
		t.Fatalf("MasterName %q, SentinelAddrs %v, Addrs %v", s.MasterName(), s.SentinelAddrs(), s.Addrs())
	}
	if got := s.MasterAddr(t); got != s.Addrs()[0] {
		t.Fatalf("MasterAddr = %s, want the first data server %s", got, s.Addrs()[0])
	}
	if r, m, st := role(t, s.Addrs()[1]); r != "slave" || m != s.Addrs()[0] || st != "connected" {
		t.Fatalf("replica %s: ROLE %s of %s (%s)", s.Addrs()[1], r, m, st)
	}
	if s.Server(s.Addrs()[1]) == nil || s.Server("127.0.0.1:1") != nil {
		t.Fatal("Server lookup is wrong")
	}

	c := s.Client(t)
	if !c.Options().ContextTimeoutEnabled {
		t.Fatal("failover client lacks ContextTimeoutEnabled")
	}
	p := redistest.Prefix(t)
	setAndReplicate(t, c, p+"k0", "v0", 1)

	for i := 1; i <= 5; i++ {
		start := time.Now()
		old, new := s.Failover(t)
		t.Logf("failover %d: %s -> %s in %v", i, old, new, time.Since(start).Round(time.Millisecond))
		if old == new || s.Server(old) == nil || s.Server(new) == nil {
			t.Fatalf("failover %d: old %s, new %s", i, old, new)
		}
		if got := s.MasterAddr(t); got != new {
			t.Fatalf("failover %d: MasterAddr = %s, want %s", i, got, new)
		}
		if r, m, st := role(t, old); r != "slave" || m != new || st != "connected" {
			t.Fatalf("failover %d: old master %s: ROLE %s of %s (%s), want slave of %s", i, old, r, m, st, new)
		}
		// The failover client follows; earlier writes survived.
		setAndReplicate(t, c, fmt.Sprintf("%sk%d", p, i), "v", 1)
		for j := 0; j <= i; j++ {
			if err := c.Get(ctx(t), fmt.Sprintf("%sk%d", p, j)).Err(); err != nil {
				t.Fatalf("failover %d: GET k%d through the failover client: %v", i, j, err)
			}
		}
		if got := s.Server(new).Client(t).Get(ctx(t), p+"k0").Val(); got != "v0" {
			t.Fatalf("failover %d: k0 on new master = %q", i, got)
		}
	}
}

func TestSentinelKillMasterAndRestart(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t, redistest.SentinelOptions{
		MasterName: "kill-test",
		Replicas:   2,
		ServerArgs: []string{"--appendonly", "yes", "--appendfsync", "always"},
	})
	if len(s.Addrs()) != 3 {
		t.Fatalf("Addrs = %v, want 3 data servers", s.Addrs())
	}
	c := s.Client(t)
	p := redistest.Prefix(t)
	setAndReplicate(t, c, p+"before", "1", 2)

	// A forced failover first: the automatic failover after the kill must
	// not be held back by it.
	if o, n := s.Failover(t); o != s.Addrs()[0] || n == o {
		t.Fatalf("first Failover: %s -> %s", o, n)
	}

	before := time.Now()
	old := s.KillMaster(t)
	if at := s.KilledAt(); at.Before(before) || at.After(time.Now()) {
		t.Fatalf("KilledAt = %v, want between %v and now", at, before)
	}
	t.Logf("kill -9 failover took %v", time.Since(s.KilledAt()).Round(time.Millisecond))
	if s.Server(old).Pid() != 0 || s.Server(old).Running() {
		t.Fatalf("killed master %s still has a pid", old)
	}
	if err := dial(old); err == nil {
		t.Fatalf("killed master %s still accepts connections", old)
	}
	master := s.MasterAddr(t)
	if master == old {
		t.Fatalf("MasterAddr still %s after KillMaster", old)
	}
	if got, err := c.Get(ctx(t), p+"before").Result(); err != nil || got != "1" {
		t.Fatalf("GET after kill failover = %q, %v", got, err)
	}
	setAndReplicate(t, c, p+"after", "2", 1)

	s.RestartKilled(t)
	if r, m, st := role(t, old); r != "slave" || m != master || st != "connected" {
		t.Fatalf("restarted %s: ROLE %s of %s (%s), want slave of %s", old, r, m, st, master)
	}
	// The restarted server caught up with the write made while it was down.
	if n, err := c.Wait(ctx(t), 2, 5*time.Second).Result(); err != nil || n < 2 {
		t.Fatalf("WAIT 2 after RestartKilled: %d, %v", n, err)
	}
	if got := s.Server(old).Client(t).Get(ctx(t), p+"after").Val(); got != "2" {
		t.Fatalf("restarted replica %s: after = %q, want 2", old, got)
	}

	// A forced failover right after the automatic one.
	o, n := s.Failover(t)
	if o != master || n == master {
		t.Fatalf("Failover after KillMaster: %s -> %s, master was %s", o, n, master)
	}
}

func TestSentinelKillMasterTwice(t *testing.T) {
	t.Parallel()
	// A completed failover resets the sentinels' failover clock: the second
	// automatic failover is not held back by failover-timeout (10s).
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	c := s.Client(t)
	p := redistest.Prefix(t)
	for i := 1; i <= 2; i++ {
		setAndReplicate(t, c, fmt.Sprintf("%sk%d", p, i), "v", 1)
		start := time.Now()
		old := s.KillMaster(t)
		t.Logf("kill %d: failover took %v", i, time.Since(start).Round(time.Millisecond))
		s.RestartKilled(t)
		if r, m, st := role(t, old); r != "slave" || m != s.MasterAddr(t) || st != "connected" {
			t.Fatalf("kill %d: restarted %s: ROLE %s of %s (%s)", i, old, r, m, st)
		}
		for j := 1; j <= i; j++ {
			if err := c.Get(ctx(t), fmt.Sprintf("%sk%d", p, j)).Err(); err != nil {
				t.Fatalf("kill %d: GET k%d: %v", i, j, err)
			}
		}
	}
}

func TestSentinelFailuresAreReported(t *testing.T) {
	t.Parallel()
	t.Run("bad server args", func(t *testing.T) {
		t.Parallel()
		msg := recordFatal(t, func(tb testing.TB) {
			redistest.StartSentinel(tb, redistest.SentinelOptions{ServerArgs: []string{"--no-such-directive", "1"}})
		})
		for _, want := range []string{"StartSentinel", "redis-server output", "no-such-directive"} {
			if !strings.Contains(msg, want) {
				t.Fatalf("failure message lacks %q:\n%s", want, msg)
			}
		}
	})
	t.Run("no replica to promote", func(t *testing.T) {
		t.Parallel()
		s := redistest.StartSentinel(t, redistest.SentinelOptions{
			MasterName:      "lonely",
			FailoverTimeout: time.Second,
			WaitTimeout:     time.Second,
		})
		replica := s.Addrs()[1]
		s.Server(replica).Kill()
		// Wait until every sentinel considers the replica down.
		for _, addr := range s.SentinelAddrs() {
			sc := redis.NewSentinelClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
			defer sc.Close()
			deadline := time.Now().Add(10 * time.Second)
			for {
				rs, err := sc.Replicas(ctx(t), "lonely").Result()
				if err == nil && len(rs) == 1 && strings.Contains(rs[0]["flags"], "s_down") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("sentinel %s: replicas %v, %v", addr, rs, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}

		start := time.Now()
		msg := recordFatal(t, func(tb testing.TB) { s.Failover(tb) })
		t.Logf("Failover gave up after %v", time.Since(start).Round(time.Millisecond))
		for _, want := range []string{"Failover", "SENTINEL FAILOVER lonely", "NOGOODSLAVE", "--- sentinel"} {
			if !strings.Contains(msg, want) {
				t.Fatalf("Failover failure message lacks %q:\n%s", want, msg)
			}
		}

		start = time.Now()
		msg = recordFatal(t, func(tb testing.TB) { s.KillMaster(tb) })
		t.Logf("KillMaster gave up after %v", time.Since(start).Round(time.Millisecond))
		for _, want := range []string{"KillMaster", "timed out after 3s", "promote a replica", "last seen: every sentinel still reports", "--- sentinel"} {
			if !strings.Contains(msg, want) {
				t.Fatalf("KillMaster failure message lacks %q:\n%s", want, msg)
			}
		}
	})
}

// recordFatal runs f with a testing.TB whose Fatalf ends f instead of the
// test, and returns the failure message ("" if f did not fail).
func recordFatal(t *testing.T, f func(testing.TB)) string {
	t.Helper()
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(rec)
	}()
	<-done
	if rec.msg == "" {
		t.Fatal("expected a failure, got none")
	}
	return rec.msg
}
