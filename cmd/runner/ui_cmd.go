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
page is embedded in the binary. It listens on loopback by default. Actions
need admin.token (RUNNER_ADMIN_TOKEN), sent by the page as a bearer token;
without one the dashboard is read-only.`,
		Example: "  RUNNER_ADMIN_TOKEN=s3cret runner ui -c runner.yaml --listen 127.0.0.1:8080",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.poolCommand(cmd, cf, func(ctx context.Context, cfg *Config, client redis.UniversalClient, pool *lock.RedisLockPool) error {
				alloc, err := allocator.NewRedis(pool, cfg.allocatorConfig())
				if err != nil {
					return err
				}
				defer alloc.Close()
				store, err := statusStore(cfg, pool)
				if err != nil {
					return err
				}
				ln, err := net.Listen("tcp", listen)
				if err != nil {
					return configErrorf("ui --listen", "%v", err)
				}
				log := hclog.New(&hclog.LoggerOptions{Name: "ui", Output: a.stderr})
				src := &uiSource{cfg: cfg, client: client, pool: pool, alloc: alloc, store: store}
				srv := &http.Server{Handler: dashboard.Handler(src, dashboard.Options{Token: cfg.Admin.Token.Reveal(), Logger: log}),
					ReadHeaderTimeout: 5 * time.Second}
				fmt.Fprintf(a.stdout, "dashboard on http://%s/ (actions %s)\n", ln.Addr(), map[bool]string{true: "enabled", false: "off: no admin.token"}[cfg.Admin.Token != ""])
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
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve the dashboard on")
	return cmd
}

// uiSource is the dashboard's view of the configured pool.
type uiSource struct {
	cfg    *Config
	client redis.UniversalClient
	pool   *lock.RedisLockPool
	alloc  *allocator.Allocator
	store  *worker.RedisStore

	// The status reads every held item's lock, or every member's where
	// the lock keys are not walked (planWalk: seconds for 1,000,000
	// items): it is read by one goroutine at a time, whatever the number
	// of viewers, and every request gets the last one read (stale while
	// revalidating).
	mu         sync.Mutex
	last       statusReport
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
	r, err := buildStatus(ctx, s.cfg, s.client, s.pool)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil || s.lastAt.IsZero() {
		s.last = r
	}
	s.lastErr, s.lastAt, s.lastTook, s.refreshing = err, time.Now(), time.Since(start), false
}

func (s *uiSource) Act(ctx context.Context, a dashboard.Action) error {
	needItem := func() error {
		if a.Item == "" {
			return fmt.Errorf("%w: %s needs an item", dashboard.ErrBadAction, a.Name)
		}
		return nil
	}
	switch a.Name {
	case "pause":
		_, err := s.alloc.Pause(ctx)
		return err
	case "resume":
		return s.alloc.Resume(ctx)
	case "release":
		if err := needItem(); err != nil {
			return err
		}
		return s.alloc.Unquarantine(ctx, a.Item)
	case "cancel":
		if err := needItem(); err != nil {
			return err
		}
		return s.alloc.Cancel(ctx, a.Item)
	case "quarantine":
		if err := needItem(); err != nil {
			return err
		}
		d, err := time.ParseDuration(a.For)
		if err != nil || d < time.Millisecond {
			return fmt.Errorf("%w: quarantine for %q: want a duration such as \"1h\"", dashboard.ErrBadAction, a.For)
		}
		return s.alloc.Quarantine(ctx, a.Item, d)
	case "retry-failed":
		_, err := s.store.RetryFailed(ctx, s.cfg.Batch.ID)
		return err
	}
	return fmt.Errorf("%w: %q", dashboard.ErrBadAction, a.Name)
}
