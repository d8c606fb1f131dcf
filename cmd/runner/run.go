package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

func (a *app) runCmd() *cobra.Command {
	var cf *configFlags
	cmd := &cobra.Command{
		Use:   "run [-c FILE] [flags]",
		Short: "Run the workers (loop or batch mode) until a signal or the batch's end",
		Long: `Run starts worker.concurrency workers that lease items from the pool and run
task.command on each, keeping each lease alive while its task runs and
killing the task's process group if the lease is lost. In loop mode it
serves until SIGTERM or SIGINT; in batch mode it exits once every item ran
successfully once, fleet-wide. The first SIGTERM/SIGINT drains (no new
items; running tasks get worker.shutdown_grace), a second cancels running
tasks. SIGHUP reloads the configuration file: log.*, worker.concurrency,
pool.items and task.* take effect without dropping held leases (a running
task keeps the settings it started with); other changes are logged and
wait for a restart.

` + exitCodesHelp,
		Example: `  runner run -c config/example.yaml
  RUNNER_REDIS_ADDR=127.0.0.1:6379 runner run -c runner.yaml --concurrency 8
  runner run -c runner.yaml --mode batch --batch-id nightly-2024-06-01`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.load(cf, true)
			if err != nil || !a.proceed(cmd, cfg) {
				return err
			}
			return a.run(cf, cfg)
		},
	}
	cf = addConfigFlags(cmd, "redis-addr", "mode", "concurrency", "batch-id", "log-level", "admin-listen")
	return cmd
}

// runner is one "runner run": what a SIGHUP may change lives here.
type runner struct {
	a   *app
	cf  *configFlags
	log hclog.Logger
	// cfg is the configuration in force (replaced by a reload).
	cfg atomic.Pointer[Config]
	// task is what the next task run runs (replaced by a reload).
	task  liveTask
	items atomic.Pointer[[]string]
	// output levels of task stdout and stderr lines.
	stdoutLevel, stderrLevel atomic.Int32

	poolReady chan struct{}
	pool      *worker.Pool
	be        *backend
}

// run is "runner run": the workers, until a signal or the batch's end.
func (a *app) run(cf *configFlags, cfg *Config) error {
	r := &runner{a: a, cf: cf, poolReady: make(chan struct{})}
	r.cfg.Store(cfg)
	r.log = newLogger(cfg, a.stderr)
	// Process-wide: go-redis logs through one global logger.
	redis.SetLogger(redisLogger{r.log.Named("redis")})
	r.setOutputLevels(cfg)
	r.items.Store(&cfg.Pool.Items)
	log := r.log

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	signalled := make(chan struct{})
	sigDone := r.handleSignals(stop, signalled)
	defer sigDone()

	metrics := newMetrics()
	beReady := make(chan struct{})
	var setUI func(http.Handler)
	if cfg.Admin.Listen != "" {
		admin, err := newAdminServer(cfg.Admin.Listen, metrics.Registry(), func(ctx context.Context) error {
			select {
			case <-beReady:
				if err := r.be.ready(ctx); err != nil {
					return err
				}
				if err := r.be.watch.health(); err != nil {
					return err
				}
				select {
				case <-r.poolReady:
					return r.pool.Health()
				default:
					return nil
				}
			default:
				return errors.New("connecting to redis")
			}
		}, r.status, log.Named("admin"))
		if err != nil {
			return configErrorf("admin.listen", "%v", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = admin.Shutdown(sctx)
		}()
		log.Info("admin endpoint listening", "addr", admin.Addr())
		if cfg.Admin.UI {
			setUI = admin.serveUI()
		}
	}

	if cfg.embedded() {
		log.Info("redis.addr is empty: using the embedded in-memory pool (this process only; set redis.addr to share a pool across runners)")
	} else {
		log.Info("using redis", "at", cfg.where(), "tls", cfg.Redis.TLS.Enabled, "pool", cfg.keys().Base())
	}
	stopped := func() error {
		if cfg.Mode == string(worker.ModeBatch) {
			return errStopped
		}
		return nil
	}
	be, err := openBackend(ctx, cfg, log, cfg.allocatorConfig())
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before redis answered")
			return stopped()
		}
		return err
	}
	r.be = be
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
	if rp, ok := be.pool.(*lock.RedisLockPool); ok && setUI != nil {
		store, err := statusStore(cfg, rp)
		if err != nil {
			return err
		}
		setUI(uiHandler(cfg, be.client, rp, readyAllocator{be.alloc}, store, log.Named("ui")))
		log.Info("dashboard on the admin endpoint", "actions", cfg.uiToken() != "")
	}
	if rp, ok := be.pool.(*lock.RedisLockPool); ok && cfg.Admin.PoolMetrics {
		pm := newPoolMetrics(cfg.Mode == string(worker.ModeBatch))
		metrics.Registry().MustRegister(pm)
		pmCtx, stopPM := context.WithCancel(ctx)
		pmDone := make(chan struct{})
		go func() {
			defer close(pmDone)
			pm.run(pmCtx, cfg.Admin.PoolMetricsInterval, cfg, be.client, rp, log.Named("pool-metrics"))
		}()
		defer func() {
			stopPM()
			<-pmDone
		}()
	}
	if err := addItems(ctx, be, cfg.Pool.Items, log); err != nil {
		if ctx.Err() != nil {
			return stopped()
		}
		return err
	}
	keepCtx, stopKeep := context.WithCancel(ctx)
	keepDone := make(chan struct{})
	go func() {
		defer close(keepDone)
		keepItems(keepCtx, be, func() []string { return *r.items.Load() }, cfg.Worker.LeaseTTL, time.Second, log)
	}()
	defer func() {
		stopKeep()
		<-keepDone
	}()

	r.task.set(r.execTask(cfg))
	wc := cfg.workerConfig()
	wc.Logger, wc.Observer = log, metrics
	wc.Version, _ = version() // shown in the fleet's registry
	r.pool, err = worker.New(be.alloc, be.store, &r.task, wc)
	if err != nil {
		return err
	}
	if err := wc.ValidateTask(r.task.get()); err != nil {
		return err
	}
	close(r.poolReady)
	log.Info("runner started", "id", r.pool.Config().ID, "mode", cfg.Mode, "concurrency", cfg.Worker.Concurrency,
		"lease_ttl", cfg.Worker.LeaseTTL, "refresh_interval", cfg.Worker.RefreshInterval, "command", cfg.Task.Command)
	err = r.pool.Run(ctx)
	select {
	case <-signalled:
		if err == nil {
			log.Info("drained: every lease released")
			return stopped()
		}
	default:
	}
	if err == nil {
		log.Info("batch complete")
	}
	return err
}

// handleSignals: SIGHUP reloads; the first SIGTERM/SIGINT drains (stop),
// the second cancels running tasks, a third gets the default action (the
// process dies, its tasks with it, killed by its exec supervisor). It
// closes signalled at the first SIGTERM/SIGINT. The returned function
// stops it.
func (r *runner) handleSignals(stop context.CancelFunc, signalled chan<- struct{}) func() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		terms := 0
		for {
			var sig os.Signal
			select {
			case <-done:
				return
			case sig = <-sigs:
			}
			if sig == syscall.SIGHUP {
				r.reload()
				continue
			}
			terms++
			switch terms {
			case 1:
				r.log.Info("signal received: draining (send it again to cancel running tasks now)", "signal", sig.String())
				close(signalled)
				stop()
			case 2:
				signal.Reset(syscall.SIGINT, syscall.SIGTERM)
				r.log.Warn("second signal: cancelling running tasks now (a third kills the runner)")
				select {
				case <-r.poolReady:
					r.pool.Abort()
				default:
				}
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
		wg.Wait()
	}
}

// reload re-reads the configuration (SIGHUP) and applies what can change
// while running; a configuration with problems is logged and ignored.
func (r *runner) reload() {
	old := r.cfg.Load()
	cfg, err := r.a.load(r.cf, true)
	if err != nil {
		for _, p := range configProblemsOf(err) {
			r.log.Error("SIGHUP: configuration not reloaded", "problem", p.Error())
		}
		if configProblemsOf(err) == nil {
			r.log.Error("SIGHUP: configuration not reloaded", "error", err)
		}
		return
	}
	var changed, ignored []string
	for _, k := range configKeys {
		if reflect.DeepEqual(k.field(old), k.field(cfg)) {
			continue
		}
		if k.live {
			changed = append(changed, k.name)
		} else {
			ignored = append(ignored, k.name)
		}
	}
	if len(ignored) > 0 {
		r.log.Warn("SIGHUP: these settings cannot change while the runner runs; restart to apply them", "keys", ignored)
	}
	// What cannot change stays as it was, so that /status and the next
	// reload compare against what runs.
	next := *old
	for _, k := range configKeys {
		if k.live {
			reflect.ValueOf(k.field(&next)).Elem().Set(reflect.ValueOf(k.field(cfg)).Elem())
		}
	}
	select {
	case <-r.poolReady:
	default:
		r.log.Warn("SIGHUP before the workers started: ignored")
		return
	}
	task := r.execTask(&next)
	if err := next.workerConfig().ValidateTask(task); err != nil {
		for _, p := range libraryProblems(err) {
			r.log.Error("SIGHUP: configuration not reloaded", "problem", p.Error())
		}
		return
	}
	r.log.SetLevel(hclog.LevelFromString(next.Log.Level))
	r.setOutputLevels(&next)
	r.task.set(task)
	if err := r.pool.SetTaskTimeout(next.Task.Timeout); err != nil {
		r.log.Error("SIGHUP: task.timeout not changed", "error", err)
	}
	if err := r.pool.SetConcurrency(next.Worker.Concurrency); err != nil {
		r.log.Error("SIGHUP: worker.concurrency not changed", "error", err)
	}
	if added := newItems(*r.items.Load(), next.Pool.Items); len(added) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := addItems(ctx, r.be, added, r.log); err != nil {
			r.log.Error("SIGHUP: new pool.items not added", "error", err)
		}
		cancel()
	}
	r.items.Store(&next.Pool.Items)
	r.cfg.Store(&next)
	r.log.Info("SIGHUP: configuration reloaded", "changed", changed, "concurrency", next.Worker.Concurrency)
}

// newItems are the items of next that are not in cur.
func newItems(cur, next []string) []string {
	var out []string
	for _, it := range next {
		if !slices.Contains(cur, it) {
			out = append(out, it)
		}
	}
	return out
}

// execTask builds the task of cfg, its output logged at the configured
// levels.
func (r *runner) execTask(cfg *Config) *worker.ExecTask {
	t := cfg.execTask()
	t.Output = r.taskOutput(r.log.Named("task"))
	return t
}

// liveTask runs the ExecTask in force when a run starts: a reload
// replaces it for later runs only.
type liveTask struct {
	cur atomic.Pointer[worker.ExecTask]
}

func (t *liveTask) set(et *worker.ExecTask) { t.cur.Store(et) }
func (t *liveTask) get() *worker.ExecTask   { return t.cur.Load() }

// Run runs the current task.
func (t *liveTask) Run(ctx context.Context, job worker.Job) error { return t.get().Run(ctx, job) }

func (r *runner) setOutputLevels(c *Config) {
	r.stdoutLevel.Store(int32(outputLevel(c.Log.TaskStdout)))
	r.stderrLevel.Store(int32(outputLevel(c.Log.TaskStderr)))
}

// outputLevel maps log.task_stdout/stderr to a level; "off" is hclog.Off.
func outputLevel(s string) hclog.Level {
	if s == "off" {
		return hclog.Off
	}
	return hclog.LevelFromString(s)
}

// taskOutput logs each line a task writes, tagged with item and worker:
// stdout at log.task_stdout's level (info), stderr at log.task_stderr's
// (warn).
func (r *runner) taskOutput(log hclog.Logger) func(worker.Job, string, string) {
	return func(job worker.Job, stream, line string) {
		lvl := hclog.Level(r.stdoutLevel.Load())
		if stream == "stderr" {
			lvl = hclog.Level(r.stderrLevel.Load())
		}
		if lvl != hclog.Off {
			log.Log(lvl, line, "item", job.Item, "worker", job.Worker, "stream", stream)
		}
	}
}

// status is /status: this runner's workers and their items. It is built
// from runtime state only, never from the config's secrets.
func (r *runner) status() any {
	c := r.cfg.Load()
	type status struct {
		ID          string                `json:"id,omitempty"`
		Mode        string                `json:"mode"`
		Pool        string                `json:"pool"`
		Batch       string                `json:"batch,omitempty"`
		Backend     string                `json:"backend"`
		Concurrency int                   `json:"concurrency"`
		Held        int                   `json:"leases_held"`
		Workers     []worker.WorkerStatus `json:"workers"`
	}
	s := status{Mode: c.Mode, Pool: c.Pool.Prefix + "|" + c.Pool.Name, Backend: "redis", Concurrency: c.Worker.Concurrency, Workers: []worker.WorkerStatus{}}
	if c.embedded() {
		s.Backend = "memory"
	}
	if c.Mode == string(worker.ModeBatch) {
		s.Batch = c.Batch.ID
	}
	select {
	case <-r.poolReady:
		s.ID = r.pool.Config().ID
		s.Held = r.pool.Held()
		s.Workers = r.pool.Status()
	default:
	}
	return s
}
