package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestE2EAdminEndpointAndSecrets runs a runner that authenticates as an ACL
// user with a password and serves its admin endpoint, then checks
// /healthz, /status and /metrics, and that the password appears nowhere:
// not in the logs, /status or /metrics.
func TestE2EAdminEndpointAndSecrets(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	ctx := context.Background()
	const password = "s3cret-Pw-9d1f"
	user := "runner-" + strings.NewReplacer(":", "-", "|", "-").Replace(e.prefix)
	if err := e.client.Do(ctx, "ACL", "SETUSER", user, "on", ">"+password, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.client.Do(context.Background(), "ACL", "DELUSER", user) })
	cfg := filepath.Join(e.dir, "admin.yaml")
	body := fmt.Sprintf(`redis:
  addr: %q
  username: %q
  password: %q
pool:
  prefix: %q
  items: [a, b, c]
worker:
  concurrency: 2
task:
  command: ["sleep", "0.05"]
admin:
  listen: 127.0.0.1:0
log:
  level: debug
`, e.addr, user, password, e.prefix)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRunner(t, "runner", nil, "run", "-c", cfg)
	addrRE := regexp.MustCompile(`admin endpoint listening: addr=(\S+)`)
	var base string
	waitFor(t, "admin endpoint address logged", 20*time.Second, func() bool {
		m := addrRE.FindStringSubmatch(r.out.String())
		if m != nil {
			base = "http://" + m[1]
		}
		return m != nil
	})
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor(t, "/healthz ready", 10*time.Second, func() bool { code, _ := get("/healthz"); return code == 200 })
	var metrics string
	waitFor(t, "successful runs in /metrics", 20*time.Second, func() bool {
		_, metrics = get("/metrics")
		return regexp.MustCompile(`lockpool_task_runs_total\{outcome="success"\} [1-9]`).MatchString(metrics)
	})
	for _, name := range []string{"lockpool_leases_held", `lockpool_acquires_total{result="ok"}`, "lockpool_refreshes_total", "lockpool_leases_lost_total", "lockpool_task_duration_seconds_bucket"} {
		if !strings.Contains(metrics, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	code, status := get("/status")
	var st struct {
		Backend string `json:"backend"`
		Workers []struct {
			ID    int    `json:"id"`
			State string `json:"state"`
		} `json:"workers"`
	}
	if err := json.Unmarshal([]byte(status), &st); code != 200 || err != nil || st.Backend != "redis" || len(st.Workers) != 2 {
		t.Fatalf("/status = %d %s (%v)", code, status, err)
	}
	r.signal(syscall.SIGTERM)
	if code := r.wait(10 * time.Second); code != 0 {
		t.Fatalf("runner exited %d", code)
	}
	for what, text := range map[string]string{"logs": r.out.String(), "/status": status, "/metrics": metrics} {
		if strings.Contains(text, password) {
			t.Errorf("the Redis password appears in %s", what)
		}
	}
}
