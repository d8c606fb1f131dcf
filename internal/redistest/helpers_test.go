package redistest_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
)

func TestEventually(t *testing.T) {
	t.Parallel()
	calls := 0
	took := redistest.Eventually(t, "the third call", time.Second, func() bool {
		calls++
		return calls == 3
	})
	if calls != 3 || took <= 0 || took > time.Second {
		t.Fatalf("Eventually returned after %d calls, %v; want 3 calls within 1s", calls, took)
	}
	msg := recordFatal(t, func(tb testing.TB) {
		redistest.Eventually(tb, "a condition that never holds", 50*time.Millisecond, func() bool { return false })
	})
	for _, want := range []string{"a condition that never holds", "not within 50ms", "scheduling delay"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("timeout message %q does not say %q", msg, want)
		}
	}
}

func TestMust(t *testing.T) {
	t.Parallel()
	redistest.Must(t, nil)
	if msg := recordFatal(t, func(tb testing.TB) { redistest.Must(tb, errors.New("boom")) }); !strings.Contains(msg, "boom") {
		t.Fatalf("Must's message %q does not carry the error", msg)
	}
}

func TestStartReplica(t *testing.T) {
	t.Parallel()
	primary := redistest.StartServer(t)
	pc := primary.Client(t)
	if err := pc.Set(ctx(t), "before", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	replica := primary.StartReplica(t)
	rc := replica.Client(t)
	mustGet(t, rc, "before", "1") // in sync when StartReplica returns
	if err := pc.Set(ctx(t), "after", "2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := pc.Do(ctx(t), "WAIT", 1, 5000).Err(); err != nil {
		t.Fatal(err)
	}
	mustGet(t, rc, "after", "2")
	if role, master, _ := role(t, replica.Addr); role != "slave" || master != primary.Addr {
		t.Fatalf("replica ROLE = %s of %s; want slave of %s", role, master, primary.Addr)
	}
}

func TestBackends(t *testing.T) {
	t.Parallel()
	var names []string
	for _, b := range redistest.Backends() {
		names = append(names, b.Name)
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			if b.Name == "redis-cluster" {
				msg := recordFatal(t, func(tb testing.TB) { b.Client(tb) })
				if !strings.Contains(msg, "before its Start") {
					t.Fatalf("Client before Start: %q", msg)
				}
			}
			b.Start(t)
			c, prefix := b.Client(t), b.Prefix(t)
			if tagged := strings.HasPrefix(prefix, "{") && strings.HasSuffix(prefix, "}"); tagged != (b.Name == "redis-cluster") {
				t.Fatalf("%s prefix %q: hash tag %v", b.Name, prefix, tagged)
			}
			// Keys of one prefix work together in one script call, as a
			// pool's do, on the cluster too.
			keys := []string{prefix + "|a", prefix + "|b"}
			if err := c.Eval(ctx(t), "redis.call('SET', KEYS[1], 'x'); return redis.call('RENAME', KEYS[1], KEYS[2])", keys).Err(); err != nil {
				t.Fatalf("script over %q: %v", keys, err)
			}
			if v, err := c.Get(ctx(t), keys[1]).Result(); err != nil || v != "x" {
				t.Fatalf("GET %s = %q, %v", keys[1], v, err)
			}
		})
	}
	if strings.Join(names, ",") != "redis,redis-cluster" {
		t.Fatalf("Backends = %v; want redis, redis-cluster", names)
	}
}
