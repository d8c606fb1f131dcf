package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/worker"
)

// parseFlags parses a subcommand's flags and loads the configuration.
// extra registers the subcommand's own flags.
func parseFlags(name string, args []string, stderr io.Writer, environ []string, extra func(*flag.FlagSet)) (*Config, []string, error) {
	fs, rf := newRunFlags(name)
	fs.SetOutput(stderr)
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, errHelp
		}
		return nil, nil, fmt.Errorf("%w: %s: %v", errUsage, name, err)
	}
	cfg, err := loadConfigFor(rf.Config, environ, rf.Overrides, name == "run")
	if err != nil {
		return nil, nil, err
	}
	return cfg, fs.Args(), nil
}

// newLogger builds the hclog logger the log section asks for.
func newLogger(c *Config, out io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "runner",
		Level:      hclog.LevelFromString(c.Log.Level),
		JSONFormat: c.Log.Format == "json",
		Output:     out,
		TimeFormat: "2006-01-02T15:04:05.000Z07:00",
	})
}

// cmdRun is "runner run": the workers, until a signal or the batch's end.
func cmdRun(args []string, stdout, stderr io.Writer, environ []string) error {
	cfg, rest, err := parseFlags("run", args, stderr, environ, nil)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("%w: run takes no arguments, got %q", errUsage, rest)
	}
	log := newLogger(cfg, stderr)
	// Process-wide: go-redis logs through one global logger.
	redis.SetLogger(redisLogger{log.Named("redis")})

	// First signal: drain. Second: cancel running tasks at once.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	var pool *worker.Pool
	poolReady := make(chan struct{})
	go func() {
		sig, ok := <-sigs
		if !ok {
			return
		}
		log.Info("signal received: draining (send it again to cancel running tasks now)", "signal", sig.String())
		stop()
		if _, ok := <-sigs; !ok {
			return
		}
		// A third signal gets the default action: the process dies (its
		// tasks with it, killed by its exec supervisor).
		signal.Reset(syscall.SIGINT, syscall.SIGTERM)
		log.Warn("second signal: cancelling running tasks now (a third kills the runner)")
		select {
		case <-poolReady:
			pool.Abort()
		default:
		}
	}()

	metrics := newMetrics()
	var be *backend
	var beReady = make(chan struct{})
	var admin *adminServer
	if cfg.Admin.Listen != "" {
		admin, err = newAdminServer(cfg.Admin.Listen, metrics.Registry(), func(ctx context.Context) error {
			select {
			case <-beReady:
				if err := be.ready(ctx); err != nil {
					return err
				}
				if err := be.watch.health(); err != nil {
					return err
				}
				select {
				case <-poolReady:
					return pool.Health()
				default:
					return nil
				}
			default:
				return errors.New("connecting to redis")
			}
		}, func() any { return runnerStatus(cfg, pool, poolReady) }, log.Named("admin"))
		if err != nil {
			return configErrorf("", "%v", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = admin.Shutdown(sctx)
		}()
		log.Info("admin endpoint listening", "addr", admin.Addr())
	}

	if cfg.embedded() {
		log.Info("redis.addr is empty: using the embedded in-memory pool (this process only; set redis.addr to share a pool across runners)")
	} else {
		log.Info("using redis", "at", cfg.where(), "tls", cfg.Redis.TLS.Enabled, "pool", cfg.keys().Base())
	}
	be, err = openBackend(ctx, cfg, log, allocator.Config{LeaseTTL: cfg.Worker.LeaseTTL})
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before redis answered")
			return nil
		}
		return err
	}
	defer be.close()
	if be.client != nil {
		be.watch = &serverWatch{client: be.client, keys: cfg.keys(), log: log.Named("redis")}
		wctx, stopWatch := context.WithCancel(ctx)
		watchDone := make(chan struct{})
		go func() {
			defer close(watchDone)
			be.watch.run(wctx, 2*time.Second)
		}()
		defer func() {
			stopWatch()
			<-watchDone
		}()
	}
	close(beReady)
	if err := addItems(ctx, be, cfg.Pool.Items, log); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	keepCtx, stopKeep := context.WithCancel(ctx)
	keepDone := make(chan struct{})
	go func() {
		defer close(keepDone)
		keepItems(keepCtx, be, cfg.Pool.Items, cfg.Worker.LeaseTTL, time.Second, log)
	}()
	defer func() {
		stopKeep()
		<-keepDone
	}()

	task := &worker.ExecTask{
		Command:   cfg.Task.Command,
		Env:       taskEnv(cfg.Task.Env),
		Dir:       cfg.Task.Dir,
		KillGrace: cfg.Task.KillGrace,
		Wrapper:   true,
		Output:    taskOutput(log.Named("task")),
	}
	pool, err = worker.New(be.alloc, be.store, task, workerConfig(cfg, log, metrics))
	if err != nil {
		return configErrorf("", "%v", err)
	}
	close(poolReady)
	log.Info("runner started", "id", pool.Config().ID, "mode", cfg.Mode, "concurrency", cfg.Worker.Concurrency,
		"lease_ttl", cfg.Worker.LeaseTTL, "refresh_interval", cfg.Worker.RefreshInterval, "command", cfg.Task.Command)
	err = pool.Run(ctx)
	switch {
	case err == nil && ctx.Err() != nil:
		log.Info("drained: every lease released")
	case err == nil:
		log.Info("batch complete")
	}
	return err
}

// workerConfig maps the runner's configuration onto the worker pool's.
func workerConfig(c *Config, log hclog.Logger, obs worker.Observer) worker.Config {
	return worker.Config{
		Mode:             worker.Mode(c.Mode),
		Concurrency:      c.Worker.Concurrency,
		ID:               c.Worker.ID,
		LeaseTTL:         c.Worker.LeaseTTL,
		RefreshInterval:  c.Worker.RefreshInterval,
		SafetyMargin:     c.Worker.SafetyMargin,
		Cooldown:         c.Worker.Cooldown,
		MaxAttempts:      c.Worker.MaxAttempts,
		Backoff:          c.Worker.Backoff,
		MaxBackoff:       c.Worker.MaxBackoff,
		Quarantine:       c.Worker.Quarantine,
		TaskTimeout:      c.Task.Timeout,
		ShutdownGrace:    c.Worker.ShutdownGrace,
		BatchID:          c.Batch.ID,
		BatchRetain:      c.Batch.Retain,
		ProgressInterval: c.Batch.ProgressInterval,
		Version:          version(),
		Logger:           log,
		Observer:         obs,
	}
}

// taskEnv turns task.env into "KEY=VALUE" entries in a stable order.
func taskEnv(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// taskOutput logs each line a task writes, tagged with item and worker.
func taskOutput(log hclog.Logger) func(worker.Job, string, string) {
	return func(job worker.Job, stream, line string) {
		log.Info(line, "item", job.Item, "worker", job.Worker, "stream", stream)
	}
}

// runnerStatus is /status: this runner's workers and their items. It is
// built from runtime state only, never from the config's secrets.
func runnerStatus(c *Config, pool *worker.Pool, ready <-chan struct{}) any {
	type status struct {
		ID      string                `json:"id,omitempty"`
		Mode    string                `json:"mode"`
		Pool    string                `json:"pool"`
		Batch   string                `json:"batch,omitempty"`
		Backend string                `json:"backend"`
		Held    int                   `json:"leases_held"`
		Workers []worker.WorkerStatus `json:"workers"`
	}
	s := status{Mode: c.Mode, Pool: c.Pool.Prefix + "|" + c.Pool.Name, Backend: "redis", Workers: []worker.WorkerStatus{}}
	if c.embedded() {
		s.Backend = "memory"
	}
	if c.Mode == string(worker.ModeBatch) {
		s.Batch = c.Batch.ID
	}
	select {
	case <-ready:
		s.ID = pool.Config().ID
		s.Held = pool.Held()
		s.Workers = pool.Status()
	default:
	}
	return s
}
