package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// chunk is how many items pool commands send or read per round trip.
const chunk = 1000

// cmdPool is "runner pool ...": inspect and change the pool the config
// names. It needs Redis: the embedded pool lives only inside "runner run".
func cmdPool(args []string, stdin io.Reader, stdout, stderr io.Writer, environ []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: pool needs a subcommand: add, remove, set, clear, list or status", errUsage)
	}
	sub := args[0]
	var asJSON bool
	withJSON := func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print JSON") }
	var extra func(*flag.FlagSet)
	switch sub {
	case "add", "remove", "set", "clear":
	case "list", "status":
		extra = withJSON
	default:
		return fmt.Errorf("%w: unknown pool subcommand %q", errUsage, sub)
	}
	cfg, rest, err := parseFlags("pool "+sub, args[1:], stderr, environ, extra)
	if err != nil {
		return err
	}
	if cfg.embedded() {
		return configErrorf("redis.addr", "pool commands need a Redis (the embedded in-memory pool exists only inside \"runner run\")")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The command's error says what failed; go-redis's own lines would
	// only repeat it in another format.
	redis.SetLogger(redisLogger{hclog.NewNullLogger()})
	// Nothing is written before the server's settings were checked: an
	// evicting server or an untagged prefix on a cluster is refused here.
	client, _, err := dialRedis(ctx, cfg, hclog.NewNullLogger(), false)
	if err != nil {
		return err
	}
	defer client.Close()
	pool, err := lock.NewRedisLockPool(client, cfg.lockConfig())
	if err != nil {
		return err
	}

	switch sub {
	case "add", "remove", "set":
		if len(rest) == 0 {
			return fmt.Errorf("%w: pool %s needs items (or \"-\" to read them from stdin)", errUsage, sub)
		}
		return changeMembers(ctx, pool, sub, rest, stdin, stdout)
	case "clear":
		if len(rest) > 0 {
			return fmt.Errorf("%w: pool clear takes no items", errUsage)
		}
		if err := pool.Clear(ctx); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "pool cleared")
		return nil
	case "list":
		if len(rest) > 0 {
			return fmt.Errorf("%w: pool list takes no arguments", errUsage)
		}
		return listItems(ctx, client, pool, stdout, asJSON)
	default:
		if len(rest) > 0 {
			return fmt.Errorf("%w: pool status takes no arguments", errUsage)
		}
		return poolStatus(ctx, cfg, client, pool, stdout, asJSON)
	}
}

// readItems returns the items of the command line, or streams them from
// stdin (one per line) when the only argument is "-".
func readItems(args []string, stdin io.Reader, each func([]string) error) error {
	if len(args) != 1 || args[0] != "-" {
		for _, it := range args {
			if it == "-" {
				return fmt.Errorf("%w: \"-\" must be the only item argument", errUsage)
			}
		}
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
func changeMembers(ctx context.Context, pool *lock.RedisLockPool, sub string, args []string, stdin io.Reader, stdout io.Writer) error {
	var all []string
	err := readItems(args, stdin, func(items []string) error {
		all = append(all, items...)
		return nil
	})
	if err == nil {
		switch sub {
		case "add":
			err = pool.Extend(ctx, all)
		case "remove":
			err = pool.Shrink(ctx, all)
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
	verb := map[string]string{"add": "added", "remove": "removed", "set": "set as the pool"}[sub]
	fmt.Fprintf(stdout, "%d items %s\n", len(all), verb)
	return nil
}

// itemInfo is one line of "pool list".
type itemInfo struct {
	Item   string `json:"item"`
	Status string `json:"status"` // free, leased, held-back, locked, error
	Owner  string `json:"owner,omitempty"`
	// TTLMillis is the time left on the item's lock (-1: no expiry).
	TTLMillis int64  `json:"ttl_ms,omitempty"`
	Token     int64  `json:"token,omitempty"`
	Error     string `json:"error,omitempty"`
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
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		// A server's reply to one command (WRONGTYPE at one item's key)
		// is that item's status; anything else (the connection) fails.
		var rerr redis.Error
		if !errors.As(err, &rerr) {
			return nil, err
		}
	}
	out := make([]itemInfo, len(items))
	for i, it := range items {
		info := itemInfo{Item: it, Status: "free"}
		v, err := gets[i].Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			info.Status, info.Error = "error", err.Error()
		default:
			info.TTLMillis = ttls[i].Val().Milliseconds()
			if ttls[i].Val() < 0 {
				info.TTLMillis = -1
			}
			if owner, token, ok := allocator.ParseLeaseValue(v); ok {
				info.Status, info.Owner, info.Token = "leased", owner, token
			} else if v == allocator.QuarantineValue {
				info.Status = "held-back"
			} else {
				info.Status, info.Owner = "locked", v
			}
		}
		out[i] = info
	}
	return out, nil
}

// listItems streams every item with its lock: memory stays bounded by one
// chunk however large the pool.
func listItems(ctx context.Context, client redis.UniversalClient, pool *lock.RedisLockPool, w io.Writer, asJSON bool) error {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	enc := json.NewEncoder(bw)
	if asJSON {
		bw.WriteString("[")
	} else {
		fmt.Fprintf(bw, "%-32s %-10s %-32s %10s %s\n", "ITEM", "STATUS", "OWNER", "TTL", "TOKEN")
	}
	first := true
	flush := func(items []string) error {
		infos, err := describe(ctx, client, pool, items)
		if err != nil {
			return err
		}
		for _, in := range infos {
			if asJSON {
				if !first {
					bw.WriteString(",")
				}
				bw.WriteString("\n")
				if err := enc.Encode(in); err != nil {
					return err
				}
				first = false
				continue
			}
			ttl, token := "-", "-"
			switch {
			case in.TTLMillis > 0:
				ttl = (time.Duration(in.TTLMillis) * time.Millisecond).String()
			case in.TTLMillis < 0:
				ttl = "forever"
			}
			if in.Token > 0 {
				token = fmt.Sprint(in.Token)
			}
			fmt.Fprintf(bw, "%-32q %-10s %-32q %10s %s\n", in.Item, in.Status, in.Owner, ttl, token)
		}
		return bw.Flush()
	}
	batch := make([]string, 0, chunk)
	for it, err := range pool.Items(ctx) {
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
	if asJSON {
		bw.WriteString("]\n")
	}
	return nil
}

// statusReport is "pool status".
type statusReport struct {
	Pool   string       `json:"pool"`
	Items  int64        `json:"items"`
	Locked int64        `json:"locked"`
	Free   int64        `json:"free"`
	Batch  *batchReport `json:"batch,omitempty"`
}

type batchReport struct {
	ID string `json:"id"`
	worker.Progress
	Pending    int64   `json:"pending"`
	RatePerSec float64 `json:"rate_per_s"`
	ETASeconds float64 `json:"eta_s,omitempty"`
}

func poolStatus(ctx context.Context, cfg *Config, client redis.UniversalClient, pool *lock.RedisLockPool, w io.Writer, asJSON bool) error {
	locked, free, err := pool.HealthCheck(ctx)
	if err != nil {
		return fmt.Errorf("pool status: %w", err)
	}
	r := statusReport{Pool: pool.Keys().Base(), Items: locked + free, Locked: locked, Free: free}
	var opts []worker.StoreOption
	if cfg.Redis.AllowEviction {
		opts = append(opts, worker.AllowEviction())
	}
	store, err := worker.NewRedisStore(pool, opts...)
	if err != nil {
		return err
	}
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
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	fmt.Fprintf(w, "pool    %s\nitems   %d\nlocked  %d\nfree    %d\n", r.Pool, r.Items, r.Locked, r.Free)
	if b := r.Batch; b != nil {
		state := "running"
		if !b.Finished.IsZero() {
			state = "finished " + b.Finished.Format(time.RFC3339)
		}
		pct := 100.0
		if b.Total > 0 {
			pct = 100 * float64(b.Done+b.Failed) / float64(b.Total)
		}
		fmt.Fprintf(w, "batch   %s: %d done, %d failed, %d pending of %d (%.1f%%), %s, %.1f items/s",
			b.ID, b.Done, b.Failed, b.Pending, b.Total, pct, state, b.RatePerSec)
		if b.ETASeconds > 0 && b.Finished.IsZero() {
			fmt.Fprintf(w, ", ETA %v", (time.Duration(b.ETASeconds) * time.Second).Round(time.Second))
		}
		if b.Rollbacks > 0 {
			fmt.Fprintf(w, "; its state went through %d redis dataset discontinuities (last %s): items finished shortly before may run again",
				b.Rollbacks, b.RolledBack.Format(time.RFC3339))
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintf(w, "batch   %s: not started\n", cfg.Batch.ID)
	}
	return nil
}
