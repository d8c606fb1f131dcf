package main

// The runner's configuration end to end: the example config runs as a demo
// without Redis, and a bad config or command line exits 2 with one line
// naming what is wrong.

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestE2EEmbeddedDemo(t *testing.T) {
	parallel(t)
	example, err := filepath.Abs("../../config/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// A PATH without redis-server proves nothing needs one.
	r := startRunner(t, "demo", []string{"PATH=/usr/bin:/bin", "REDIS_ADDR="}, "run", "-c", example)
	if code := r.wait(60 * time.Second); code != 0 {
		t.Fatalf("demo exited %d:\n%s", code, r.out.String())
	}
	out := r.out.String()
	for _, want := range []string{"embedded in-memory", "batch complete"} {
		if !strings.Contains(out, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
	cfg, err := loadConfig(example, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range cfg.Pool.Items {
		if !strings.Contains(out, "working on "+it) {
			t.Fatalf("demo never ran %s:\n%s", it, out)
		}
	}
}

func TestE2EInvalidConfigExitsTwoNamingTheField(t *testing.T) {
	t.Parallel()
	typo := writeFile(t, t.TempDir(), "typo.yaml", "worker:\n  concurency: 4\ntask:\n  command: [\"true\"]\n")
	base := []string{"--set", `task.command=["true"]`}
	for _, c := range []struct {
		field string
		args  []string
		env   []string
	}{
		{"worker.lease_ttl", append(base, "--set", "worker.lease_ttl=0s"), nil},
		{"worker.lease_ttl", append(base, "--set", "worker.lease_ttl=soon"), nil},
		{"worker.refresh_interval", append(base, "--set", "worker.lease_ttl=10s", "--set", "worker.refresh_interval=6s"), nil},
		{"worker.concurrency", append(base, "--concurrency", "0"), nil},
		{"task.command", []string{"--set", "task.command=[]"}, nil},
		{"mode", append(base, "--mode", "sometimes"), nil},
		{"log.level", append(base, "--log-level", "loud"), nil},
		{"log.format", append(base, "--set", "log.format=xml"), nil},
		{"admin.listen", append(base, "--admin-listen", "no-port"), nil},
		{"worker.max_attempts", append(base, "--set", "worker.max_attempts=0"), nil},
		{"batch.id", append(base, "--set", "batch.id="), nil},
		{"worker.concurency", []string{"-c", typo}, nil},
		{"RUNNER_WORKER_CONCURENCY", base, []string{"RUNNER_WORKER_CONCURENCY=4"}},
		{"worker.lease_ttl", base, []string{"RUNNER_WORKER_LEASE_TTL=-1s"}},
	} {
		t.Run(c.field, func(t *testing.T) {
			parallel(t)
			res := runnerCmd(t, procOpts{env: c.env, within: 20 * time.Second}, append([]string{"run"}, c.args...)...)
			if res.code != 2 {
				t.Fatalf("exit %d, want 2; output:\n%s", res.code, res.out)
			}
			if lines := lines(res.out); len(lines) != 1 || !strings.Contains(lines[0], c.field) {
				t.Fatalf("want one line naming %s, got:\n%s", c.field, res.out)
			}
		})
	}
	// Usage errors exit 2 too.
	for _, args := range [][]string{{}, {"launch"}, {"pool"}, {"pool", "frobnicate"}, {"run", "--no-such-flag"}} {
		if res := runnerCmd(t, procOpts{within: 20 * time.Second}, args...); res.code != 2 {
			t.Fatalf("runner %q exited %d, want 2:\n%s", args, res.code, res.out)
		}
	}
}
