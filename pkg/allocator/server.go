package allocator

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/pkg/keyspace"
)

// ServerOptions say which server settings CheckServer accepts.
type ServerOptions struct {
	// AllowEviction accepts a server that may evict keys (see
	// Config.AllowEviction).
	AllowEviction bool
}

// ServerInfo is what CheckServer read of the server (of the first master
// that failed the check, or of the last one read on a cluster).
type ServerInfo struct {
	// Addr names the server read, for messages ("" for a plain client).
	Addr string
	// Version is redis_version, RunID run_id (evicted_keys counts from
	// the start of that process).
	Version, RunID string
	// MaxMemory is maxmemory in bytes (0: no limit) and Policy
	// maxmemory-policy.
	MaxMemory int64
	Policy    string
	// EvictedKeys is evicted_keys: keys evicted since the server started.
	EvictedKeys int64
	// Cluster reports cluster_enabled.
	Cluster bool
	// Replicas is connected_slaves.
	Replicas int
	// MinReplicasToWrite reports that the server refuses writes without
	// enough replicas (its min-replicas-to-write setting is on: INFO shows
	// min_slaves_good_slaves).
	MinReplicasToWrite bool
}

// Evicts reports whether the server may evict keys: a maxmemory limit with
// a policy other than noeviction.
func (i ServerInfo) Evicts() bool { return i.MaxMemory > 0 && i.Policy != "noeviction" }

// CheckServer reads the Redis settings the one-holder promise depends on,
// through INFO (which an ACL user allowed +info can run; CONFIG may be
// denied and is not used), and refuses with ErrUnsafeServer, naming the
// setting and the fix:
//   - a server that may evict keys (maxmemory set, maxmemory-policy other
//     than noeviction): an evicted lock key lets a second holder in, and
//     volatile-* policies evict exactly the lock keys, the only keys with a
//     TTL. Accepted with opts.AllowEviction;
//   - a Redis Cluster node behind a client that is not a
//     *redis.ClusterClient (it would loop on MOVED);
//   - a Redis Cluster with a pool prefix that has no hash tag (see
//     pkg/keyspace: every key of a pool must live in one slot).
//
// On a cluster every master is read. Nothing is written.
func CheckServer(ctx context.Context, client redis.UniversalClient, keys keyspace.Pool, opts ServerOptions) (ServerInfo, error) {
	if cc, ok := client.(*redis.ClusterClient); ok {
		if tag, ok := keys.HashTag(); !ok || tag == "" {
			return ServerInfo{Cluster: true}, clusterTagErr(keys)
		}
		var mu sync.Mutex // ForEachMaster calls in parallel
		var last ServerInfo
		var bad error
		err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			info, err := readServer(ctx, node)
			if err != nil {
				return err
			}
			info.Addr = node.Options().Addr
			mu.Lock()
			defer mu.Unlock()
			if err := checkEviction(info, opts); err != nil && bad == nil {
				last, bad = info, err
			}
			if bad == nil {
				last = info
			}
			return nil
		})
		if err != nil {
			return ServerInfo{}, fmt.Errorf("reading the server's settings: %w", err)
		}
		return last, bad
	}
	info, err := readServer(ctx, client)
	if err != nil {
		return ServerInfo{}, fmt.Errorf("reading the server's settings: %w", err)
	}
	if info.Cluster {
		return info, fmt.Errorf("%w: the server is a redis cluster node (cluster_enabled:1): use a cluster client (redis.NewClusterClient; the runner's redis.cluster.addrs), with a hash tag in the pool prefix", ErrUnsafeServer)
	}
	return info, checkEviction(info, opts)
}

func clusterTagErr(keys keyspace.Pool) error {
	p := keys.Prefix()
	return fmt.Errorf("%w: pool prefix %q has no hash tag, so its keys would spread over the slots of a redis cluster: put one in the prefix, e.g. %q (the tag is part of the prefix, so Python services using the same prefix share the keys)",
		ErrUnsafeServer, p, "{"+strings.NewReplacer("{", "", "}", "").Replace(p)+"}")
}

func checkEviction(info ServerInfo, opts ServerOptions) error {
	if !info.Evicts() || opts.AllowEviction {
		return nil
	}
	at := ""
	if info.Addr != "" {
		at = " at " + info.Addr
	}
	return fmt.Errorf("%w: redis%s may evict keys (maxmemory %d, maxmemory-policy %s): an evicted lock lets two holders run an item at once; set maxmemory-policy noeviction (writes then fail when memory is full, and nothing is lost), or accept the risk with allow_eviction",
		ErrUnsafeServer, at, info.MaxMemory, info.Policy)
}

// ReadServer reads, with INFO, the settings and counters of the server that
// holds the pool named by keys: on a cluster the master of the pool's slot.
func ReadServer(ctx context.Context, client redis.UniversalClient, keys keyspace.Pool) (ServerInfo, error) {
	var c redis.Cmdable = client
	if cc, ok := client.(*redis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, keys.Members())
		if err != nil {
			return ServerInfo{}, err
		}
		c = node
	}
	return readServer(ctx, c)
}

// readServer runs INFO on one server (or whichever node a client picks).
func readServer(ctx context.Context, c redis.Cmdable) (ServerInfo, error) {
	txt, err := c.Info(ctx, "server", "memory", "stats", "cluster", "replication").Result()
	if err != nil {
		return ServerInfo{}, err
	}
	f := infoFields(txt)
	info := ServerInfo{Version: f["redis_version"], RunID: f["run_id"], Policy: f["maxmemory_policy"], Cluster: f["cluster_enabled"] == "1"}
	info.MaxMemory, _ = strconv.ParseInt(f["maxmemory"], 10, 64)
	info.EvictedKeys, _ = strconv.ParseInt(f["evicted_keys"], 10, 64)
	info.Replicas, _ = strconv.Atoi(f["connected_slaves"])
	_, info.MinReplicasToWrite = f["min_slaves_good_slaves"]
	return info, nil
}

// infoFields parses INFO's "name:value" lines.
func infoFields(txt string) map[string]string {
	out := map[string]string{}
	for line := range strings.SplitSeq(txt, "\n") {
		line = strings.TrimRight(line, "\r")
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
			out[k] = v
		}
	}
	return out
}
