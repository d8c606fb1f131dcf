// Command funcworker runs a Go function over every item of a pool with
// pkg/worker: a batch of ten items, four at a time, each under a lease the
// pool keeps alive, with failed items retried.
//
// The task shows the pattern a real task should follow: do the work under
// the task's context, stop when it ends (context.Cause says whether the
// lease was lost or the process is shutting down), and make every write
// carry the lease's fencing token so the store can refuse a holder whose
// lease has passed. Item "item-07" fails its first attempt to show a retry;
// -fail ITEM makes an item fail every attempt, so the batch ends with
// ErrBatchFailed.
//
//	go run ./examples/funcworker                       # in-memory backend
//	REDIS_ADDR=127.0.0.1:6379 go run ./examples/funcworker -batch run-2
//
// With Redis, several copies started with the same -batch share the batch;
// a finished batch is remembered for a day, so pass a new -batch to run
// again. Ctrl-C drains (running tasks finish, no new ones start); a second
// Ctrl-C aborts them. Exit status: 0 when the batch finished, 1 when items
// failed, 2 on other errors, 130 when interrupted first.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

func main() {
	batch := flag.String("batch", "demo", "batch id (Redis: reuse it to join or resume a batch)")
	fail := flag.String("fail", "", "an item that fails every attempt")
	flag.Parse()
	log := hclog.New(&hclog.LoggerOptions{Name: "funcworker", Level: hclog.Info})
	os.Exit(run(log, *batch, *fail))
}

func run(log hclog.Logger, batchID, failItem string) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	items := make([]string, 10)
	for i := range items {
		items[i] = fmt.Sprintf("item-%02d", i)
	}
	alloc, store, err := newBackend(ctx, log, items)
	if err != nil {
		log.Error("backend", "error", err)
		return 2
	}
	defer alloc.Close()

	db := newFencedDB()
	task := worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
		log := log.With("item", job.Item, "token", job.Token, "attempt", job.Attempt)
		if job.Item == failItem || (job.Item == "item-07" && job.Attempt == 1) {
			return errors.New("upstream refused the request (simulated)")
		}
		// The work: slow enough to see four run at once.
		select {
		case <-time.After(time.Duration(300+rand.IntN(700)) * time.Millisecond):
		case <-ctx.Done():
			// ErrLeaseLost: someone else may hold the item now, so write
			// nothing. ErrShutdown / ErrTaskTimeout: stop, it is retried.
			cause := context.Cause(ctx)
			log.Warn("stopped before writing", "cause", cause)
			return cause
		}
		// The write carries the token and the store checks it atomically
		// with the write. Checking ctx here instead would not do: the lease
		// can pass between that check and the write.
		if err := db.Write(job.Item, job.Token, "processed by "+job.Owner); err != nil {
			return err
		}
		log.Info("wrote fenced row")
		return nil
	})

	pool, err := worker.New(alloc, store, task, worker.Config{
		Mode:          worker.ModeBatch,
		BatchID:       batchID,
		Concurrency:   4,
		LeaseTTL:      5 * time.Second,
		MaxAttempts:   3,
		Backoff:       200 * time.Millisecond,
		ShutdownGrace: 5 * time.Second,
		Logger:        log.Named("pool"),
	})
	if err != nil {
		log.Error("worker.New", "error", err)
		return 2
	}

	// First signal: drain. Second: abort the tasks still running.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		<-sigs
		log.Info("draining; signal again to abort running tasks")
		cancel()
		<-sigs
		log.Warn("aborting")
		pool.Abort()
	}()

	err = pool.Run(ctx)
	log.Info("rows written by this process", "rows", db.Len())
	switch {
	case errors.Is(err, worker.ErrBatchFailed):
		log.Error("batch finished with failures", "error", err)
		return 1
	case err != nil:
		log.Error("run", "error", err)
		return 2
	}
	// Run also returns nil after a drain: ask the store whether the batch
	// is complete (ctx may be cancelled by now).
	p, _, err := store.Progress(context.WithoutCancel(ctx), batchID)
	if err != nil {
		log.Error("progress", "error", err)
		return 2
	}
	if !p.Complete() {
		log.Warn("interrupted before the batch finished", "done", p.Done, "pending", p.Pending())
		return 130
	}
	// A holder whose lease has passed still has its old token: its late
	// write is refused.
	if item, ok := db.anyItem(); ok {
		err := db.Write(item, 1, "late write")
		log.Info("a late write with an old token", "item", item, "refused", errors.Is(err, errStaleToken))
	}
	log.Info("batch finished", "batch", batchID, "done", p.Done, "total", p.Total)
	return 0
}

// newBackend uses Redis when REDIS_ADDR is set, else memory.
func newBackend(ctx context.Context, log hclog.Logger, items []string) (*allocator.Allocator, worker.Store, error) {
	cfg := allocator.Config{}
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		pool, err := lock.NewMemoryLockPool(lock.MemoryConfig{})
		if err != nil {
			return nil, nil, err
		}
		if err := pool.Assign(ctx, items); err != nil {
			return nil, nil, err
		}
		alloc, err := allocator.NewMemory(pool, cfg)
		if err != nil {
			return nil, nil, err
		}
		log.Info("backend: in-memory (set REDIS_ADDR to share the batch between processes)")
		return alloc, worker.NewMemoryStore(pool), nil
	}
	client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	poolCfg := lock.Config{Prefix: "funcworker"}
	pool, err := lock.NewRedisLockPool(client, poolCfg)
	if err != nil {
		return nil, nil, err
	}
	if err := pool.Assign(ctx, items); err != nil {
		return nil, nil, fmt.Errorf("assign items on Redis %s: %w", addr, err)
	}
	alloc, err := allocator.NewRedis(pool, cfg)
	if err != nil {
		return nil, nil, err
	}
	store, err := worker.NewRedisStore(pool)
	if err != nil {
		alloc.Close()
		return nil, nil, err
	}
	log.Info("backend: Redis", "addr", addr, "pool", pool.PoolKey())
	return alloc, store, nil
}

// errStaleToken: a write carried a fencing token older than one the store
// has already accepted for the item.
var errStaleToken = errors.New("fenceddb: stale fencing token")

// fencedDB stands in for whatever a task writes to. It remembers the
// highest token that wrote each item and refuses writes with a lower one,
// so a worker that stalled past its lease (GC pause, SIGSTOP, partition)
// and wakes after the item was leased again cannot overwrite the newer
// holder's result. A real store does the same check atomically with the
// write: UPDATE ... WHERE item = $1 AND token <= $2, a compare-and-set, or a
// conditional put. (This one lives in the process; a real one is shared by
// every worker of the fleet.)
type fencedDB struct {
	mu   sync.Mutex
	rows map[string]fencedRow
}

type fencedRow struct {
	token int64
	value string
}

func newFencedDB() *fencedDB { return &fencedDB{rows: map[string]fencedRow{}} }

// Write stores value for item unless a higher token wrote it before. An
// equal token is the same lease writing again, which is allowed.
func (db *fencedDB) Write(item string, token int64, value string) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if last, ok := db.rows[item]; ok && token < last.token {
		return fmt.Errorf("%w: item %q, token %d < %d", errStaleToken, item, token, last.token)
	}
	db.rows[item] = fencedRow{token: token, value: value}
	return nil
}

// Len returns how many items have been written.
func (db *fencedDB) Len() int {
	db.mu.Lock()
	defer db.mu.Unlock()
	return len(db.rows)
}

// anyItem returns some item that has been written.
func (db *fencedDB) anyItem() (string, bool) {
	db.mu.Lock()
	defer db.mu.Unlock()
	for item := range db.rows {
		return item, true
	}
	return "", false
}
