package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"slices"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// chunk is how many items pool commands send or read per round trip.
const chunk = 1000

func (a *app) poolCmd() *cobra.Command {
	return groupCmd("pool", "Inspect and change the items of the pool the configuration names",
		`Pool commands read and change the pool that redis.* and pool.* name: its
members (add, remove, set, clear), each item's lease (list) and counts with
batch progress (status); and they steer every runner on the pool at once:
pause and resume it, release an item's quarantine or cooldown early,
quarantine an item, cancel an item's lease. They need a Redis: the embedded in-memory pool
exists only inside "runner run". Nothing is written before the server's
settings were checked (an evicting server, or a cluster without a hash tag
in pool.prefix, is refused with exit 2).`,
		`  runner pool add -c runner.yaml key-1 key-2
  printf 'key-%s\n' 1 2 3 | runner pool set -c runner.yaml -
  runner pool list -c runner.yaml --jsonl`,
		a.poolChangeCmd("add", "Add items to the pool", "added"),
		a.poolChangeCmd("remove", "Remove items from the pool", "removed"),
		a.poolChangeCmd("set", "Make the given items the whole pool", "set as the pool"),
		a.poolClearCmd(), a.poolListCmd(), a.poolStatusCmd(),
		a.poolPauseCmd(), a.poolResumeCmd(), a.poolReleaseCmd(), a.poolQuarantineCmd(), a.poolCancelCmd(), a.poolRetryFailedCmd())
}

// poolCommand loads the configuration, dials Redis and runs fn.
func (a *app) poolCommand(cmd *cobra.Command, cf *configFlags, fn func(ctx context.Context, cfg *Config, client redis.UniversalClient, pool *lock.RedisLockPool) error) error {
	cfg, err := a.load(cf, false)
	if err != nil {
		return err
	}
	if cfg.embedded() {
		return configErrorf("redis.addr", "pool commands need a Redis (the embedded in-memory pool exists only inside \"runner run\"): set redis.addr, RUNNER_REDIS_ADDR or --redis-addr")
	}
	return a.withPool(cmd, cfg, func(ctx context.Context, client redis.UniversalClient, pool *lock.RedisLockPool) error {
		return fn(ctx, cfg, client, pool)
	})
}

// withPool runs fn on the pool of cfg's Redis, under a context that
// SIGINT and SIGTERM end (unless beforeWork stops the command first).
func (a *app) withPool(cmd *cobra.Command, cfg *Config, fn func(ctx context.Context, client redis.UniversalClient, pool *lock.RedisLockPool) error) error {
	if !a.proceed(cmd, cfg) {
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	client, pool, err := openPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	return fn(ctx, client, pool)
}

// openPool dials the Redis cfg names, once, and opens its pool, for a
// command that makes a few calls and reports its own errors.
func openPool(ctx context.Context, cfg *Config) (redis.UniversalClient, *lock.RedisLockPool, error) {
	// The command's error says what failed; go-redis's own lines would
	// only repeat it in another format.
	redis.SetLogger(redisLogger{hclog.NewNullLogger()})
	// Nothing is written before the server's settings were checked: an
	// evicting server or an untagged prefix on a cluster is refused here.
	client, _, err := dialRedis(ctx, cfg, hclog.NewNullLogger(), false)
	if err != nil {
		return nil, nil, err
	}
	pool, err := lock.NewRedisLockPool(client, cfg.lockConfig())
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return client, pool, nil
}

func (a *app) poolChangeCmd(sub, short, verb string) *cobra.Command {
	var cf *configFlags
	cmd := &cobra.Command{
		Use:   sub + " [-c FILE] ITEM... | -",
		Short: short,
		Long: short + ` named on the command line, or read one per line from stdin when
the only item is "-". Every item is read and checked before any is
written, so an invalid name (empty, longer than 1024 bytes, holding a NUL
byte) changes nothing and exits 2. The count printed is what Redis changed
(an item already absent is not counted as removed).`,
		Example: "  runner pool " + sub + " -c runner.yaml key-1 key-2\n  runner pool " + sub + " -c runner.yaml - < items.txt",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf(cmd, "pool %s needs items (or \"-\" to read them from stdin)", sub)
			}
			if slices.Contains(args, "-") && len(args) > 1 {
				return usageErrorf(cmd, "\"-\" must be the only item argument")
			}
			return a.poolCommand(cmd, cf, func(ctx context.Context, _ *Config, _ redis.UniversalClient, pool *lock.RedisLockPool) error {
				return changeMembers(ctx, pool, sub, verb, args, a.stdin, a.stdout)
			})
		},
	}
	cf = addConfigFlags(cmd, "redis-addr")
	return cmd
}

func (a *app) poolClearCmd() *cobra.Command {
	var cf *configFlags
	cmd := &cobra.Command{
		Use:   "clear [-c FILE]",
		Short: "Remove every item from the pool",
		Long: `Clear removes every member of the pool. Leases held on items keep running
until their tasks end; no item is granted again until it is added back.`,
		Example: "  runner pool clear -c runner.yaml",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.poolCommand(cmd, cf, func(ctx context.Context, _ *Config, _ redis.UniversalClient, pool *lock.RedisLockPool) error {
				if err := pool.Clear(ctx); err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, "pool cleared")
				return nil
			})
		},
	}
	cf = addConfigFlags(cmd, "redis-addr")
	return cmd
}

func (a *app) poolListCmd() *cobra.Command {
	var cf *configFlags
	var asJSON, asJSONL bool
	var filter listFilter
	var wf watchFlags
	cmd := &cobra.Command{
		Use:   "list [-c FILE] [--json | --jsonl] [--state S]... [--match GLOB] [--watch]",
		Short: "List every item with its status, owner, time left and token",
		Long: `List prints every item of the pool with its status (free, leased,
cooldown (resting after a run, or before a retry), quarantine, locked by
something else, or error), the owner of its lease, the time left on it and its fencing
token: an aligned table, with unprintable characters in names escaped as in
a Go string; --json prints one JSON array, --jsonl one JSON object per line
(for streaming a large pool). Memory stays bounded however large the pool.
--state keeps the items in the given states (repeatable), --match those
whose name matches a Redis glob pattern. --watch redraws the list every
--interval (the first --limit rows) until interrupted: a live view for a
terminal without a browser. Every refresh reads the whole pool.`,
		Example: "  runner pool list -c runner.yaml\n  runner pool list -c runner.yaml --jsonl | jq -r 'select(.status==\"leased\") | .item'\n  runner pool list -c runner.yaml --state leased --state cooldown --watch",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON && asJSONL {
				return usageErrorf(cmd, "--json and --jsonl exclude each other")
			}
			if err := filter.check(); err != nil {
				return usageErrorf(cmd, "--state %v", err)
			}
			if wf.on && (asJSON || asJSONL) {
				return usageErrorf(cmd, "--watch draws a table: it excludes --json and --jsonl")
			}
			format := "table"
			switch {
			case asJSON:
				format = "json"
			case asJSONL:
				format = "jsonl"
			}
			return a.poolCommand(cmd, cf, func(ctx context.Context, cfg *Config, client redis.UniversalClient, pool *lock.RedisLockPool) error {
				if wf.on {
					return a.watch(ctx, wf.every, func(w io.Writer) error {
						return listItems(ctx, cfg, client, pool, w, format, filter, wf.limit)
					})
				}
				return listItems(ctx, cfg, client, pool, a.stdout, format, filter, 0)
			})
		},
	}
	cf = addConfigFlags(cmd, "redis-addr")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON array")
	cmd.Flags().BoolVar(&asJSONL, "jsonl", false, "print one JSON object per line")
	cmd.Flags().StringArrayVar(&filter.states, "state", nil, "keep items in this state: free, leased, cooldown, quarantine, locked or error (repeatable)")
	cmd.Flags().StringVar(&filter.match, "match", "", "keep items whose name matches this Redis glob pattern (e.g. 'shard-1*')")
	wf.add(cmd, 100)
	return cmd
}

func (a *app) poolStatusCmd() *cobra.Command {
	var cf *configFlags
	var asJSON bool
	var wf watchFlags
	cmd := &cobra.Command{
		Use:   "status [-c FILE] [--json] [--watch]",
		Short: "Count the pool's items by state, with batch progress in batch mode",
		Long: `Status counts the pool's items: free, leased, resting in a cooldown or
retry backoff, quarantined, and locked by something else (each hold is told
apart by the value its lock holds). In batch mode
(mode: batch) it adds the progress of batch.id: done, failed, pending,
rate and ETA. --watch redraws it every --interval until interrupted.`,
		Example: "  runner pool status -c runner.yaml\n  runner pool status -c runner.yaml --mode batch --batch-id nightly --json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if wf.on && asJSON {
				return usageErrorf(cmd, "--watch draws a table: it excludes --json")
			}
			return a.poolCommand(cmd, cf, func(ctx context.Context, cfg *Config, client redis.UniversalClient, pool *lock.RedisLockPool) error {
				if wf.on {
					return a.watch(ctx, wf.every, func(w io.Writer) error {
						return poolStatus(ctx, cfg, client, pool, w, false)
					})
				}
				return poolStatus(ctx, cfg, client, pool, a.stdout, asJSON)
			})
		},
	}
	cf = addConfigFlags(cmd, "redis-addr", "mode", "batch-id")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	wf.add(cmd, 0)
	return cmd
}

// readItems returns the items of the command line, or streams them from
// stdin (one per line) when the only argument is "-".
func readItems(args []string, stdin io.Reader, each func([]string) error) error {
	if len(args) != 1 || args[0] != "-" {
		return each(args)
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64*1024), lock.MaxKeyLen+2)
	batch := make([]string, 0, chunk*10)
	for sc.Scan() {
		batch = append(batch, sc.Text())
		if len(batch) == cap(batch) {
			if err := each(batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%w: reading items from stdin: %w: a line is longer than %d bytes", errBadInput, lock.ErrInvalidKey, lock.MaxKeyLen)
		}
		return fmt.Errorf("reading items from stdin: %w", err)
	}
	return each(batch)
}

// changeMembers runs add, remove or set. Every item is read before any is
// written, so that pkg/lock, which checks them all first, writes nothing
// when one is invalid: an exit 2 leaves the pool as it was, however many
// lines stdin had. (pkg/lock writes a million items in chunks.)
func changeMembers(ctx context.Context, pool *lock.RedisLockPool, sub, verb string, args []string, stdin io.Reader, stdout io.Writer) error {
	var all []string
	err := readItems(args, stdin, func(items []string) error {
		all = append(all, items...)
		return nil
	})
	n := int64(len(all))
	if err == nil {
		switch sub {
		case "add":
			err = pool.Extend(ctx, all)
		case "remove":
			n, err = pool.ShrinkCount(ctx, all)
		default:
			err = pool.Assign(ctx, all)
		}
	}
	if errors.Is(err, lock.ErrInvalidKey) {
		return fmt.Errorf("%w: pool %s: %w", errBadInput, sub, err)
	}
	if err != nil {
		return fmt.Errorf("pool %s: %w", sub, err)
	}
	fmt.Fprintf(stdout, "%d items %s\n", n, verb)
	return nil
}

// itemInfo is one line of "pool list".
type itemInfo struct {
	Item   string `json:"item"`
	Status string `json:"status"` // free, leased, cooldown, quarantine, locked, error
	Owner  string `json:"owner,omitempty"`
	// TTLMillis is the time left on the item's lock (-1: no expiry).
	TTLMillis int64  `json:"ttl_ms,omitempty"`
	Token     int64  `json:"token,omitempty"`
	Error     string `json:"error,omitempty"`
	// Last is the item's last recorded run (worker.RunHistory), when one
	// is within its retention; pool list fills it, pool status does not.
	Last *worker.ItemHistory `json:"last,omitempty"`
}

// last is the LAST column: the last run's outcome, attempts in a row
// when more than one, and how long ago.
func (in itemInfo) last(now time.Time) string {
	if in.Last == nil {
		return "-"
	}
	s := string(in.Last.Outcome)
	if in.Last.Attempts > 1 {
		s += fmt.Sprintf(" (attempt %d)", in.Last.Attempts)
	}
	return s + ", " + now.Sub(in.Last.At).Round(time.Second).String() + " ago"
}

// describe reads the lock of each item: one pipelined round trip.
func describe(ctx context.Context, client redis.UniversalClient, pool *lock.RedisLockPool, items []string) ([]itemInfo, error) {
	pipe := client.Pipeline()
	gets := make([]*redis.StringCmd, len(items))
	ttls := make([]*redis.DurationCmd, len(items))
	for i, it := range items {
		gets[i] = pipe.Get(ctx, pool.Key(it))
		ttls[i] = pipe.PTTL(ctx, pool.Key(it))
	}
	if err := execReads(ctx, pipe); err != nil {
		return nil, err
	}
	out := make([]itemInfo, len(items))
	for i, it := range items {
		out[i] = classify(it, gets[i], ttls[i])
	}
	return out, nil
}

// listItems streams every item with its lock: memory stays bounded by one
// chunk however large the pool. format is table, json or jsonl.
func listItems(ctx context.Context, cfg *Config, client redis.UniversalClient, pool *lock.RedisLockPool, w io.Writer, format string, filter listFilter, limit int) error {
	store, err := statusStore(cfg, pool)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	// The table is aligned per chunk: a million rows are not held to
	// measure the widest name.
	tw := tabwriter.NewWriter(bw, 0, 0, 2, ' ', 0)
	first := true
	shown, more := 0, 0
	switch format {
	case "json":
		bw.WriteString("[")
	case "table":
		fmt.Fprintln(tw, "ITEM\tSTATUS\tOWNER\tTTL\tTOKEN\tLAST RUN")
	}
	flush := func(items []string) error {
		infos, err := describe(ctx, client, pool, items)
		if err != nil {
			return err
		}
		last, err := store.LastRuns(ctx, items)
		if err != nil {
			return err
		}
		now := time.Now()
		for _, in := range infos {
			if h, ok := last[in.Item]; ok {
				in.Last = &h
			}
			if !filter.keeps(in) {
				continue
			}
			if limit > 0 && shown == limit {
				more++
				continue
			}
			shown++
			if format == "table" {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cell(in.Item), in.Status, cell(in.Owner), in.ttl(), in.token(), in.last(now))
				continue
			}
			js, err := json.Marshal(in)
			if err != nil {
				return err
			}
			switch {
			case format == "jsonl":
			case first:
				bw.WriteString("\n")
			default:
				bw.WriteString(",\n")
			}
			first = false
			bw.Write(js)
			if format == "jsonl" {
				bw.WriteString("\n")
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		return bw.Flush()
	}
	batch := make([]string, 0, chunk)
	for it, err := range filter.items(ctx, client, pool) {
		if err != nil {
			return fmt.Errorf("pool list: %w", err)
		}
		batch = append(batch, it)
		if len(batch) == chunk {
			if err := flush(batch); err != nil {
				return fmt.Errorf("pool list: %w", err)
			}
			batch = batch[:0]
		}
	}
	if err := flush(batch); err != nil {
		return fmt.Errorf("pool list: %w", err)
	}
	if format == "json" {
		bw.WriteString("\n]\n")
	}
	if more > 0 {
		fmt.Fprintf(bw, "... and %d more\n", more)
	}
	return nil
}

// cell is a name as a table shows it: "-" for none, else displayName.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return displayName(s)
}

func (in itemInfo) ttl() string {
	switch {
	case in.TTLMillis > 0:
		return (time.Duration(in.TTLMillis) * time.Millisecond).String()
	case in.TTLMillis < 0:
		return "forever"
	}
	return "-"
}

func (in itemInfo) token() string {
	if in.Token > 0 {
		return fmt.Sprint(in.Token)
	}
	return "-"
}

// statusReport is "pool status".
type statusReport struct {
	Pool  string `json:"pool"`
	Mode  string `json:"mode"`
	Items int64  `json:"items"`
	Free  int64  `json:"free"`
	// Leased items are held by a runner's lease.
	Leased int64 `json:"leased"`
	// Cooldown items rest after a run (worker.cooldown) or wait for a
	// retry (backoff); Quarantine items are held back by a quarantine
	// (worker.quarantine, or "runner pool quarantine").
	Cooldown   int64 `json:"cooldown"`
	Quarantine int64 `json:"quarantine"`
	// Locked items are held by something other than a runner.
	Locked int64 `json:"locked_other"`
	Errors int64 `json:"errors,omitempty"`
	// PausedSince is when "runner pool pause" paused the pool, by the
	// Redis server's clock; absent when it is not paused.
	PausedSince time.Time    `json:"paused_since,omitzero"`
	Batch       *batchReport `json:"batch,omitempty"`
	// Runners are the live processes on the pool, from the fleet's
	// registry (worker.Registry), by ID.
	Runners []worker.Runner `json:"runners"`
}

type batchReport struct {
	ID string `json:"id"`
	worker.Progress
	Pending    int64   `json:"pending"`
	RatePerSec float64 `json:"rate_per_s"`
	ETASeconds float64 `json:"eta_s,omitempty"`
	// FailedItems are the batch's failed items with their last error, at
	// most maxFailedShown of them (FailedMore says how many more).
	FailedItems []worker.FailedItem `json:"failed_items,omitempty"`
	FailedMore  int64               `json:"failed_more,omitempty"`
}

// maxFailedShown bounds the failed items pool status names.
const maxFailedShown = 20

func poolStatus(ctx context.Context, cfg *Config, client redis.UniversalClient, pool *lock.RedisLockPool, w io.Writer, asJSON bool) error {
	r, err := buildStatus(ctx, cfg, client, pool)
	if err != nil {
		return err
	}
	return printStatus(cfg, r, w, asJSON)
}

// buildStatus reads the pool's state: its counts by state (countStates:
// the held items' locks, or every member's where the lock keys are not
// walked), the pause, the registry and, in batch mode, the batch's
// progress.
func buildStatus(ctx context.Context, cfg *Config, client redis.UniversalClient, pool *lock.RedisLockPool) (statusReport, error) {
	r := statusReport{Pool: pool.Keys().Base(), Mode: cfg.Mode}
	switch ms, err := client.HGet(ctx, pool.Keys().Control(), "paused").Int64(); {
	case err == nil:
		r.PausedSince = time.UnixMilli(ms).UTC()
	case !errors.Is(err, redis.Nil):
		return r, fmt.Errorf("pool status: %w", err)
	}
	plan, err := planWalk(ctx, client, pool)
	if err == nil {
		err = countStates(ctx, client, pool, plan, &r)
	}
	if err != nil {
		return r, fmt.Errorf("pool status: %w", err)
	}
	store, err := statusStore(cfg, pool)
	if err != nil {
		return r, err
	}
	if r.Runners, err = store.Runners(ctx); err != nil {
		return r, fmt.Errorf("pool status: %w", err)
	}
	if cfg.Mode == string(worker.ModeBatch) {
		if err := batchStatus(ctx, cfg, client, store, &r); err != nil {
			return r, err
		}
	}
	return r, nil
}

// printStatus writes r as pool status does.
func printStatus(cfg *Config, r statusReport, w io.Writer, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "pool\t%s\nmode\t%s\nitems\t%d\nfree\t%d\nleased\t%d\ncooldown\t%d\nquarantine\t%d\nlocked by others\t%d\n",
		displayName(r.Pool), r.Mode, r.Items, r.Free, r.Leased, r.Cooldown, r.Quarantine, r.Locked)
	if r.Errors > 0 {
		fmt.Fprintf(tw, "errors\t%d\n", r.Errors)
	}
	if !r.PausedSince.IsZero() {
		fmt.Fprintf(tw, "paused\tsince %s\n", r.PausedSince.Format(time.RFC3339))
	}
	if cfg.Mode == string(worker.ModeBatch) {
		fmt.Fprintf(tw, "batch\t%s\n", batchLine(r.Batch, cfg.Batch.ID))
	}
	fmt.Fprintf(tw, "runners\t%d alive\n", len(r.Runners))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Runners) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RUNNER\tHOST\tPID\tVERSION\tMODE\tWORKERS\tHELD\tRUNS\tFAILED\tLOST\tUP\tLAST BEAT")
		for _, rn := range r.Runners {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s ago\n", cell(rn.ID), cell(rn.Host), rn.PID, cell(rn.Version),
				rn.Mode, rn.Concurrency, rn.Held, rn.Runs, rn.Failures, rn.LeasesLost,
				rn.Beat.Sub(rn.Started).Round(time.Second), time.Since(rn.Beat).Round(100*time.Millisecond))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if r.Batch != nil && len(r.Batch.FailedItems) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "FAILED ITEM\tLAST ERROR")
		for _, f := range r.Batch.FailedItems {
			fmt.Fprintf(tw, "%s\t%s\n", cell(f.Item), cell(f.Error))
		}
		if r.Batch.FailedMore > 0 {
			fmt.Fprintf(tw, "... and %d more\t\n", r.Batch.FailedMore)
		}
		return tw.Flush()
	}
	return nil
}

// statusStore is the worker store over pool, for its registry, history
// and batch state.
func statusStore(cfg *Config, pool *lock.RedisLockPool) (*worker.RedisStore, error) {
	var opts []worker.StoreOption
	if cfg.Redis.AllowEviction {
		opts = append(opts, worker.AllowEviction())
	}
	return worker.NewRedisStore(pool, opts...)
}

// batchStatus adds the progress of batch.id to r.
func batchStatus(ctx context.Context, cfg *Config, client redis.UniversalClient, store *worker.RedisStore, r *statusReport) error {
	prog, found, err := store.Progress(ctx, cfg.Batch.ID)
	if err != nil {
		return fmt.Errorf("pool status: %w", err)
	}
	if found {
		now, err := client.Time(ctx).Result()
		if err != nil {
			return fmt.Errorf("pool status: %w", err)
		}
		end := now
		if !prog.Finished.IsZero() {
			end = prog.Finished
		}
		rate, eta := worker.Rate(worker.Progress{Total: prog.Total}, prog.Started, prog, end)
		r.Batch = &batchReport{ID: cfg.Batch.ID, Progress: prog, Pending: prog.Pending(), RatePerSec: rate, ETASeconds: eta.Seconds()}
		if prog.Failed > 0 {
			// A page may hold fewer items than asked (an HSCAN step):
			// read on until enough are named or the scan ends.
			var failed []worker.FailedItem
			for cursor := ""; len(failed) < maxFailedShown; {
				page, next, err := store.FailedItems(ctx, cfg.Batch.ID, cursor, maxFailedShown)
				if err != nil {
					return fmt.Errorf("pool status: %w", err)
				}
				failed = append(failed, page...)
				if cursor = next; cursor == "" {
					break
				}
			}
			r.Batch.FailedItems = failed[:min(len(failed), maxFailedShown)]
			r.Batch.FailedMore = max(0, prog.Failed-int64(len(r.Batch.FailedItems)))
		}
	}
	return nil
}

// batchLine is the batch line of "pool status".
func batchLine(b *batchReport, id string) string {
	if b == nil {
		return displayName(id) + ": not started"
	}
	state := "running"
	if !b.Finished.IsZero() {
		state = "finished " + b.Finished.Format(time.RFC3339)
	}
	pct := 100.0
	if b.Total > 0 {
		pct = 100 * float64(b.Done+b.Failed) / float64(b.Total)
	}
	line := fmt.Sprintf("%s: %d done, %d failed, %d pending of %d (%.1f%%), %s, %.1f items/s",
		displayName(b.ID), b.Done, b.Failed, b.Pending, b.Total, pct, state, b.RatePerSec)
	if b.ETASeconds > 0 && b.Finished.IsZero() {
		line += fmt.Sprintf(", ETA %v", (time.Duration(b.ETASeconds) * time.Second).Round(time.Second))
	}
	if b.Rollbacks > 0 {
		line += fmt.Sprintf("; its state went through %d redis dataset discontinuities (last %s): items finished shortly before may run again",
			b.Rollbacks, b.RolledBack.Format(time.RFC3339))
	}
	return line
}
