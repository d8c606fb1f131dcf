package redistest_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
)

// mustGet fails unless key holds want.
func mustGet(t *testing.T, c *redis.Client, key, want string) {
	t.Helper()
	if got, err := c.Get(ctx(t), key).Result(); err != nil || got != want {
		t.Fatalf("GET %s = %q, %v; want %q", key, got, err, want)
	}
}

// mustMiss fails unless key is absent.
func mustMiss(t *testing.T, c *redis.Client, key string) {
	t.Helper()
	if err := c.Get(ctx(t), key).Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET %s: err = %v, want redis.Nil", key, err)
	}
}

// killAndCheck kills s and checks that the process and its port are gone.
func killAndCheck(t *testing.T, s *redistest.Server) {
	t.Helper()
	pid := s.Pid()
	if pid == 0 {
		t.Fatal("Pid = 0 for a running server")
	}
	s.Kill()
	if s.Pid() != 0 || s.Running() {
		t.Fatalf("Pid = %d after Kill", s.Pid())
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process %d still exists after Kill: %v", pid, err)
	}
	if err := dial(s.Addr); err == nil {
		t.Fatalf("%s still accepts connections after Kill", s.Addr)
	}
	s.Kill() // idempotent
	s.Stop() // nothing to stop
}

func TestKillAfterBGSAVE(t *testing.T) {
	t.Parallel()
	s := redistest.StartServer(t, "--save", "")
	c := s.Client(t)
	for _, k := range []string{"a", "b", "c"} {
		if err := c.Set(ctx(t), "saved:"+k, k, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.BgSave(ctx(t)).Err(); err != nil {
		t.Fatalf("BGSAVE: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := c.Info(ctx(t), "persistence").Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(info, "rdb_bgsave_in_progress:0") {
			if !strings.Contains(info, "rdb_last_bgsave_status:ok") {
				t.Fatalf("BGSAVE failed:\n%s", info)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("BGSAVE still in progress after 10s:\n%s", info)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "dump.rdb")); err != nil {
		t.Fatalf("no RDB in Dir after BGSAVE: %v", err)
	}
	for _, k := range []string{"a", "b"} {
		if err := c.Set(ctx(t), "unsaved:"+k, k, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Del(ctx(t), "saved:c").Err(); err != nil {
		t.Fatal(err)
	}

	oldPid := s.Pid()
	killAndCheck(t, s)
	s.Restart()
	if s.Pid() == 0 || s.Pid() == oldPid {
		t.Fatalf("Pid after Restart = %d (was %d)", s.Pid(), oldPid)
	}
	for _, k := range []string{"a", "b", "c"} {
		mustGet(t, c, "saved:"+k, k) // as of the BGSAVE, deletion included
	}
	for _, k := range []string{"a", "b"} {
		mustMiss(t, c, "unsaved:"+k)
	}
}

func TestKillSkipsShutdownSave(t *testing.T) {
	t.Parallel()
	// A save point that never fires during the test: only a clean shutdown
	// writes the RDB.
	s := redistest.StartServer(t, "--save", "3600 1")
	c := s.Client(t)
	if err := c.Set(ctx(t), "k1", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	killAndCheck(t, s)
	s.Restart()
	mustMiss(t, c, "k1") // SIGKILL: no save on the way out

	if err := c.Set(ctx(t), "k2", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Restart() // Stop (SIGTERM) first: saves on shutdown
	mustGet(t, c, "k2", "v")
}

func TestKillKeepsAOFAlways(t *testing.T) {
	t.Parallel()
	s := redistest.StartServer(t, "--appendonly", "yes", "--appendfsync", "always")
	c := s.Client(t)
	for i := 0; i < 100; i++ {
		if err := c.Incr(ctx(t), "counter").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Set(ctx(t), "last", "written", 0).Err(); err != nil {
		t.Fatal(err)
	}
	dir := s.Dir()
	killAndCheck(t, s)
	s.Restart()
	if s.Dir() != dir {
		t.Fatalf("Dir changed across Restart: %s -> %s", dir, s.Dir())
	}
	mustGet(t, c, "counter", "100")
	mustGet(t, c, "last", "written")
	if entries, err := os.ReadDir(filepath.Join(dir, "appendonlydir")); err != nil || len(entries) == 0 {
		t.Fatalf("no AOF files in %s/appendonlydir: %v", dir, err)
	}
}

func TestPidAndDirOfStoppedServer(t *testing.T) {
	t.Parallel()
	s := redistest.StartServer(t)
	if s.Pid() == 0 || !s.Running() {
		t.Fatal("Pid = 0 for a running server")
	}
	if fi, err := os.Stat(s.Dir()); err != nil || !fi.IsDir() {
		t.Fatalf("Dir %q: %v", s.Dir(), err)
	}
	s.Stop()
	if s.Pid() != 0 || s.Running() {
		t.Fatalf("Pid = %d after Stop", s.Pid())
	}
	s.Kill() // killing a stopped server does nothing
	s.Restart()
	if err := s.Client(t).Ping(ctx(t)).Err(); err != nil {
		t.Fatalf("PING after Stop+Kill+Restart: %v", err)
	}
}
