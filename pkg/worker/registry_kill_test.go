//go:build linux

package worker_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// fleetChildEnv makes the test binary a process of the fleet for
// TestRegistryForgetsAKilledProcess: "<redis addr>|<prefix>". It runs a
// pool whose tasks block until the process is killed.
const fleetChildEnv = "LOCKPOOL_TEST_FLEET_CHILD"

// childHeartbeat is the child's Config.Heartbeat.
const childHeartbeat = 200 * time.Millisecond

func init() {
	spec, ok := os.LookupEnv(fleetChildEnv)
	if !ok {
		return
	}
	_ = os.Unsetenv(fleetChildEnv)
	os.Exit(fleetChild(spec))
}

func fleetChild(spec string) int {
	addr, prefix, _ := strings.Cut(spec, "|")
	c := redis.NewClient(&redis.Options{Addr: addr})
	pool, err := lock.NewRedisLockPool(c, lock.Config{Prefix: prefix})
	if err == nil {
		var a *allocator.Allocator
		var st *worker.RedisStore
		if a, err = allocator.NewRedis(pool, allocator.Config{}); err == nil {
			if st, err = worker.NewRedisStore(pool); err == nil {
				var p *worker.Pool
				p, err = worker.New(a, st, worker.TaskFunc(func(ctx context.Context, job worker.Job) error {
					<-ctx.Done()
					return ctx.Err()
				}), worker.Config{Concurrency: 2, LeaseTTL: 10 * time.Second, Heartbeat: childHeartbeat, Version: "child"})
				if err == nil {
					err = p.Run(context.Background())
				}
			}
		}
	}
	fmt.Fprintf(os.Stderr, "fleet child: %v (want it killed first)\n", err)
	return 3
}

// TestRegistryForgetsAKilledProcess: a process of the fleet killed with
// SIGKILL (no Leave) is gone from the registry once its registration
// expires, three heartbeats after its last, and not before.
func TestRegistryForgetsAKilledProcess(t *testing.T) {
	t.Parallel()
	f := backendNamed(t, "redis").new(t, items(2))
	ctx := context.Background()
	self, err := os.Executable()
	must(t, err)
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), fleetChildEnv+"="+redistest.Addr(t)+"|"+f.prefix)
	cmd.Stderr = os.Stderr
	must(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	var child worker.Runner
	redistest.Eventually(t, "the child registered, holding both items", 20*time.Second, func() bool {
		rs, err := f.store.Runners(ctx)
		must(t, err)
		for _, r := range rs {
			if r.PID == cmd.Process.Pid {
				child = r
			}
		}
		return child.Held == 2
	})
	if child.Version != "child" || child.Expires.Sub(child.Beat) != 3*childHeartbeat {
		t.Fatalf("the child's registration = %+v; want version child, expiring 3 heartbeats after its last", child)
	}
	must(t, cmd.Process.Signal(syscall.SIGKILL))
	_, _ = cmd.Process.Wait()
	// The last heartbeat may have been sent after the read above: the
	// registration expires 3 heartbeats after it, at most, and not before
	// the expiry last read.
	last := child
	took := redistest.Eventually(t, "the killed child gone from the registry", 3*childHeartbeat+5*time.Second+redistest.Slack(), func() bool {
		rs, err := f.store.Runners(ctx)
		must(t, err)
		for _, r := range rs {
			if r.PID == cmd.Process.Pid {
				last = r
				return false
			}
		}
		if now := f.clock(); now.Before(last.Expires) {
			t.Fatalf("the registration vanished at %v, before it expired at %v", now, last.Expires)
		}
		return true
	})
	t.Logf("gone %v after SIGKILL (heartbeat %v, registration %v; %s)", took, childHeartbeat, 3*childHeartbeat, redistest.SchedDelay())
}
