package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// The fleet-wide controls: each acts through the pool's shared state in
// Redis (pkg/allocator's Pause, Resume, Unquarantine, Quarantine, Cancel),
// so every runner on the pool sees it at once. The dashboard's actions
// call the same functions.

// withAllocator runs fn with an allocator over the configured pool.
func (a *app) withAllocator(cmd *cobra.Command, cf *configFlags, fn func(ctx context.Context, alloc *allocator.Allocator) error) error {
	return a.poolCommand(cmd, cf, func(ctx context.Context, cfg *Config, _ redis.UniversalClient, pool *lock.RedisLockPool) error {
		alloc, err := allocator.NewRedis(pool, cfg.allocatorConfig())
		if err != nil {
			return err
		}
		defer alloc.Close()
		return fn(ctx, alloc)
	})
}

func (a *app) poolPauseCmd() *cobra.Command {
	var cf *configFlags
	cmd := &cobra.Command{
		Use:   "pause [-c FILE]",
		Short: "Stop every runner of the pool from starting new items",
		Long: `Pause stops every runner on the pool, on every host, from being granted
items until "runner pool resume": running tasks go on, keep their leases
and end as usual, but no worker starts another item. Runners that start
while the pool is paused wait too. Pausing a paused pool changes nothing;
the time printed is when the pause began, by the Redis server's clock.`,
		Example: "  runner pool pause -c runner.yaml\n  runner pool resume -c runner.yaml",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withAllocator(cmd, cf, func(ctx context.Context, alloc *allocator.Allocator) error {
				since, err := alloc.Pause(ctx)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "pool paused since %s\n", since.UTC().Format(time.RFC3339))
				return nil
			})
		},
	}
	cf = addConfigFlags(cmd, "redis-addr")
	return cmd
}

func (a *app) poolResumeCmd() *cobra.Command {
	var cf *configFlags
	cmd := &cobra.Command{
		Use:   "resume [-c FILE]",
		Short: "Let the runners of a paused pool start items again",
		Long: `Resume ends a pause ("runner pool pause"): every runner on the pool is
granted items again, and workers waiting for one are woken at once.
Resuming a pool that is not paused changes nothing.`,
		Example: "  runner pool resume -c runner.yaml",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withAllocator(cmd, cf, func(ctx context.Context, alloc *allocator.Allocator) error {
				if err := alloc.Resume(ctx); err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, "pool resumed")
				return nil
			})
		},
	}
	cf = addConfigFlags(cmd, "redis-addr")
	return cmd
}

// poolItemActionCmd is a control acting on each named item in turn: all
// are tried, and the command fails (exit 1) when any could not be acted
// on, saying which and why.
func (a *app) poolItemActionCmd(use, short, long, example string, flags func(*cobra.Command), act func(ctx context.Context, alloc *allocator.Allocator, item string) (string, error)) *cobra.Command {
	var cf *configFlags
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Example: example,
		RunE: func(cmd *cobra.Command, items []string) error {
			if len(items) == 0 {
				return usageErrorf(cmd, "name at least one item")
			}
			for _, it := range items {
				if err := lock.ValidateKey(it); err != nil {
					return usageErrorf(cmd, "item %s: %v", displayName(it), err)
				}
			}
			return a.withAllocator(cmd, cf, func(ctx context.Context, alloc *allocator.Allocator) error {
				var failed []error
				for _, it := range items {
					done, err := act(ctx, alloc, it)
					if err != nil {
						failed = append(failed, fmt.Errorf("%s: %w", displayName(it), err))
						continue
					}
					fmt.Fprintf(a.stdout, "%s %s\n", displayName(it), done)
				}
				return errors.Join(failed...)
			})
		},
	}
	if flags != nil {
		flags(cmd)
	}
	cf = addConfigFlags(cmd, "redis-addr")
	return cmd
}

func (a *app) poolReleaseCmd() *cobra.Command {
	return a.poolItemActionCmd("release [-c FILE] ITEM...", "End items' quarantine or cooldown now",
		`Release ends the quarantine or cooldown of each named item now: it is
available at once, and a runner waiting for an item is woken. An item that
is not held back (free, leased, or locked by something else) is left alone
and reported; the command then exits 1.`,
		"  runner pool release -c runner.yaml key-7",
		nil,
		func(ctx context.Context, alloc *allocator.Allocator, item string) (string, error) {
			return "released", alloc.Unquarantine(ctx, item)
		})
}

func (a *app) poolQuarantineCmd() *cobra.Command {
	var d time.Duration
	return a.poolItemActionCmd("quarantine [-c FILE] [--for DURATION] ITEM...", "Keep items from every runner for a while",
		`Quarantine keeps each named item from every runner for --for (default
1h), whoever holds it: a lease on it is lost, and its holder stops its task
at its next refresh. "runner pool release" ends the quarantine early.`,
		"  runner pool quarantine -c runner.yaml --for 30m key-7",
		func(cmd *cobra.Command) {
			cmd.Flags().DurationVar(&d, "for", time.Hour, "how long the items stay quarantined (at least 1ms)")
		},
		func(ctx context.Context, alloc *allocator.Allocator, item string) (string, error) {
			return "quarantined for " + d.String(), alloc.Quarantine(ctx, item, d)
		})
}

func (a *app) poolRetryFailedCmd() *cobra.Command {
	var cf *configFlags
	cmd := &cobra.Command{
		Use:   "retry-failed [-c FILE] [--batch-id ID]",
		Short: "Put a batch's failed items back among its pending ones",
		Long: `Retry-failed puts the failed items of batch.id back among the batch's
pending items and forgets their errors: the batch's runners try them again,
and a batch that had finished is running again, so "runner run" with the
same batch.id runs them. It prints how many items were put back (0 when the
batch has none failed, or does not exist).`,
		Example: "  runner pool retry-failed -c runner.yaml --batch-id nightly\n  runner run -c runner.yaml --mode batch --batch-id nightly",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.poolCommand(cmd, cf, func(ctx context.Context, cfg *Config, _ redis.UniversalClient, pool *lock.RedisLockPool) error {
				store, err := statusStore(cfg, pool)
				if err != nil {
					return err
				}
				n, err := store.RetryFailed(ctx, cfg.Batch.ID)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%d failed items of batch %s put back\n", n, displayName(cfg.Batch.ID))
				return nil
			})
		},
	}
	cf = addConfigFlags(cmd, "redis-addr", "batch-id")
	return cmd
}

func (a *app) poolCancelCmd() *cobra.Command {
	return a.poolItemActionCmd("cancel [-c FILE] ITEM...", "Take items' leases from their holders, stopping their tasks",
		`Cancel takes the lease on each named item from the runner holding it,
on whatever host: that runner stops the item's task at once, as for a lost
lease. The item is not granted to anyone before the cancelled lease would
have expired (its task may still be stopping); "runner pool release" makes
it available earlier. An item with no lease is left alone and reported; the
command then exits 1.`,
		"  runner pool cancel -c runner.yaml key-7",
		nil,
		func(ctx context.Context, alloc *allocator.Allocator, item string) (string, error) {
			return "cancelled", alloc.Cancel(ctx, item)
		})
}
