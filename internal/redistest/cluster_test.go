package redistest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
)

func TestKeySlotKnownValues(t *testing.T) {
	t.Parallel()
	// Values from the Redis Cluster specification and CLUSTER KEYSLOT.
	for key, want := range map[string]int{
		"123456789":            12739, // CRC16/XMODEM check value 0x31C3
		"":                     0,
		"{user1000}.following": redistest.KeySlot("user1000"),
		"{user1000}.followers": redistest.KeySlot("user1000"),
		"foo{}{bar}":           redistest.KeySlot("foo{}{bar}"), // empty tag: whole key
		"foo{{bar}}zap":        redistest.KeySlot("{bar"),
		"foo{bar}{zap}":        redistest.KeySlot("bar"),
		"{t}a":                 redistest.KeySlot("t"),
	} {
		if got := redistest.KeySlot(key); got != want {
			t.Errorf("KeySlot(%q) = %d, want %d", key, got, want)
		}
	}
	if redistest.KeySlot("foo{}{bar}") == redistest.KeySlot("bar") {
		t.Error("an empty hash tag must not select the next tag")
	}
}

func TestCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	if len(c.Addrs()) != 3 {
		t.Fatalf("Addrs = %v, want 3 masters", c.Addrs())
	}
	owner, other := c.OwnerOf("{t}a"), c.NotOwnerOf("{t}a")
	if owner != c.OwnerOf("{t}b") || owner != c.OwnerOf("{t}") || other == "" || other == owner {
		t.Fatalf("OwnerOf({t}a) = %s, OwnerOf({t}b) = %s, NotOwnerOf = %s", owner, c.OwnerOf("{t}b"), other)
	}

	// KeySlot agrees with the server, and OwnerOf with CLUSTER SLOTS.
	direct := redis.NewClient(&redis.Options{Addr: c.Addrs()[0], ContextTimeoutEnabled: true})
	t.Cleanup(func() { direct.Close() })
	keys := []string{"", "a", "{t}a", "{}a", "a{b}c", "{{a}}", "a{", "}{a}", "{a}{b}", "\xff\x00{\x01}", "user:1000", "123456789"}
	for i := 0; i < 200; i++ {
		keys = append(keys, fmt.Sprintf("key:%d:{%d}", i, i*7919))
	}
	pipe := direct.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.ClusterKeySlot(ctx(t), k)
	}
	if _, err := pipe.Exec(ctx(t)); err != nil {
		t.Fatalf("CLUSTER KEYSLOT: %v", err)
	}
	for i, k := range keys {
		if got, want := redistest.KeySlot(k), int(cmds[i].Val()); got != want {
			t.Errorf("KeySlot(%q) = %d, CLUSTER KEYSLOT = %d", k, got, want)
		}
	}
	slots, err := direct.ClusterSlots(ctx(t)).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		for _, slot := range []int{s.Start, s.End} {
			key := slotKey(t, slot)
			if got := c.OwnerOf(key); got != s.Nodes[0].Addr {
				t.Errorf("OwnerOf(%q) (slot %d) = %s, CLUSTER SLOTS says %s", key, slot, got, s.Nodes[0].Addr)
			}
		}
	}

	// Writes through a cluster client seeded only with a node that does not
	// own the slot.
	seeded := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{other}, ContextTimeoutEnabled: true})
	t.Cleanup(func() { seeded.Close() })
	if err := seeded.Set(ctx(t), "{t}a", "1", time.Minute).Err(); err != nil {
		t.Fatalf("SET {t}a via seed %s: %v", other, err)
	}
	if err := seeded.Set(ctx(t), "{t}b", "2", time.Minute).Err(); err != nil {
		t.Fatalf("SET {t}b via seed %s: %v", other, err)
	}
	const script = `redis.call('INCR', KEYS[1]); redis.call('INCRBY', KEYS[2], 10); return redis.call('MGET', KEYS[1], KEYS[2])`
	got, err := seeded.Eval(ctx(t), script, []string{"{t}a", "{t}b"}).StringSlice()
	if err != nil || strings.Join(got, ",") != "2,12" {
		t.Fatalf("multi-key EVAL = %v, %v; want [2 12]", got, err)
	}
	ownerClient := redis.NewClient(&redis.Options{Addr: owner, ContextTimeoutEnabled: true})
	t.Cleanup(func() { ownerClient.Close() })
	if got, err := ownerClient.MGet(ctx(t), "{t}a", "{t}b").Result(); err != nil || fmt.Sprint(got) != "[2 12]" {
		t.Fatalf("MGET on owner %s = %v, %v", owner, got, err)
	}
	otherClient := redis.NewClient(&redis.Options{Addr: other, ContextTimeoutEnabled: true})
	t.Cleanup(func() { otherClient.Close() })
	if err := otherClient.Get(ctx(t), "{t}a").Err(); err == nil || !strings.HasPrefix(err.Error(), "MOVED ") {
		t.Fatalf("GET {t}a on non-owner %s: err = %v, want MOVED", other, err)
	}

	// Sharded pub/sub: SSUBSCRIBE through the cluster client, SPUBLISH from
	// Lua scripts, on the owning node and through the cluster client.
	cc := c.Client(t)
	if !cc.Options().ContextTimeoutEnabled {
		t.Fatal("cluster client lacks ContextTimeoutEnabled")
	}
	const channel = "{t}events"
	sub := cc.SSubscribe(ctx(t), channel)
	t.Cleanup(func() { sub.Close() })
	msg, err := sub.Receive(ctx(t))
	if s, ok := msg.(*redis.Subscription); err != nil || !ok || s.Kind != "ssubscribe" || s.Channel != channel {
		t.Fatalf("SSUBSCRIBE confirmation = %#v, %v", msg, err)
	}
	const publish = `return redis.call('SPUBLISH', KEYS[1], ARGV[1])`
	if n, err := ownerClient.Eval(ctx(t), publish, []string{channel}, "from-owner").Int(); err != nil || n != 1 {
		t.Fatalf("EVAL SPUBLISH on owner %s = %d, %v; want 1 receiver", owner, n, err)
	}
	if n, err := cc.Eval(ctx(t), publish, []string{channel}, "via-cluster-client").Int(); err != nil || n != 1 {
		t.Fatalf("EVAL SPUBLISH through the cluster client = %d, %v; want 1 receiver", n, err)
	}
	for _, want := range []string{"from-owner", "via-cluster-client"} {
		m, err := sub.ReceiveMessage(ctx(t))
		if err != nil || m.Channel != channel || m.Payload != want {
			t.Fatalf("sharded message = %+v, %v; want %q on %s", m, err, want, channel)
		}
	}
	if err := otherClient.Eval(ctx(t), publish, []string{channel}, "x").Err(); err == nil || !strings.HasPrefix(err.Error(), "MOVED ") {
		t.Fatalf("EVAL SPUBLISH on non-owner: err = %v, want MOVED", err)
	}
}

func TestClusterOptions(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{
		Masters:     2,
		NodeTimeout: 750 * time.Millisecond,
		ServerArgs:  []string{"--maxmemory", "8mb"},
	})
	if len(c.Addrs()) != 2 {
		t.Fatalf("Addrs = %v", c.Addrs())
	}
	for i, addr := range c.Addrs() {
		n := c.Server(addr)
		if n == nil || n.Pid() == 0 || n.Dir() == "" {
			t.Fatalf("Server(%s) = %v", addr, n)
		}
		cfg, err := n.Client(t).ConfigGet(ctx(t), "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		if cfg["cluster-node-timeout"] != "750" || cfg["maxmemory"] != "8388608" || cfg["cluster-config-file"] != n.Dir()+"/nodes.conf" {
			t.Fatalf("node %s: cluster-node-timeout %s, maxmemory %s, cluster-config-file %s", addr,
				cfg["cluster-node-timeout"], cfg["maxmemory"], cfg["cluster-config-file"])
		}
		slots, err := n.Client(t).ClusterSlots(ctx(t)).Result()
		if err != nil || len(slots) != 2 {
			t.Fatalf("CLUSTER SLOTS = %v, %v", slots, err)
		}
		want := [][2]int{{0, 8191}, {8192, 16383}}[i]
		found := false
		for _, s := range slots {
			if s.Nodes[0].Addr == addr {
				found = s.Start == want[0] && s.End == want[1]
			}
		}
		if !found {
			t.Fatalf("node %d (%s) does not own %v: %v", i, addr, want, slots)
		}
	}
	cc := c.Client(t)
	for i := 0; i < 50; i++ {
		if err := cc.Set(ctx(t), fmt.Sprintf("k%d", i), i, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	single := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 1})
	if single.NotOwnerOf("x") != "" || single.OwnerOf("x") != single.Addrs()[0] {
		t.Fatalf("single-node cluster: OwnerOf %q, NotOwnerOf %q", single.OwnerOf("x"), single.NotOwnerOf("x"))
	}
	if err := single.Client(t).Set(ctx(t), "x", 1, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
}

// slotKey returns a key whose hash slot is slot.
func slotKey(t *testing.T, slot int) string {
	t.Helper()
	for i := 0; i < 1<<20; i++ {
		k := fmt.Sprintf("k%d", i)
		if redistest.KeySlot(k) == slot {
			return k
		}
	}
	t.Fatalf("no key found for slot %d", slot)
	return ""
}

func TestClusterStartFailureIsReported(t *testing.T) {
	t.Parallel()
	msg := recordFatal(t, func(tb testing.TB) {
		redistest.StartCluster(tb, redistest.ClusterOptions{ServerArgs: []string{"--no-such-directive", "1"}})
	})
	for _, want := range []string{"StartCluster", "node 0", "redis-server output", "no-such-directive", "--cluster-enabled yes"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("failure message lacks %q:\n%s", want, msg)
		}
	}
}
