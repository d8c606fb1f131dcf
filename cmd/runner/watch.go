package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/keyspace"
)

// serverWatch follows, while the runner runs, the settings and counters of
// the Redis server that holds the pool: a rise of evicted_keys is logged
// at error level as eviction (an evicted lock lets two holders in), and a
// change of maxmemory-policy to one that evicts is logged too. /healthz
// reports an eviction for evictionHealth after it was seen.
type serverWatch struct {
	client redis.UniversalClient
	keys   keyspace.Pool // the pool: its master is the server watched
	log    hclog.Logger

	mu        sync.Mutex
	evictedAt time.Time
	evictMsg  string
}

// evictionHealth is how long /healthz reports an eviction.
const evictionHealth = time.Minute

// run looks every interval until ctx ends.
func (w *serverWatch) run(ctx context.Context, every time.Duration) {
	var last allocator.ServerInfo
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, every)
		s, err := allocator.ReadServer(rctx, w.client, w.keys)
		cancel()
		if err == nil {
			w.compare(last, s)
			last = s
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// compare logs what changed between two looks at the server.
func (w *serverWatch) compare(last, s allocator.ServerInfo) {
	if last.RunID == "" {
		return
	}
	if last.RunID == s.RunID && s.EvictedKeys > last.EvictedKeys {
		msg := fmt.Sprintf("redis evicted %d keys (maxmemory %d, maxmemory-policy %s): if locks were among them, two holders may run an item at once", s.EvictedKeys-last.EvictedKeys, s.MaxMemory, s.Policy)
		w.log.Error("redis is evicting keys: "+msg, "evicted_keys", s.EvictedKeys)
		w.mu.Lock()
		w.evictedAt, w.evictMsg = time.Now(), msg
		w.mu.Unlock()
	}
	if s.Evicts() && !(last.Evicts() && s.Policy == last.Policy) {
		w.log.Error("redis's settings now let it evict keys: set maxmemory-policy noeviction", "maxmemory", s.MaxMemory, "maxmemory_policy", s.Policy)
	}
}

// health is nil unless the server evicted keys within evictionHealth.
func (w *serverWatch) health() error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.evictedAt.IsZero() && time.Since(w.evictedAt) < evictionHealth {
		return fmt.Errorf("%s (%v ago)", w.evictMsg, time.Since(w.evictedAt).Round(time.Second))
	}
	return nil
}
