package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/keyspace"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// backend is what the runner draws items from: Redis, or the embedded
// in-memory pool when redis.addr (and Sentinel) is not configured.
type backend struct {
	client redis.UniversalClient // nil for the memory backend
	pool   lock.Pool
	alloc  *allocator.Allocator
	store  worker.Store
	memory bool
	// itemsMarker is a key set once pool.items were added: it disappears
	// with them when Redis loses its data (a restart without persistence).
	itemsMarker string
	// server is what the start-up check read of the server.
	server allocator.ServerInfo
	// watch follows the server while the runner runs (nil: memory).
	watch *serverWatch
}

// embedded reports whether the config asks for the in-memory backend.
func (c *Config) embedded() bool {
	return c.Redis.Addr == "" && c.Redis.Sentinel.Master == "" && len(c.Redis.Cluster.Addrs) == 0
}

// lockConfig names the pool in pkg/lock terms.
func (c *Config) lockConfig() lock.Config {
	return lock.Config{Prefix: c.Pool.Prefix, Suffix: c.Pool.Name}
}

// keys is the pool's keyspace.
func (c *Config) keys() keyspace.Pool { return keyspace.New(c.Pool.Prefix, c.Pool.Name) }

// where names the configured Redis for log lines.
func (c *Config) where() string {
	switch {
	case c.Redis.Sentinel.Master != "":
		return "sentinel master " + c.Redis.Sentinel.Master
	case len(c.Redis.Cluster.Addrs) > 0:
		return "cluster " + strings.Join(c.Redis.Cluster.Addrs, ",")
	}
	return c.Redis.Addr
}

// redisLogger takes go-redis's own log lines (such as "connection pool:
// failed to dial", printed to stderr by default) into the runner's log at
// debug level, one line each: the runner reports every failure it acts on
// itself (e.g. "redis not reachable, retrying").
type redisLogger struct{ log hclog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug(configOneLine(fmt.Sprintf(format, v...)))
}

// newRedisClient builds the client from the redis section. TLS files are
// read here, so a bad certificate is a config error at start.
func newRedisClient(c *Config) (redis.UniversalClient, error) {
	return newRedisClientFor(c, c.Redis.Cluster.Addrs)
}

// newRedisClientFor builds a cluster client over seeds when there are any,
// else the client the redis section names.
func newRedisClientFor(c *Config, seeds []string) (redis.UniversalClient, error) {
	opts := &redis.UniversalOptions{
		Addrs:                 []string{c.Redis.Addr},
		Username:              c.Redis.Username,
		Password:              c.Redis.Password.Reveal(),
		DB:                    c.Redis.DB,
		DialTimeout:           c.Redis.DialTimeout,
		ContextTimeoutEnabled: true,
		// Retries would hide an unreachable Redis from the keep-alive's
		// guard; the caller retries with its own backoff, which is then
		// the one it logs.
		MaxRetries:    -1,
		DialerRetries: 1,
	}
	if c.Redis.Sentinel.Master != "" {
		opts.MasterName = c.Redis.Sentinel.Master
		opts.Addrs = c.Redis.Sentinel.Addrs
		opts.SentinelPassword = c.Redis.Sentinel.Password.Reveal()
	}
	if c.Redis.TLS.Enabled || c.Redis.TLS.CAFile != "" || c.Redis.TLS.CertFile != "" {
		tc, err := tlsConfig(c.Redis.TLS)
		if err != nil {
			return nil, err
		}
		opts.TLSConfig = tc
	}
	if len(seeds) > 0 {
		opts.Addrs = seeds
		return redis.NewClusterClient(opts.Cluster()), nil
	}
	return redis.NewUniversalClient(opts), nil
}

// dialRedis builds the client, waits until Redis answers (retrying until
// ctx ends when wait is set; one try otherwise), switches to a cluster
// client when redis.addr names a cluster node, and checks the server's
// settings (allocator.CheckServer) before anything is written: an error
// wrapping allocator.ErrUnsafeServer refuses an evicting server (unless
// redis.allow_eviction) or a cluster with an untagged pool.prefix.
func dialRedis(ctx context.Context, c *Config, log hclog.Logger, wait bool) (redis.UniversalClient, allocator.ServerInfo, error) {
	client, err := newRedisClient(c)
	if err != nil {
		return nil, allocator.ServerInfo{}, err
	}
	fail := func(err error) (redis.UniversalClient, allocator.ServerInfo, error) {
		client.Close()
		return nil, allocator.ServerInfo{}, err
	}
	if wait {
		if err := connect(ctx, client, log, c.where()); err != nil {
			return fail(err)
		}
	}
	if _, plain := client.(*redis.Client); plain && c.Redis.Sentinel.Master == "" {
		txt, err := client.Info(ctx, "cluster").Result()
		if err != nil {
			return fail(fmt.Errorf("redis %s: %w", c.where(), err))
		}
		if strings.Contains(txt, "cluster_enabled:1") {
			log.Info("redis.addr is a redis cluster node: using a cluster client with it as the seed", "addr", c.Redis.Addr)
			client.Close()
			if client, err = newRedisClientFor(c, []string{c.Redis.Addr}); err != nil {
				return nil, allocator.ServerInfo{}, err
			}
		}
	}
	info, err := allocator.CheckServer(ctx, client, c.keys(), allocator.ServerOptions{AllowEviction: c.Redis.AllowEviction})
	if err != nil {
		return fail(err)
	}
	if info.Evicts() {
		args := []any{"maxmemory", info.MaxMemory, "maxmemory_policy", info.Policy}
		if info.Addr != "" {
			args = append(args, "server", info.Addr)
		}
		log.Warn("redis may evict keys, accepted by redis.allow_eviction: an evicted lock lets two holders run an item at once", args...)
	}
	if c.Redis.Sentinel.Master != "" && c.Redis.MinReplicasAcked == 0 && !info.MinReplicasToWrite {
		log.Warn("redis through Sentinel with neither redis.min_replicas_acked nor the server's min-replicas-to-write: a network partition that leaves runners writing to a deposed master lets two holders run an item until it is demoted (see docs/guarantees.md, Sentinel)")
	}
	if n := c.Redis.MinReplicasAcked; n > 0 && info.Replicas <= n && !info.Cluster {
		log.Warn("redis.min_replicas_acked needs more replicas than its value: after a failover the new master has one replica fewer until the old master rejoins, and until then no grant or refresh is acknowledged (leases are given up)",
			"min_replicas_acked", n, "connected_replicas", info.Replicas)
	}
	return client, info, nil
}

func tlsConfig(t RedisTLSConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, configErrorf("redis.tls.ca_file", "%v", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, configErrorf("redis.tls.ca_file", "no PEM certificate in %q", t.CAFile)
		}
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			// The error may quote the file's contents: name the files only.
			return nil, configErrorf("redis.tls.cert_file", "cannot load the key pair %q / %q", t.CertFile, t.KeyFile)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// connect waits until Redis answers, logging one line per failed attempt
// with exponential backoff (100ms to 5s), until ctx ends.
func connect(ctx context.Context, client redis.UniversalClient, log hclog.Logger, what string) error {
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := client.Ping(pctx).Err()
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info("redis answers", "addr", what, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("redis not reachable, retrying", "addr", what, "attempt", attempt, "in", delay, "error", configOneLine(err.Error()))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// openBackend builds the backend the config names. For Redis it waits for
// the server (retrying until ctx ends) and subscribes the allocator.
func openBackend(ctx context.Context, c *Config, log hclog.Logger, allocCfg allocator.Config) (*backend, error) {
	if c.embedded() {
		pool, err := lock.NewMemoryLockPool(lock.MemoryConfig{})
		if err != nil {
			return nil, err
		}
		a, err := allocator.NewMemory(pool, allocCfg)
		if err != nil {
			return nil, err
		}
		return &backend{pool: pool, alloc: a, store: worker.NewMemoryStore(pool), memory: true}, nil
	}
	client, info, err := dialRedis(ctx, c, log, true)
	if err != nil {
		return nil, err
	}
	pool, err := lock.NewRedisLockPool(client, c.lockConfig())
	if err != nil {
		client.Close()
		return nil, err
	}
	b := &backend{client: client, pool: pool, itemsMarker: pool.Keys().ItemsMarker(), server: info}
	if allocCfg.LeaseTTL == 0 {
		return b, nil // pool commands need no allocator
	}
	allocCfg.OnDiscontinuity = func(d allocator.Dataset) {
		log.Warn("redis dataset discontinuity (a restart, failover or restore may have lost recent grants): no item is granted until every earlier lease has expired; leases that survived keep running",
			"generation", d.Gen, "noticed", d.Since, "quiet_until", d.QuietUntil)
	}
	for {
		b.alloc, err = allocator.NewRedis(pool, allocCfg)
		if err == nil || errors.Is(err, allocator.ErrInvalidConfig) || errors.Is(err, lock.ErrWrongType) || errors.Is(err, allocator.ErrUnsafeServer) {
			break
		}
		log.Warn("cannot start the allocator, retrying", "error", configOneLine(err.Error()))
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		if ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		client.Close()
		return nil, err
	}
	var opts []worker.StoreOption
	if c.Redis.AllowEviction {
		opts = append(opts, worker.AllowEviction())
	}
	if b.store, err = worker.NewRedisStore(pool, opts...); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

// ready is /healthz's check: Redis answers PING.
func (b *backend) ready(ctx context.Context) error {
	if b == nil {
		return errors.New("connecting to redis")
	}
	if b.memory {
		return nil
	}
	return b.client.Ping(ctx).Err()
}

func (b *backend) close() {
	if b.alloc != nil {
		b.alloc.Close()
	}
	if b.client != nil {
		b.client.Close()
	}
}

// addItems adds the configured pool.items, retrying while Redis is away.
func addItems(ctx context.Context, b *backend, items []string, log hclog.Logger) error {
	if len(items) == 0 {
		return nil
	}
	for attempt := 1; ; attempt++ {
		err := b.pool.Extend(ctx, items)
		if err == nil && b.client != nil {
			err = b.client.Set(ctx, b.itemsMarker, "1", 0).Err()
		}
		if err == nil {
			log.Info("pool items added", "count", len(items))
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, lock.ErrWrongType) || errors.Is(err, lock.ErrInvalidKey) {
			return fmt.Errorf("adding pool.items: %w", err)
		}
		log.Warn("cannot add pool.items, retrying", "attempt", attempt, "error", configOneLine(err.Error()))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// keepItems adds pool.items again when Redis has lost them (the marker
// addItems sets is gone). It waits one lease_ttl first: every lease granted
// before the loss has then been given up by its holder (no later than
// lease_ttl - safety_margin after its last confirmed refresh, sent before
// the loss), so no item can be granted twice. items returns the current
// pool.items (a SIGHUP may change them).
func keepItems(ctx context.Context, b *backend, items func() []string, ttl, every time.Duration, log hclog.Logger) {
	if b.client == nil {
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if len(items()) == 0 {
			continue
		}
		n, err := b.client.Exists(ctx, b.itemsMarker).Result()
		if err != nil || n == 1 {
			continue // present, or Redis unreachable: look again next tick
		}
		log.Warn("pool.items are gone from redis (its data was lost, rolled back to before they were added, or the keys were deleted or evicted): adding them again once every earlier lease has expired", "in", ttl)
		select {
		case <-ctx.Done():
			return
		case <-time.After(ttl):
		}
		if err := addItems(ctx, b, items(), log); err != nil {
			return // ctx ended, or an error retrying cannot fix
		}
	}
}
