package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// execFlags are "runner exec"'s flags.
type execFlags struct {
	pool, item, prefix, redisAddr string
	leaseTTL, wait                time.Duration
}

func (a *app) execCmd() *cobra.Command {
	var f execFlags
	cmd := &cobra.Command{
		Use:   "exec --pool NAME [--item ITEM] [flags] -- CMD [ARG...]",
		Short: "Run one command under one lease on an item of a pool",
		Long: `Exec leases one item of the pool (--item names it; otherwise any free one,
waiting for one to be free), runs the command with the same keep-alive,
self-fencing and process-group kill as a task of "runner run", releases the
item and exits with the command's own exit code (128+N when a signal N
killed it), like "consul lock" and "etcdctl lock". The command gets
RUNNER_ITEM, RUNNER_TOKEN (the lease's fencing token), RUNNER_OWNER and
RUNNER_ATTEMPT, and stdin from /dev/null; its output is passed through line
by line. If the lease is lost (Redis unreachable, the item stolen) the
command's process group gets SIGTERM, then SIGKILL min(10s, lease-ttl/10)
later, before the lease can expire, and exec exits 1. SIGTERM or SIGINT
stops the command the same way. No config file is read: Redis comes from
--redis-addr, REDIS_ADDR or RUNNER_REDIS_ADDR (other RUNNER_REDIS_*
variables apply: password, TLS).`,
		Example: `  REDIS_ADDR=127.0.0.1:6379 runner exec --pool deploys --item prod -- ./deploy.sh prod
  runner exec --redis-addr 127.0.0.1:6379 --pool api-keys --wait 30s -- sh -c 'curl -H "Key: $RUNNER_ITEM" ...'`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0:
				return usageErrorf(cmd, "exec needs a command after --")
			case f.pool == "":
				return usageErrorf(cmd, "exec needs --pool")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return a.exec(cmd, f, args) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.pool, "pool", "", "the pool's `NAME` (pool.name)")
	fs.StringVar(&f.item, "item", "", "lease this `ITEM` only (default: any free item)")
	fs.StringVar(&f.prefix, "prefix", "lockpool", "the pool's key `PREFIX` (pool.prefix)")
	fs.StringVar(&f.redisAddr, "redis-addr", "", "Redis `ADDR` (default $REDIS_ADDR, then $RUNNER_REDIS_ADDR)")
	fs.DurationVar(&f.leaseTTL, "lease-ttl", 30*time.Second, "the lease's time to live; refreshed every third of it")
	fs.DurationVar(&f.wait, "wait", 0, "give up (exit 1) when no item is free within this `DURATION` (0: wait forever)")
	return cmd
}

func (a *app) exec(cmd *cobra.Command, f execFlags, args []string) error {
	addr := f.redisAddr
	if addr == "" {
		addr = lookupEnv(a.environ, "REDIS_ADDR")
	}
	flags := map[string]string{
		"pool.name": f.pool, "pool.prefix": f.prefix,
		"worker.lease_ttl": f.leaseTTL.String(),
	}
	if addr != "" {
		flags["redis.addr"] = addr
	}
	// Only the redis section is read from the environment: exec is
	// config-free otherwise.
	var environ []string
	for _, kv := range a.environ {
		if len(kv) > 13 && kv[:13] == "RUNNER_REDIS_" {
			environ = append(environ, kv)
		}
	}
	cfg, _, err := loadConfigFrom(configSources{environ: environ, flags: flags})
	if err != nil {
		return err
	}
	if cfg.embedded() {
		return usageErrorf(cmd, "exec needs a Redis: set --redis-addr, REDIS_ADDR or RUNNER_REDIS_ADDR")
	}
	task := &worker.ExecTask{
		Command: args, KillGrace: cfg.Task.KillGrace, Wrapper: true,
		Output: func(_ worker.Job, stream, line string) {
			w := a.stdout
			if stream == "stderr" {
				w = a.stderr
			}
			fmt.Fprintln(w, line)
		},
	}
	if err := cfg.workerConfig().ValidateTask(task); err != nil {
		return usageErrorf(cmd, "%v", err)
	}
	return a.withPool(cmd, cfg, func(ctx context.Context, _ redis.UniversalClient, pool *lock.RedisLockPool) error {
		return execLeased(ctx, cfg, pool, f, task)
	})
}

// execLeased is exec's work on the pool: lease, run, release.
func execLeased(ctx context.Context, cfg *Config, pool *lock.RedisLockPool, f execFlags, task *worker.ExecTask) error {
	if f.item != "" {
		ok, err := pool.Contains(ctx, f.item)
		switch {
		case errors.Is(err, lock.ErrInvalidKey):
			return fmt.Errorf("%w: exec: %w", errBadInput, err)
		case err != nil:
			return fmt.Errorf("exec: %w", err)
		case !ok:
			return fmt.Errorf("%w: exec: item %s is not in pool %s (add it with \"runner pool add\")", errBadInput, displayName(f.item), displayName(cfg.keys().Base()))
		}
	}
	alloc, err := allocator.NewRedis(pool, cfg.allocatorConfig())
	if err != nil {
		return err
	}
	defer alloc.Close()

	host, _ := os.Hostname()
	owner := cmp.Or(host, "localhost") + ":" + strconv.Itoa(os.Getpid()) + "/exec"
	actx := ctx
	if f.wait > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, f.wait)
		defer cancel()
	}
	lease, err := alloc.Acquire(actx, owner, allocator.AcquireOptions{Prefer: f.item, Exact: f.item != ""})
	if err != nil {
		if ctx.Err() != nil {
			return errors.New("exec: stopped by a signal while waiting for an item")
		}
		return fmt.Errorf("exec: no item: %w", err)
	}
	wc := cfg.Worker.WithDefaults()
	ka, err := lease.KeepAlive(ctx, allocator.KeepAliveOptions{Interval: wc.RefreshInterval, Margin: wc.SafetyMargin})
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	job := worker.Job{Item: lease.Item(), Token: lease.Token(), Owner: owner, Attempt: 1, Lease: lease}
	runErr := task.Run(ka.Context(), job)
	lost := errors.Is(context.Cause(ka.Context()), worker.ErrLeaseLost)
	ka.Stop()
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = lease.Release(rctx) // fenced: never frees another holder's lease
	var ee *worker.ExitError
	switch {
	case lost:
		return fmt.Errorf("exec: the lease on %s was lost, so the command was stopped: %w", displayName(job.Item), runErr)
	case runErr == nil:
		return nil
	case errors.As(runErr, &ee):
		return &exitStatusError{code: ee.Code()}
	}
	return fmt.Errorf("exec: %w", runErr)
}

// lookupEnv is os.LookupEnv over environ.
func lookupEnv(environ []string, name string) string {
	for _, kv := range environ {
		if len(kv) > len(name) && kv[:len(name)] == name && kv[len(name)] == '=' {
			return kv[len(name)+1:]
		}
	}
	return ""
}
