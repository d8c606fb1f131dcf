package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterSlots is the number of hash slots of a Redis Cluster.
const ClusterSlots = 16384

// ClusterOptions configures [StartCluster]. The zero value is usable.
type ClusterOptions struct {
	// Masters is the number of master nodes. Default 3. The cluster has no
	// replicas.
	Masters int
	// NodeTimeout is the nodes' cluster-node-timeout. Default 2s.
	NodeTimeout time.Duration
	// ServerArgs are extra redis-server arguments for every node, appended
	// to the defaults of [StartServer] and the cluster arguments.
	ServerArgs []string
	// WaitTimeout bounds StartCluster's wait for the cluster to be ready.
	// Default 30s.
	WaitTimeout time.Duration
}

// Cluster is a Redis Cluster owned by one test, started by [StartCluster]:
// master nodes only, each a local redis-server on free 127.0.0.1 ports. Its
// methods may be called from any goroutine, except Client, which registers a
// cleanup with the test it is given.
//
// StartCluster takes 2.1-2.8s on the development machine (2 CPUs,
// redis-server 7.0.15, go test -race), up to 6s while the package's other
// tests start servers too: a freshly started master reports cluster_state:ok
// only 2s after its start at the earliest.
type Cluster struct {
	nodes serverSet
	// first[i] is the first slot of nodes[i]; it owns first[i] up to
	// first[i+1]-1 (the last node up to 16383).
	first []int
}

// StartCluster starts a Redis Cluster for the test: opts.Masters
// redis-servers (the defaults of [StartServer] plus "--cluster-enabled yes
// --cluster-config-file <dir>/nodes.conf --cluster-node-timeout
// <opts.NodeTimeout>" and opts.ServerArgs), each in its own temporary
// directory. Each node listens on a free 127.0.0.1 port and runs its cluster
// bus on a second free port, set with cluster-port (Redis 7; the default
// port+10000 may be taken or above 65535); a start that collides with another
// process is retried on other ports. The slots 0-16383 are split evenly in
// consecutive ranges, in the order of [Cluster.Addrs], and assigned with
// CLUSTER ADDSLOTSRANGE; each node gets its own config epoch (CLUSTER
// SET-CONFIG-EPOCH) and the nodes are joined with CLUSTER MEET.
//
// StartCluster returns only when every node reports cluster_state:ok, knows
// every node, and reports (CLUSTER SLOTS) exactly that slot map. The nodes
// are stopped when the test finishes. A node that fails to start fails the
// test with the tail of its output; a cluster that is not ready in time fails
// it naming what was awaited and what was last seen. The harness never moves
// slots; a test that does (or that fails nodes over) must not rely on
// [Cluster.OwnerOf].
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	start := time.Now()
	if opts.Masters <= 0 {
		opts.Masters = 3
	}
	if opts.Masters > ClusterSlots {
		t.Fatalf("redistest: StartCluster: %d masters, more than %d slots", opts.Masters, ClusterSlots)
	}
	if opts.NodeTimeout <= 0 {
		opts.NodeTimeout = 2 * time.Second
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = defaultWaitTimeout
	}
	bin := redisServerBin(t, "StartCluster")
	c := &Cluster{}
	for i := 0; i < opts.Masters; i++ {
		n, err := startClusterNode(t, bin, opts)
		if err != nil {
			t.Fatalf("redistest: StartCluster: node %d: %v", i, err)
		}
		c.nodes = append(c.nodes, n)
		c.first = append(c.first, i*ClusterSlots/opts.Masters)
	}

	for i, n := range c.nodes {
		lo, hi := c.slotRange(i)
		err := probe(n.Addr, func(ctx context.Context, cl *redis.Client) error {
			if err := cl.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
				return fmt.Errorf("CLUSTER SET-CONFIG-EPOCH %d: %w", i+1, err)
			}
			if err := cl.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
				return fmt.Errorf("CLUSTER ADDSLOTSRANGE %d %d: %w", lo, hi, err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("redistest: StartCluster: node %s: %v", n.Addr, err)
		}
	}
	// Every pair meets directly rather than through gossip, which would
	// take a few more seconds.
	for i, a := range c.nodes {
		for _, b := range c.nodes[i+1:] {
			host, port, _ := net.SplitHostPort(b.Addr)
			bus := b.clusterPort
			err := probe(a.Addr, func(ctx context.Context, cl *redis.Client) error {
				return cl.Do(ctx, "CLUSTER", "MEET", host, port, bus).Err()
			})
			if err != nil {
				t.Fatalf("redistest: StartCluster: CLUSTER MEET %s %s %d on %s: %v", host, port, bus, a.Addr, err)
			}
		}
	}

	want := c.slotMap()
	_, err := poll(opts.WaitTimeout, fmt.Sprintf("every node to report cluster_state:ok, %d known nodes and the slot map %v", len(c.nodes), want), func() (bool, string) {
		for _, n := range c.nodes {
			if ok, seen := nodeReady(n.Addr, len(c.nodes), want); !ok {
				return false, seen
			}
		}
		return true, ""
	})
	if err != nil {
		var b strings.Builder
		for _, n := range c.nodes {
			fmt.Fprintf(&b, "--- node %s output (tail) ---\n%s\n", n.Addr, tailLines(n.output(), 15))
		}
		t.Fatalf("redistest: StartCluster: %v\n%s", err, b.String())
	}
	t.Logf("redistest: StartCluster: masters %v ready after %v", c.Addrs(), time.Since(start).Round(time.Millisecond))
	return c
}

// startClusterNode starts one cluster node on a free port with its bus on
// another free port, retrying with new ports if either was taken.
func startClusterNode(t testing.TB, bin string, opts ClusterOptions) (*Server, error) {
	dir := t.TempDir()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var port, bus int
		if port, err = freePort(); err != nil {
			return nil, err
		}
		if bus, err = freePort(); err != nil {
			return nil, err
		}
		if bus == port {
			err = fmt.Errorf("%w (free port %d returned twice)", errAddrInUse, port)
			continue
		}
		args := append([]string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", strconv.FormatInt(opts.NodeTimeout.Milliseconds(), 10),
			"--cluster-port", strconv.Itoa(bus),
			// A node learns its own address from the nodes it meets; a
			// single-node cluster would report "" in CLUSTER SLOTS.
			"--cluster-announce-ip", "127.0.0.1",
		}, opts.ServerArgs...)
		s := &Server{t: t, bin: bin, dir: dir, opts: ServerOptions{Args: args}, clusterPort: bus}
		var p *process
		if p, err = s.start(port); err == nil {
			s.adopt(p)
			return s, nil
		}
		if !errors.Is(err, errAddrInUse) {
			return nil, err
		}
	}
	return nil, err
}

// slotRange returns the first and last slot of node i.
func (c *Cluster) slotRange(i int) (lo, hi int) {
	lo, hi = c.first[i], ClusterSlots-1
	if i+1 < len(c.first) {
		hi = c.first[i+1] - 1
	}
	return lo, hi
}

// slotMap describes the intended slot map as "lo-hi=addr" entries in slot
// order.
func (c *Cluster) slotMap() []string {
	var m []string
	for i, n := range c.nodes {
		lo, hi := c.slotRange(i)
		m = append(m, fmt.Sprintf("%d-%d=%s", lo, hi, n.Addr))
	}
	return m
}

// nodeReady reports whether the node at addr has cluster_state:ok, knows
// nodes nodes and reports the slot map want; otherwise what it reports.
func nodeReady(addr string, nodes int, want []string) (bool, string) {
	var seen string
	err := probe(addr, func(ctx context.Context, c *redis.Client) error {
		s, err := c.ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		info := parseInfo(s)
		if info["cluster_state"] != "ok" || info["cluster_known_nodes"] != strconv.Itoa(nodes) {
			seen = fmt.Sprintf("node %s: cluster_state:%s cluster_known_nodes:%s cluster_slots_assigned:%s",
				addr, info["cluster_state"], info["cluster_known_nodes"], info["cluster_slots_assigned"])
			return nil
		}
		slots, err := c.ClusterSlots(ctx).Result()
		if err != nil {
			return err
		}
		var got []string
		for _, s := range slots {
			var owners []string
			for _, n := range s.Nodes {
				owners = append(owners, n.Addr)
			}
			got = append(got, fmt.Sprintf("%d-%d=%s", s.Start, s.End, strings.Join(owners, ",")))
		}
		sortSlotMap(got)
		if !reflect.DeepEqual(got, want) {
			seen = fmt.Sprintf("node %s: CLUSTER SLOTS %v", addr, got)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Sprintf("node %s: %v", addr, err)
	}
	return seen == "", seen
}

// sortSlotMap sorts "lo-hi=addr" entries by their first slot.
func sortSlotMap(m []string) {
	lo := func(s string) int {
		n, _ := strconv.Atoi(s[:strings.IndexByte(s, '-')])
		return n
	}
	for i := 1; i < len(m); i++ {
		for j := i; j > 0 && lo(m[j]) < lo(m[j-1]); j-- {
			m[j], m[j-1] = m[j-1], m[j]
		}
	}
}

// Addrs returns the host:port of every node, in slot order: the first node
// owns the lowest slots.
func (c *Cluster) Addrs() []string { return c.nodes.addrs() }

// Server returns the node listening on addr (one of [Cluster.Addrs]), or nil
// if there is none.
func (c *Cluster) Server(addr string) *Server { return c.nodes.find(addr) }

// Client returns a new go-redis cluster client seeded with every node, with
// ContextTimeoutEnabled set. It is closed when the test finishes.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cl := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                 c.Addrs(),
		ContextTimeoutEnabled: true,
	})
	CheckScripts(cl)
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// OwnerOf returns the address of the node owning key's hash slot
// ([KeySlot]) in the slot map StartCluster assigned.
func (c *Cluster) OwnerOf(key string) string {
	return c.nodes[c.owner(KeySlot(key))].Addr
}

// NotOwnerOf returns the address of a node that does not own key's hash
// slot (the node after the owner in [Cluster.Addrs], wrapping around), or ""
// if the cluster has a single node.
func (c *Cluster) NotOwnerOf(key string) string {
	if len(c.nodes) < 2 {
		return ""
	}
	return c.nodes[(c.owner(KeySlot(key))+1)%len(c.nodes)].Addr
}

// owner returns the index of the node owning slot.
func (c *Cluster) owner(slot int) int {
	i := len(c.first) - 1
	for i > 0 && c.first[i] > slot {
		i--
	}
	return i
}

// KeySlot returns the Redis Cluster hash slot of key, as CLUSTER KEYSLOT
// computes it: CRC16 (XMODEM: polynomial 0x1021, initial value 0) modulo
// 16384 of the key, or, if the key contains a "{" followed later by a "}"
// with at least one byte between them, of the bytes between the first "{"
// and the first "}" after it (the hash tag).
func KeySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % ClusterSlots)
}

// crc16 is CRC-16/XMODEM, the checksum Redis Cluster uses for key slots.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
