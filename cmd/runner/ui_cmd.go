package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/lockpool/lockpool/internal/dashboard"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

func (a *app) uiCmd() *cobra.Command {
	var cf *configFlags
	var listen string
	cmd := &cobra.Command{
		Use:   "ui [-c FILE] [--listen ADDR]",
		Short: "Serve the pool's live dashboard",
		Long: `UI serves a web page showing the pool live: its items by state, the
batch's progress, the runners alive in the fleet and the items themselves
(paged on the server, filtered by state, name and runner), with the fleet-wide
controls (pause, resume, release, quarantine, cancel, retry failed). The
page is embedded in the binary. It listens on ui.listen (loopback by
default; --listen wins). Actions need ui.token (RUNNER_UI_TOKEN) or else
admin.token (RUNNER_ADMIN_TOKEN), sent by the page as a bearer token;
without either the dashboard is read-only. A runner with admin.ui: true
serves the same pages on admin.listen. The pool's gauges (see
admin.pool_metrics) are on /metrics, sampled every
admin.pool_metrics_interval.`,
		Example: "  RUNNER_ADMIN_TOKEN=s3cret runner ui -c runner.yaml --listen 127.0.0.1:8080",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.poolCommand(cmd, cf, func(ctx context.Context, cfg *Config, client redis.UniversalClient, pool *lock.RedisLockPool) error {
				// The allocator is made at the first action: it syncs the
				// pool's index in the background, a write a read-only
				// dashboard should not make.
				alloc := &lazyAllocator{pool: pool, cfg: cfg.allocatorConfig()}
				defer alloc.Close()
				store, err := statusStore(cfg, pool)
				if err != nil {
					return err
				}
				key := "ui.listen"
				if cmd.Flags().Changed("listen") {
					key = "ui --listen"
				} else {
					listen = cfg.UI.Listen
				}
				ln, err := net.Listen("tcp", listen)
				if err != nil {
					return configErrorf(key, "%v", err)
				}
				log := hclog.New(&hclog.LoggerOptions{Name: "ui", Output: a.stderr})
				// The pool's gauges (as admin.pool_metrics exports them) on
				// /metrics, sampled in the background.
				pm := newPoolMetrics(cfg.Mode == string(worker.ModeBatch))
				reg := prometheus.NewRegistry()
				reg.MustRegister(pm)
				pmCtx, stopPM := context.WithCancel(ctx)
				pmDone := make(chan struct{})
				go func() {
					defer close(pmDone)
					pm.run(pmCtx, cfg.Admin.PoolMetricsInterval, cfg, client, pool, log.Named("pool-metrics"))
				}()
				defer func() { stopPM(); <-pmDone }()
				mux := http.NewServeMux()
				mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4}))
				mux.Handle("/", uiHandler(cfg, client, pool, alloc, store, log))
				srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
				fmt.Fprintf(a.stdout, "dashboard on http://%s/ (actions %s)\n", ln.Addr(), map[bool]string{true: "enabled", false: "off: no ui.token nor admin.token"}[cfg.uiToken() != ""])
				go func() {
					<-ctx.Done()
					sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					_ = srv.Shutdown(sctx)
				}()
				if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
					return err
				}
				return nil
			})
		},
	}
	cf = addConfigFlags(cmd, "redis-addr", "mode", "batch-id")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve the dashboard on (default ui.listen)")
	return cmd
}

// uiHandler is the dashboard over the configured pool, as runner ui and
// admin.ui serve it.
func uiHandler(cfg *Config, client redis.UniversalClient, pool *lock.RedisLockPool, alloc allocatorGetter, store *worker.RedisStore, log hclog.Logger) http.Handler {
	src := &uiSource{cfg: cfg, client: client, pool: pool, alloc: alloc, store: store}
	return dashboard.Handler(src, dashboard.Options{Token: cfg.uiToken(), Logger: log})
}

// uiStatus is the dashboard's view of the pool: what pool status shows,
// the fleet's throughput, and the Redis server's time of the read (by
// which the page ages heartbeats and leases, whatever its own clock).
type uiStatus struct {
	statusReport
	Throughput []worker.ThroughputPoint `json:"throughput"`
	Now        time.Time                `json:"now"`
}

// uiSource is the dashboard's view of the configured pool.
type uiSource struct {
	cfg    *Config
	client redis.UniversalClient
	pool   *lock.RedisLockPool
	alloc  allocatorGetter
	store  *worker.RedisStore

	// The status reads every held item's lock, or every member's where
	// the lock keys are not walked (planWalk: seconds for 1,000,000
	// items): it is read by one goroutine at a time, whatever the number
	// of viewers, and every request gets the last one read (stale while
	// revalidating).
	mu         sync.Mutex
	last       uiStatus
	lastErr    error
	lastAt     time.Time
	lastTook   time.Duration
	refreshing bool
}

// statusMaxAge is how old a status may be before a request starts a new
// read (which the request does not wait for, once one was read); a read
// starts no sooner than four times the last one took after it, so the
// dashboard keeps Redis busy a fifth of the time at most.
const statusMaxAge = time.Second

func (s *uiSource) Status(ctx context.Context) (any, error) {
	s.mu.Lock()
	if s.lastAt.IsZero() { // the first: read it now
		s.mu.Unlock()
		s.refresh()
		s.mu.Lock()
	} else if time.Since(s.lastAt) > max(statusMaxAge, 4*s.lastTook) && !s.refreshing {
		s.refreshing = true
		go s.refresh()
	}
	defer s.mu.Unlock()
	return s.last, s.lastErr
}

// refresh reads the status, bounded by a minute.
func (s *uiSource) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	r, err := s.read(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil || s.lastAt.IsZero() {
		s.last = r
	}
	s.lastErr, s.lastAt, s.lastTook, s.refreshing = err, time.Now(), time.Since(start), false
}

// read reads the status, the throughput and the server's time.
func (s *uiSource) read(ctx context.Context) (uiStatus, error) {
	var st uiStatus
	var err error
	if st.statusReport, err = buildStatus(ctx, s.cfg, s.client, s.pool); err != nil {
		return st, err
	}
	if st.Throughput, err = s.store.Throughput(ctx); err != nil {
		return st, fmt.Errorf("pool status: %w", err)
	}
	if st.Now, err = s.client.Time(ctx).Result(); err != nil {
		return st, fmt.Errorf("pool status: %w", err)
	}
	return st, nil
}

// uiItem is an item's page: its lock now, and its last run (Last) with
// the stderr tail of its last failure.
type uiItem struct {
	itemInfo
	Now time.Time `json:"now"`
}

// Item reads one item: that it is a member and its lock (the lookup of
// an exact name in the items table), and its last run.
func (s *uiSource) Item(ctx context.Context, name string) (any, error) {
	if err := lock.ValidateKey(name); err != nil {
		return nil, fmt.Errorf("%w: %v", dashboard.ErrNoItem, err)
	}
	infos, err := s.lookup(ctx, listFilter{match: name})
	if err != nil {
		return nil, err
	}
	if len(infos) == 0 {
		return nil, fmt.Errorf("%w: %q is not in pool %s", dashboard.ErrNoItem, name, displayName(s.pool.Keys().Base()))
	}
	it := uiItem{itemInfo: infos[0]}
	h, found, err := s.store.LastRun(ctx, name)
	if err != nil {
		return nil, err
	}
	if found {
		it.Last = &h
	}
	if it.Now, err = s.client.Time(ctx).Result(); err != nil {
		return nil, err
	}
	return it, nil
}

// allocatorGetter is the allocator the dashboard's actions go through.
type allocatorGetter interface {
	Get() (*allocator.Allocator, error)
}

// readyAllocator is an allocator there already (a runner's, for admin.ui).
type readyAllocator struct{ *allocator.Allocator }

func (r readyAllocator) Get() (*allocator.Allocator, error) { return r.Allocator, nil }

// lazyAllocator makes its allocator at the first Get, and again after a
// failure.
type lazyAllocator struct {
	pool  *lock.RedisLockPool
	cfg   allocator.Config
	mu    sync.Mutex
	alloc *allocator.Allocator
}

func (l *lazyAllocator) Get() (*allocator.Allocator, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.alloc == nil {
		a, err := allocator.NewRedis(l.pool, l.cfg)
		if err != nil {
			return nil, err
		}
		l.alloc = a
	}
	return l.alloc, nil
}

// Close closes the allocator if one was made.
func (l *lazyAllocator) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.alloc != nil {
		_ = l.alloc.Close()
	}
}

func (s *uiSource) Act(ctx context.Context, a dashboard.Action) error {
	if a.Name == "retry-failed" {
		_, err := s.store.RetryFailed(ctx, s.cfg.Batch.ID)
		return err
	}
	var d time.Duration
	switch a.Name {
	case "pause", "resume":
	case "release", "cancel", "quarantine":
		if a.Item == "" {
			return fmt.Errorf("%w: %s needs an item", dashboard.ErrBadAction, a.Name)
		}
		if a.Name == "quarantine" {
			var err error
			if d, err = time.ParseDuration(a.For); err != nil || d < time.Millisecond {
				return fmt.Errorf("%w: quarantine for %q: want a duration such as \"1h\"", dashboard.ErrBadAction, a.For)
			}
		}
	default:
		return fmt.Errorf("%w: %q", dashboard.ErrBadAction, a.Name)
	}
	alloc, err := s.alloc.Get()
	if err != nil {
		return err
	}
	switch a.Name {
	case "pause":
		_, err = alloc.Pause(ctx)
	case "resume":
		err = alloc.Resume(ctx)
	case "release":
		err = alloc.Unquarantine(ctx, a.Item)
	case "cancel":
		err = alloc.Cancel(ctx, a.Item)
	case "quarantine":
		err = alloc.Quarantine(ctx, a.Item, d)
	}
	return err
}
