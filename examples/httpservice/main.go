// Command httpservice shows the allocator embedded in an HTTP service. Each
// request leases one API key from a shared pool ("api-key-1".."api-key-5"),
// makes its (simulated) upstream call with that key and the lease's fencing
// token, and releases the key. When no key frees up within two seconds it
// answers 503 with Retry-After instead of queueing without bound. A long
// call keeps its lease alive and is cut short, with a 503, if the lease is
// lost anyway.
//
// Run it on the in-memory backend (one process):
//
//	go run ./examples/httpservice
//	curl 'http://127.0.0.1:8080/?work=3s'
//
// or on Redis, so several copies share the five keys:
//
//	REDIS_ADDR=127.0.0.1:6379 go run ./examples/httpservice -listen 127.0.0.1:8081
//
// Six concurrent slow requests show the 503: for i in 1 2 3 4 5 6; do curl
// -s 'http://127.0.0.1:8080/?work=5s' & done. With Redis, deleting a key's
// lock (redis-cli DEL 'httpservice|lock-pool:api-key-1') during a slow
// request shows a lost lease.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

var apiKeys = []string{"api-key-1", "api-key-2", "api-key-3", "api-key-4", "api-key-5"}

const (
	maxKeyWait = 2 * time.Second  // longest a request waits for a free key
	maxWork    = 20 * time.Second // longest simulated upstream call
	drainTime  = 30 * time.Second // > maxKeyWait + maxWork: requests in flight finish
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve HTTP on")
	flag.Parse()
	if err := run(*listen); err != nil {
		log.Fatal(err)
	}
}

func run(listen string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	alloc, err := newAllocator(ctx)
	if err != nil {
		return err
	}
	defer alloc.Close()

	host, _ := os.Hostname()
	srv := &http.Server{
		Addr:              listen,
		Handler:           &service{alloc: alloc, owner: fmt.Sprintf("httpservice@%s:%d", host, os.Getpid())},
		ReadHeaderTimeout: 5 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Printf("serving on http://%s/ (try ?work=3s)", listen)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stop() // a second signal kills the process the default way
	log.Print("shutting down: finishing requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), drainTime)
	defer cancel()
	// Leases of requests still running when Shutdown gives up are not
	// released; they expire after their TTL.
	return srv.Shutdown(sctx)
}

// newAllocator uses Redis when REDIS_ADDR is set, else an in-memory pool.
func newAllocator(ctx context.Context) (*allocator.Allocator, error) {
	cfg := allocator.Config{LeaseTTL: 10 * time.Second} // a crashed process frees its keys within 10s
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		pool, err := lock.NewMemoryLockPool(lock.MemoryConfig{})
		if err != nil {
			return nil, err
		}
		if err := pool.Assign(ctx, apiKeys); err != nil {
			return nil, err
		}
		log.Print("backend: in-memory (REDIS_ADDR not set; keys are shared by this process only)")
		return allocator.NewMemory(pool, cfg)
	}
	// ContextTimeoutEnabled: a stalled Redis cannot hold a request past
	// its context's deadline.
	client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	poolCfg := lock.Config{Prefix: "httpservice"}
	pool, err := lock.NewRedisLockPool(client, poolCfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Assign(ctx, apiKeys); err != nil {
		return nil, fmt.Errorf("assign keys on Redis %s: %w", addr, err)
	}
	log.Printf("backend: Redis at %s, pool %s", addr, pool.PoolKey())
	return allocator.NewRedis(pool, cfg)
}

type service struct {
	alloc *allocator.Allocator
	owner string
}

func (s *service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	work := 200 * time.Millisecond
	if q := r.URL.Query().Get("work"); q != "" {
		d, err := time.ParseDuration(q)
		if err != nil || d < 0 || d > maxWork {
			http.Error(w, fmt.Sprintf("work: want a duration from 0 to %v", maxWork), http.StatusBadRequest)
			return
		}
		work = d
	}

	// Wait for a key no longer than maxKeyWait, or less if the client
	// gives up first.
	wctx, cancel := context.WithTimeout(r.Context(), maxKeyWait)
	lease, err := s.alloc.Acquire(wctx, s.owner, allocator.AcquireOptions{})
	cancel()
	if errors.Is(err, allocator.ErrNoFreeItem) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "all API keys are busy, retry shortly", http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		log.Print(err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	defer func() {
		// Release even when the client has gone: the request context may be
		// cancelled by now.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			log.Print(err) // e.g. ErrLeaseLost: someone else holds the key now
		}
	}()

	// Refresh the lease while the call runs; ka.Context() ends with cause
	// ErrLeaseLost if it is lost, or when the client goes away.
	ka, err := lease.KeepAlive(r.Context(), allocator.KeepAliveOptions{})
	if err != nil {
		log.Print(err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	defer ka.Stop()

	result, err := callUpstream(ka.Context(), lease.Item(), lease.Token(), work)
	switch {
	case err == nil:
		fmt.Fprintf(w, "%s (via %s, fencing token %d)\n", result, lease.Item(), lease.Token())
	case errors.Is(context.Cause(ka.Context()), allocator.ErrLeaseLost):
		log.Printf("%s: lease lost mid-call: %v", lease.Item(), context.Cause(ka.Context()))
		w.Header().Set("Retry-After", "1")
		http.Error(w, "lost the API key mid-call, retry", http.StatusServiceUnavailable)
	case r.Context().Err() != nil:
		// The client went away; there is nobody to answer.
	default:
		log.Print(err)
		http.Error(w, "upstream failed", http.StatusBadGateway)
	}
}

// callUpstream stands in for the real call. A real one sends the key as its
// credential and the fencing token with every write, e.g. as a header the
// upstream checks ("refuse a token lower than the last one you accepted for
// this key"), so a holder that stalled past its lease cannot overwrite the
// work of the next one.
func callUpstream(ctx context.Context, key string, token int64, work time.Duration) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://upstream.example/v1/jobs", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("X-Fencing-Token", fmt.Sprint(token))
	// Simulated: instead of http.DefaultClient.Do(req), wait as long as the
	// call would take, ending early when ctx does.
	select {
	case <-time.After(work):
		return fmt.Sprintf("upstream did %v of work", work), nil
	case <-ctx.Done():
		return "", context.Cause(ctx)
	}
}
