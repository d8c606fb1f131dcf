package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"
)

// serverWatch follows, while the runner runs, the settings and counters of
// the Redis server that holds the pool: a rise of evicted_keys is logged
// at error level as eviction (an evicted lock lets two holders in), and a
// change of maxmemory-policy to one that evicts is logged too. /healthz
// reports an eviction for evictionHealth after it was seen.
type serverWatch struct {
	client redis.UniversalClient
	key    string // a key of the pool: its master is the server watched
	log    hclog.Logger

	mu        sync.Mutex
	evictedAt time.Time
	evictMsg  string
}

// evictionHealth is how long /healthz reports an eviction.
const evictionHealth = time.Minute

// serverState is what one look at the server read.
type serverState struct {
	run     string // run_id: evicted_keys counts from the server's start
	evicted int64
	policy  string
	maxmem  int64
}

func (w *serverWatch) read(ctx context.Context) (serverState, error) {
	var c redis.Cmdable = w.client
	if cc, ok := w.client.(*redis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, w.key)
		if err != nil {
			return serverState{}, err
		}
		c = node
	}
	txt, err := c.Info(ctx, "server", "memory", "stats").Result()
	if err != nil {
		return serverState{}, err
	}
	var s serverState
	for line := range strings.SplitSeq(txt, "\n") {
		k, v, _ := strings.Cut(strings.TrimRight(line, "\r"), ":")
		switch k {
		case "run_id":
			s.run = v
		case "evicted_keys":
			s.evicted, _ = strconv.ParseInt(v, 10, 64)
		case "maxmemory_policy":
			s.policy = v
		case "maxmemory":
			s.maxmem, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return s, nil
}

// run looks every interval until ctx ends.
func (w *serverWatch) run(ctx context.Context, every time.Duration) {
	var last serverState
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, every)
		s, err := w.read(rctx)
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
func (w *serverWatch) compare(last, s serverState) {
	if last.run == "" {
		return
	}
	if last.run == s.run && s.evicted > last.evicted {
		msg := fmt.Sprintf("redis evicted %d keys (maxmemory %d, maxmemory-policy %s): if locks were among them, two holders may run an item at once", s.evicted-last.evicted, s.maxmem, s.policy)
		w.log.Error("redis is evicting keys: "+msg, "evicted_keys", s.evicted)
		w.mu.Lock()
		w.evictedAt, w.evictMsg = time.Now(), msg
		w.mu.Unlock()
	}
	if s.maxmem > 0 && s.policy != "noeviction" && (s.policy != last.policy || last.maxmem == 0) {
		w.log.Error("redis's settings now let it evict keys: set maxmemory-policy noeviction", "maxmemory", s.maxmem, "maxmemory_policy", s.policy)
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
