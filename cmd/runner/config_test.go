package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockpool/lockpool/pkg/worker"
)

// configTestSecret is the password every test sets; it must never show.
const configTestSecret = "hunter2-Sekr3t"

// configTestCommand makes the smallest valid environment: only
// task.command has no default.
const configTestCommand = `RUNNER_TASK_COMMAND=["true"]`

// checkConfigError asserts err is a one-line *ConfigError matching
// ErrConfig, about field, that does not hold the test secret.
func checkConfigError(t *testing.T, err error, field string) *ConfigError {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("want a *ConfigError about %q, got %T %v", field, err, err)
	}
	if !errors.Is(err, ErrConfig) {
		t.Errorf("errors.Is(%v, ErrConfig) = false, want true", err)
	}
	if ce.Field != field {
		t.Errorf("Field = %q, want %q (error: %v)", ce.Field, field, err)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\n\r") {
		t.Errorf("error is not one line: %q", msg)
	}
	if want := "config: " + field + ": "; field != "" && !strings.HasPrefix(msg, want) {
		t.Errorf("error %q does not start with %q", msg, want)
	}
	if strings.Contains(msg, configTestSecret) {
		t.Errorf("error shows the password: %q", msg)
	}
	return ce
}

func TestConfigDefaults(t *testing.T) {
	parallel(t)
	c, err := loadConfig("", []string{configTestCommand}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Redis: RedisConfig{DialTimeout: 5 * time.Second, ReplicaAckTimeout: time.Second},
		Pool:  PoolConfig{Prefix: "lockpool", Name: "lock-pool"},
		Worker: worker.Config{
			Concurrency:     4,
			LeaseTTL:        30 * time.Second,
			RefreshInterval: 10 * time.Second,
			SafetyMargin:    6 * time.Second,
			MaxAttempts:     3,
			Backoff:         time.Second,
			MaxBackoff:      time.Minute,
			Quarantine:      10 * time.Minute,
			ShutdownGrace:   30 * time.Second,
			Heartbeat:       5 * time.Second,
			HistoryRetain:   7 * 24 * time.Hour,
		},
		Task:  TaskConfig{Command: []string{"true"}, KillGrace: 3 * time.Second},
		Mode:  "loop",
		Batch: BatchConfig{ID: "default", Retain: 24 * time.Hour, ProgressInterval: 10 * time.Second},
		Log:   LogConfig{Level: "info", Format: "text", TaskStdout: "info", TaskStderr: "warn"},
		Admin: AdminConfig{PoolMetricsInterval: 15 * time.Second},
		UI:    UIConfig{Listen: "127.0.0.1:8080"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestConfigDerivedDefaultsFollowLeaseTTL(t *testing.T) {
	parallel(t)
	c, err := loadConfig("", []string{configTestCommand, "RUNNER_WORKER_LEASE_TTL=9s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Worker.RefreshInterval != 3*time.Second || c.Worker.SafetyMargin != 1800*time.Millisecond {
		t.Errorf("refresh_interval, safety_margin = %v, %v; want 3s, 1.8s (lease_ttl/3, lease_ttl/5)", c.Worker.RefreshInterval, c.Worker.SafetyMargin)
	}
}

const configTestKeyPEM = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"

// configTestTLSFiles writes readable CA, certificate and key files.
func configTestTLSFiles(t *testing.T) (dir, ca, cert, key string) {
	dir = t.TempDir()
	return dir, writeFile(t, dir, "ca.pem", "ca"),
		writeFile(t, dir, "cert.pem", "cert"),
		writeFile(t, dir, "key.pem", configTestKeyPEM)
}

func TestConfigFileFormatsAgree(t *testing.T) {
	parallel(t)
	dir, ca, cert, key := configTestTLSFiles(t)
	docs := map[string]string{
		"c.yaml": `# every key but redis.addr (exclusive with sentinel)
redis:
  username: runner
  password: "SECRET"
  db: 2
  dial_timeout: 2s
  tls:
    enabled: true
    ca_file: CA
    cert_file: CERT
    key_file: KEY
    server_name: redis.internal
  sentinel:
    master: mymaster
    addrs: ["h1:26379", "h2:26379"]
    password: "SECRET"
  allow_eviction: true
  min_replicas_acked: 1
  replica_ack_timeout: 250ms
pool:
  prefix: acme
  name: keys
  items: [a, b, "c d"]
worker:
  concurrency: 8
  lease_ttl: 1m
  refresh_interval: 10s
  safety_margin: 15s
  cooldown: 1m30s
  max_attempts: 5
  backoff: 2s
  max_backoff: 2m
  quarantine: 1h
  shutdown_grace: 45s
  id: host-a
task:
  command: [sh, -c, 'echo "$RUNNER_ITEM"']
  env: [PATH=/usr/bin, "Api_Token=x=y"]
  dir: /tmp
  timeout: 5m
  kill_grace: 7s
mode: batch
batch:
  id: nightly
  retain: 48h
  progress_interval: 5s
log:
  level: debug
  format: json
admin:
  listen: "127.0.0.1:9090"
`,
		"c.toml": `mode = "batch"
[redis]
username = "runner"
password = "SECRET"
db = 2
dial_timeout = "2s"
allow_eviction = true
min_replicas_acked = 1
replica_ack_timeout = "250ms"
[redis.tls]
enabled = true
ca_file = "CA"
cert_file = "CERT"
key_file = "KEY"
server_name = "redis.internal"
[redis.sentinel]
master = "mymaster"
addrs = ["h1:26379", "h2:26379"]
password = "SECRET"
[pool]
prefix = "acme"
name = "keys"
items = ["a", "b", "c d"]
[worker]
concurrency = 8
lease_ttl = "1m"
refresh_interval = "10s"
safety_margin = "15s"
cooldown = "1m30s"
max_attempts = 5
backoff = "2s"
max_backoff = "2m"
quarantine = "1h"
shutdown_grace = "45s"
id = "host-a"
[task]
command = ["sh", "-c", 'echo "$RUNNER_ITEM"']
env = ["PATH=/usr/bin", "Api_Token=x=y"]
dir = "/tmp"
timeout = "5m"
kill_grace = "7s"
[batch]
id = "nightly"
retain = "48h"
progress_interval = "5s"
[log]
level = "debug"
format = "json"
[admin]
listen = "127.0.0.1:9090"
`,
		"c.json": `{
  "redis": {"username": "runner", "password": "SECRET", "db": 2, "dial_timeout": "2s",
    "allow_eviction": true, "min_replicas_acked": 1, "replica_ack_timeout": "250ms",
    "tls": {"enabled": true, "ca_file": "CA", "cert_file": "CERT", "key_file": "KEY", "server_name": "redis.internal"},
    "sentinel": {"master": "mymaster", "addrs": ["h1:26379", "h2:26379"], "password": "SECRET"}},
  "pool": {"prefix": "acme", "name": "keys", "items": ["a", "b", "c d"]},
  "worker": {"concurrency": 8, "lease_ttl": "1m", "refresh_interval": "10s", "safety_margin": "15s",
    "cooldown": "1m30s", "max_attempts": 5, "backoff": "2s", "max_backoff": "2m", "quarantine": "1h",
    "shutdown_grace": "45s", "id": "host-a"},
  "task": {"command": ["sh", "-c", "echo \"$RUNNER_ITEM\""], "env": ["PATH=/usr/bin", "Api_Token=x=y"],
    "dir": "/tmp", "timeout": "5m", "kill_grace": "7s"},
  "mode": "batch",
  "batch": {"id": "nightly", "retain": "48h", "progress_interval": "5s"},
  "log": {"level": "debug", "format": "json"},
  "admin": {"listen": "127.0.0.1:9090"}
}`,
	}
	want := &Config{
		Redis: RedisConfig{
			Username: "runner", Password: configTestSecret, DB: 2, DialTimeout: 2 * time.Second,
			TLS:           RedisTLSConfig{Enabled: true, CAFile: ca, CertFile: cert, KeyFile: key, ServerName: "redis.internal"},
			Sentinel:      RedisSentinelConfig{Master: "mymaster", Addrs: []string{"h1:26379", "h2:26379"}, Password: configTestSecret},
			AllowEviction: true, MinReplicasAcked: 1, ReplicaAckTimeout: 250 * time.Millisecond,
		},
		Pool: PoolConfig{Prefix: "acme", Name: "keys", Items: []string{"a", "b", "c d"}},
		Worker: worker.Config{
			Concurrency: 8, LeaseTTL: time.Minute, RefreshInterval: 10 * time.Second, SafetyMargin: 15 * time.Second,
			Cooldown: 90 * time.Second, MaxAttempts: 5, Backoff: 2 * time.Second, MaxBackoff: 2 * time.Minute,
			Quarantine: time.Hour, ShutdownGrace: 45 * time.Second, ID: "host-a",
			Heartbeat: 5 * time.Second, HistoryRetain: 7 * 24 * time.Hour,
		},
		Task: TaskConfig{
			Command: []string{"sh", "-c", `echo "$RUNNER_ITEM"`},
			Env:     []string{"PATH=/usr/bin", "Api_Token=x=y"},
			Dir:     "/tmp", Timeout: 5 * time.Minute, KillGrace: 7 * time.Second,
		},
		Mode:  "batch",
		Batch: BatchConfig{ID: "nightly", Retain: 48 * time.Hour, ProgressInterval: 5 * time.Second},
		Log:   LogConfig{Level: "debug", Format: "json", TaskStdout: "info", TaskStderr: "warn"},
		Admin: AdminConfig{Listen: "127.0.0.1:9090", PoolMetricsInterval: 15 * time.Second},
		UI:    UIConfig{Listen: "127.0.0.1:8080"},
	}
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			doc = strings.NewReplacer("SECRET", configTestSecret, "CA", ca, "CERT", cert, "KEY", key).Replace(doc)
			c, err := loadConfig(writeFile(t, dir, name, doc), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("%s:\n got %#v\nwant %#v", name, c, want)
				t.Logf("got:  %+v", c.Redacted())
				t.Logf("want: %+v", want.Redacted())
			}
		})
	}
}

// configTestEveryKey is a valid raw value, as in the environment, for
// every key but redis.addr and redis.cluster.addrs (exclusive with
// redis.sentinel), with the typed value it must give.
func configTestEveryKey(t *testing.T) (raw map[string]string, want map[string]any) {
	_, ca, cert, key := configTestTLSFiles(t)
	type kv struct {
		raw  string
		want any
	}
	all := map[string]kv{
		"redis.username":              {"runner", "runner"},
		"redis.password":              {configTestSecret, configSecret(configTestSecret)},
		"admin.token":                 {configTestSecret, configSecret(configTestSecret)},
		"redis.db":                    {"7", 7},
		"redis.dial_timeout":          {"750ms", 750 * time.Millisecond},
		"redis.tls.enabled":           {"true", true},
		"redis.tls.ca_file":           {ca, ca},
		"redis.tls.cert_file":         {cert, cert},
		"redis.tls.key_file":          {key, key},
		"redis.tls.server_name":       {"redis.example", "redis.example"},
		"redis.sentinel.master":       {"mymaster", "mymaster"},
		"redis.sentinel.addrs":        {"h1:26379, h2:26379", []string{"h1:26379", "h2:26379"}},
		"redis.sentinel.password":     {configTestSecret + "2", configSecret(configTestSecret + "2")},
		"redis.allow_eviction":        {"true", true},
		"redis.min_replicas_acked":    {"2", 2},
		"redis.replica_ack_timeout":   {"300ms", 300 * time.Millisecond},
		"pool.prefix":                 {"acme", "acme"},
		"pool.name":                   {"keys", "keys"},
		"pool.items":                  {"a,b,c", []string{"a", "b", "c"}},
		"worker.concurrency":          {"16", 16},
		"worker.lease_ttl":            {"1m", time.Minute},
		"worker.refresh_interval":     {"15s", 15 * time.Second},
		"worker.safety_margin":        {"20s", 20 * time.Second},
		"worker.cooldown":             {"1m30s", 90 * time.Second},
		"worker.max_attempts":         {"9", 9},
		"worker.backoff":              {"100ms", 100 * time.Millisecond},
		"worker.max_backoff":          {"5s", 5 * time.Second},
		"worker.quarantine":           {"2h", 2 * time.Hour},
		"worker.shutdown_grace":       {"1s", time.Second},
		"worker.heartbeat":            {"2s", 2 * time.Second},
		"worker.history_retain":       {"24h", 24 * time.Hour},
		"worker.id":                   {"host-b:1", "host-b:1"},
		"task.command":                {`["sh","-c","echo hi"]`, []string{"sh", "-c", "echo hi"}},
		"task.env":                    {`["LANG=C","Mixed_Case=1"]`, []string{"LANG=C", "Mixed_Case=1"}},
		"task.dir":                    {"/srv", "/srv"},
		"task.timeout":                {"10m", 10 * time.Minute},
		"task.kill_grace":             {"2s", 2 * time.Second},
		"mode":                        {"batch", "batch"},
		"batch.id":                    {"run-7", "run-7"},
		"batch.retain":                {"1h", time.Hour},
		"batch.progress_interval":     {"1s", time.Second},
		"log.level":                   {"trace", "trace"},
		"log.format":                  {"json", "json"},
		"log.task_stdout":             {"debug", "debug"},
		"log.task_stderr":             {"off", "off"},
		"admin.listen":                {":0", ":0"},
		"admin.pool_metrics":          {"true", true},
		"admin.pool_metrics_interval": {"30s", 30 * time.Second},
		"admin.ui":                    {"true", true},
		"ui.listen":                   {"127.0.0.1:0", "127.0.0.1:0"},
		"ui.token":                    {"s3cret", configSecret("s3cret")},
	}
	if len(all)+2 != len(configKeys) {
		t.Fatalf("configTestEveryKey covers %d keys, want all %d but redis.addr and redis.cluster.addrs", len(all), len(configKeys)-2)
	}
	raw, want = map[string]string{}, map[string]any{}
	for k, v := range all {
		raw[k], want[k] = v.raw, v.want
	}
	return raw, want
}

// TestConfigEveryKeyFromEnvAndFlags sets every key through its
// environment variable, then through --set, and checks each field.
func TestConfigEveryKeyFromEnvAndFlags(t *testing.T) {
	parallel(t)
	raw, want := configTestEveryKey(t)
	var environ []string
	for _, k := range configKeys {
		if v, ok := raw[k.name]; ok {
			environ = append(environ, k.env()+"="+v)
		}
	}
	fromEnv, err := loadConfig("", environ, nil)
	if err != nil {
		t.Fatal(err)
	}
	fromFlags, err := loadConfig("", nil, raw)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromEnv, fromFlags) {
		t.Errorf("env and --set disagree:\n env %+v\n set %+v", fromEnv.Redacted(), fromFlags.Redacted())
	}
	for _, k := range configKeys {
		w, ok := want[k.name]
		if !ok {
			continue
		}
		if got := reflect.ValueOf(k.field(fromEnv)).Elem().Interface(); !reflect.DeepEqual(got, w) {
			t.Errorf("%s (from %s): got %#v, want %#v", k.name, k.env(), got, w)
		}
	}

	c, err := loadConfig("", []string{configTestCommand, "RUNNER_REDIS_ADDR=redis.internal:6379"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.Addr != "redis.internal:6379" {
		t.Errorf("redis.addr = %q, want redis.internal:6379", c.Redis.Addr)
	}
}

func TestConfigEnvNames(t *testing.T) {
	parallel(t)
	want := map[string]string{
		"redis.addr":              "RUNNER_REDIS_ADDR",
		"redis.tls.ca_file":       "RUNNER_REDIS_TLS_CA_FILE",
		"redis.sentinel.addrs":    "RUNNER_REDIS_SENTINEL_ADDRS",
		"worker.lease_ttl":        "RUNNER_WORKER_LEASE_TTL",
		"batch.progress_interval": "RUNNER_BATCH_PROGRESS_INTERVAL",
		"mode":                    "RUNNER_MODE",
	}
	for key, env := range want {
		if got := configKeyByName[key].env(); got != env {
			t.Errorf("%s: env %s, want %s", key, got, env)
		}
	}
	if len(configKeyByEnv) != len(configKeys) || len(configKeyByName) != len(configKeys) {
		t.Errorf("%d keys give %d names and %d variables; want them distinct", len(configKeys), len(configKeyByName), len(configKeyByEnv))
	}
}

func TestConfigPrecedence(t *testing.T) {
	parallel(t)
	file := writeFile(t, "", "c.yaml", `
redis:
  addr: "file:1"
pool:
  items: [from-file]
worker:
  concurrency: 2
  lease_ttl: 12s
task:
  command: [from-file]
  env: [A=file, B=file]
`)
	env := []string{
		"RUNNER_REDIS_ADDR=env:1",
		"RUNNER_WORKER_CONCURRENCY=3",
		`RUNNER_TASK_ENV=["A=env"]`,
		"RUNNER_MODE=batch",
	}
	c, err := loadConfig(file, env, map[string]string{"worker.concurrency": "5", "mode": "loop"})
	if err != nil {
		t.Fatal(err)
	}
	for _, check := range []struct {
		what      string
		got, want any
	}{
		{"redis.addr (env beats file)", c.Redis.Addr, "env:1"},
		{"worker.concurrency (flag beats env and file)", c.Worker.Concurrency, 5},
		{"mode (flag beats env)", c.Mode, "loop"},
		{"worker.lease_ttl (file beats default)", c.Worker.LeaseTTL, 12 * time.Second},
		{"worker.refresh_interval (derived from the file's lease_ttl)", c.Worker.RefreshInterval, 4 * time.Second},
		{"pool.items (file)", c.Pool.Items, []string{"from-file"}},
		{"task.env (env replaces the whole list)", c.Task.Env, []string{"A=env"}},
		{"task.command (file)", c.Task.Command, []string{"from-file"}},
	} {
		if !reflect.DeepEqual(check.got, check.want) {
			t.Errorf("%s: got %#v, want %#v", check.what, check.got, check.want)
		}
	}
}

func TestConfigListsFromText(t *testing.T) {
	parallel(t)
	for _, tc := range []struct {
		raw  string
		want []string
	}{
		{"a,b,c", []string{"a", "b", "c"}},
		{" a , b ", []string{"a", "b"}},
		{"single", []string{"single"}},
		{`["x,1", "y"]`, []string{"x,1", "y"}},
		{"", []string{}},
	} {
		c, err := loadConfig("", []string{configTestCommand}, map[string]string{"pool.items": tc.raw})
		if err != nil {
			t.Errorf("pool.items=%q: %v", tc.raw, err)
			continue
		}
		if !reflect.DeepEqual(c.Pool.Items, tc.want) {
			t.Errorf("pool.items=%q: got %#v, want %#v", tc.raw, c.Pool.Items, tc.want)
		}
	}
}

func TestConfigDurations(t *testing.T) {
	parallel(t)
	for _, tc := range []struct {
		raw  string
		want time.Duration
		err  string // part of the message; "" for success
	}{
		{"30s", 30 * time.Second, ""},
		{"1m30s", 90 * time.Second, ""},
		{"1.5h", 90 * time.Minute, ""},
		{" 250ms ", 250 * time.Millisecond, ""},
		{"0", 0, ""},
		{"0s", 0, ""},
		{"30", 0, `bare number "30" has no unit`},
		{"1.5", 0, `bare number "1.5" has no unit`},
		{"-1s", 0, `must not be negative, got "-1s"`},
		{"soon", 0, `"soon" is not a Go duration`},
		{"", 0, `"" is not a Go duration`},
	} {
		c, err := loadConfig("", []string{configTestCommand}, map[string]string{"worker.cooldown": tc.raw})
		if tc.err == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.raw, err)
			} else if c.Worker.Cooldown != tc.want {
				t.Errorf("%q: got %v, want %v", tc.raw, c.Worker.Cooldown, tc.want)
			}
			continue
		}
		ce := checkConfigError(t, err, "worker.cooldown")
		if ce != nil && !strings.Contains(ce.Msg, tc.err) {
			t.Errorf("%q: message %q does not say %q", tc.raw, ce.Msg, tc.err)
		}
	}

	// In a file, numbers are bare too; only 0 needs no unit.
	for doc, wantErr := range map[string]string{
		"worker: {cooldown: 30}":   "bare number 30 has no unit",
		"worker: {cooldown: 1.5}":  "bare number 1.5 has no unit",
		"worker: {cooldown: 0}":    "",
		`worker: {cooldown: "2s"}`: "",
		"worker: {cooldown: true}": "want a Go duration string",
	} {
		path := writeFile(t, "", "c.yaml", doc)
		_, err := loadConfig(path, []string{configTestCommand}, nil)
		if wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", doc, err)
			}
			continue
		}
		if ce := checkConfigError(t, err, "worker.cooldown"); ce != nil && !strings.Contains(ce.Msg, wantErr) {
			t.Errorf("%s: message %q does not say %q", doc, ce.Msg, wantErr)
		}
	}
}

func TestConfigInvalid(t *testing.T) {
	t.Parallel()
	dir, ca, cert, key := configTestTLSFiles(t)
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name  string
		env   []string          // added to a valid environment
		set   map[string]string // --set
		file  string            // YAML, when set
		field string
		msg   string // the whole message, when set
	}{
		{name: "cluster with addr", set: map[string]string{"redis.addr": "h:1", "redis.cluster.addrs": "h:2"}, field: "redis.cluster.addrs"},
		{name: "cluster with db", set: map[string]string{"redis.cluster.addrs": "h:1,h:2", "redis.db": "3"}, field: "redis.db"},
		{name: "cluster bad addr", set: map[string]string{"redis.cluster.addrs": "h:1,nohost"}, field: "redis.cluster.addrs"},
		{name: "min_replicas_acked negative", set: map[string]string{"redis.min_replicas_acked": "-1"}, field: "redis.min_replicas_acked"},
		{name: "replica_ack_timeout zero", set: map[string]string{"redis.replica_ack_timeout": "0s"}, field: "redis.replica_ack_timeout"},
		{name: "allow_eviction word", env: []string{"RUNNER_REDIS_ALLOW_EVICTION=maybe"}, field: "redis.allow_eviction"},
		{name: "lease_ttl zero", env: []string{"RUNNER_WORKER_LEASE_TTL=0s"}, field: "worker.lease_ttl", msg: `config: worker.lease_ttl: must be > 0, got "0s"`},
		{name: "lease_ttl tiny", set: map[string]string{"worker.lease_ttl": "5ms"}, field: "worker.lease_ttl"},
		{name: "lease_ttl bare", env: []string{"RUNNER_WORKER_LEASE_TTL=30"}, field: "worker.lease_ttl", msg: `config: worker.lease_ttl: bare number "30" has no unit; write a Go duration such as "30s" or "1m30s" (from RUNNER_WORKER_LEASE_TTL)`},
		{name: "refresh zero", set: map[string]string{"worker.refresh_interval": "0s"}, field: "worker.refresh_interval"},
		{name: "refresh above half", set: map[string]string{"worker.refresh_interval": "16s"}, field: "worker.refresh_interval"},
		{name: "safety zero", set: map[string]string{"worker.safety_margin": "0s"}, field: "worker.safety_margin"},
		{name: "safety too big", set: map[string]string{"worker.safety_margin": "20s"}, field: "worker.safety_margin"},
		{name: "concurrency zero", set: map[string]string{"worker.concurrency": "0"}, field: "worker.concurrency"},
		{name: "concurrency huge", set: map[string]string{"worker.concurrency": "10001"}, field: "worker.concurrency"},
		{name: "concurrency word", env: []string{"RUNNER_WORKER_CONCURRENCY=four"}, field: "worker.concurrency"},
		{name: "max_attempts zero", set: map[string]string{"worker.max_attempts": "0"}, field: "worker.max_attempts"},
		{name: "backoff zero", set: map[string]string{"worker.backoff": "0s"}, field: "worker.backoff"},
		{name: "max_backoff below backoff", set: map[string]string{"worker.backoff": "2s", "worker.max_backoff": "1s"}, field: "worker.max_backoff"},
		{name: "quarantine zero", set: map[string]string{"worker.quarantine": "0s"}, field: "worker.quarantine"},
		{name: "shutdown_grace zero", set: map[string]string{"worker.shutdown_grace": "0s"}, field: "worker.shutdown_grace"},
		{name: "cooldown negative", set: map[string]string{"worker.cooldown": "-1s"}, field: "worker.cooldown"},
		{name: "task timeout negative", set: map[string]string{"task.timeout": "-5m"}, field: "task.timeout"},
		{name: "kill_grace garbage", set: map[string]string{"task.kill_grace": "ten"}, field: "task.kill_grace"},
		{name: "kill_grace zero", set: map[string]string{"task.kill_grace": "0s"}, field: "task.kill_grace"},
		{name: "kill_grace not below the safety margin", set: map[string]string{"worker.lease_ttl": "10s", "task.kill_grace": "2s"}, field: "task.kill_grace"},
		{name: "worker id newline", set: map[string]string{"worker.id": "a\nb"}, field: "worker.id"},
		{name: "worker id long", set: map[string]string{"worker.id": strings.Repeat("w", 1001)}, field: "worker.id"},
		{name: "command missing", set: map[string]string{"task.command": "[]"}, field: "task.command"},
		{name: "command empty program", set: map[string]string{"task.command": `["", "x"]`}, field: "task.command"},
		{name: "command NUL", set: map[string]string{"task.command": `["sh", "a\u0000b"]`}, field: "task.command"},
		{name: "command not JSON", env: []string{"RUNNER_TASK_COMMAND=sh -c true"}, field: "task.command"},
		// The table form of task.env is refused (viper lowercases table
		// keys): the old table cases now get that error; their list
		// equivalents follow.
		{name: "env key with =", set: map[string]string{"task.env": `{"A=B":"x"}`}, field: "task.env"},
		{name: "env list name empty", set: map[string]string{"task.env": `["=x"]`}, field: "task.env"},
		{name: "env list no =", set: map[string]string{"task.env": `["A"]`}, field: "task.env"},
		{name: "env list name NUL", set: map[string]string{"task.env": `["A\u0000=x"]`}, field: "task.env"},
		{name: "env list value NUL", set: map[string]string{"task.env": `["A=x\u0000"]`}, field: "task.env"},
		{name: "env list not strings", set: map[string]string{"task.env": `["A=1", 2]`}, field: "task.env"},
		{name: "file env table form", file: "task: {env: {PATH: /bin}}", field: "task.env", msg: `config: task.env: want a list of strings, got a table (task.env is a list of "NAME=value" strings since the runner reads its config with viper, which lowercases table keys: write ["NAME=value"])`},
		{name: "env key empty", set: map[string]string{"task.env": `{"":"x"}`}, field: "task.env"},
		{name: "env key NUL", set: map[string]string{"task.env": `{"A\u0000":"x"}`}, field: "task.env"},
		{name: "env value NUL", set: map[string]string{"task.env": `{"A":"x\u0000"}`}, field: "task.env"},
		{name: "env not JSON", env: []string{"RUNNER_TASK_ENV=A=b"}, field: "task.env"},
		{name: "env not strings", set: map[string]string{"task.env": `{"A":1}`}, field: "task.env"},
		{name: "task dir NUL", set: map[string]string{"task.dir": "/a\x00"}, field: "task.dir"},
		{name: "mode", env: []string{"RUNNER_MODE=forever"}, field: "mode", msg: `config: mode: must be "loop" or "batch", got "forever"`},
		{name: "log level", set: map[string]string{"log.level": "verbose"}, field: "log.level"},
		{name: "log level upper", set: map[string]string{"log.level": "INFO"}, field: "log.level"},
		{name: "log format", set: map[string]string{"log.format": "xml"}, field: "log.format"},
		{name: "redis db negative", set: map[string]string{"redis.db": "-1"}, field: "redis.db"},
		{name: "redis db word", set: map[string]string{"redis.db": "zero"}, field: "redis.db"},
		{name: "redis addr no port", set: map[string]string{"redis.addr": "localhost"}, field: "redis.addr"},
		{name: "redis addr with password", set: map[string]string{"redis.addr": "redis://:" + configTestSecret + "@h:6379"}, field: "redis.addr"},
		{name: "redis addr and sentinel", set: map[string]string{"redis.addr": "h:6379", "redis.sentinel.master": "m", "redis.sentinel.addrs": "s:26379"}, field: "redis.addr"},
		{name: "dial_timeout zero", set: map[string]string{"redis.dial_timeout": "0s"}, field: "redis.dial_timeout"},
		{name: "tls enabled word", set: map[string]string{"redis.tls.enabled": "yes please"}, field: "redis.tls.enabled"},
		{name: "tls ca without enabled", set: map[string]string{"redis.tls.ca_file": ca}, field: "redis.tls.ca_file"},
		{name: "tls server_name without enabled", set: map[string]string{"redis.tls.server_name": "h"}, field: "redis.tls.server_name"},
		{name: "tls ca missing", set: map[string]string{"redis.tls.enabled": "true", "redis.tls.ca_file": missing}, field: "redis.tls.ca_file"},
		{name: "tls ca is a directory", set: map[string]string{"redis.tls.enabled": "true", "redis.tls.ca_file": dir}, field: "redis.tls.ca_file"},
		{name: "tls cert missing", set: map[string]string{"redis.tls.enabled": "true", "redis.tls.cert_file": missing, "redis.tls.key_file": key}, field: "redis.tls.cert_file"},
		{name: "tls key missing", set: map[string]string{"redis.tls.enabled": "true", "redis.tls.cert_file": cert, "redis.tls.key_file": missing}, field: "redis.tls.key_file"},
		{name: "tls cert without key", set: map[string]string{"redis.tls.enabled": "true", "redis.tls.cert_file": cert}, field: "redis.tls.key_file"},
		{name: "tls key without cert", set: map[string]string{"redis.tls.enabled": "true", "redis.tls.key_file": key}, field: "redis.tls.cert_file"},
		{name: "sentinel master alone", set: map[string]string{"redis.sentinel.master": "m"}, field: "redis.sentinel.addrs"},
		{name: "sentinel addrs alone", env: []string{"RUNNER_REDIS_SENTINEL_ADDRS=h1:26379,h2:26379"}, field: "redis.sentinel.master"},
		{name: "sentinel addr bad", set: map[string]string{"redis.sentinel.master": "m", "redis.sentinel.addrs": "h1:26379,h2"}, field: "redis.sentinel.addrs"},
		{name: "admin listen no port", set: map[string]string{"admin.listen": "localhost"}, field: "admin.listen"},
		{name: "admin listen bad port", set: map[string]string{"admin.listen": "127.0.0.1:http"}, field: "admin.listen"},
		{name: "admin ui without admin listen", set: map[string]string{"redis.addr": "h:6379", "admin.ui": "true"}, field: "admin.ui",
			msg: "config: admin.ui: needs admin.listen: the dashboard is served there"},
		{name: "admin ui on the embedded pool", set: map[string]string{"admin.listen": "127.0.0.1:0", "admin.ui": "true"}, field: "admin.ui"},
		{name: "ui listen no port", set: map[string]string{"ui.listen": "localhost"}, field: "ui.listen"},
		{name: "batch id empty", set: map[string]string{"batch.id": ""}, field: "batch.id"},
		{name: "batch id long", set: map[string]string{"batch.id": strings.Repeat("b", 201)}, field: "batch.id"},
		{name: "batch id newline", env: []string{"RUNNER_BATCH_ID=a\nb"}, field: "batch.id"},
		{name: "batch retain zero", set: map[string]string{"batch.retain": "0s"}, field: "batch.retain"},
		{name: "progress zero", set: map[string]string{"batch.progress_interval": "0"}, field: "batch.progress_interval"},
		{name: "prefix empty", set: map[string]string{"pool.prefix": ""}, field: "pool.prefix"},
		{name: "prefix NUL", set: map[string]string{"pool.prefix": "a\x00"}, field: "pool.prefix"},
		{name: "pool name empty", set: map[string]string{"pool.name": ""}, field: "pool.name"},
		{name: "prefix and name too long", set: map[string]string{"pool.prefix": strings.Repeat("p", 600), "pool.name": strings.Repeat("n", 600)}, field: "pool.name"},
		{name: "item empty", env: []string{"RUNNER_POOL_ITEMS=a,,b"}, field: "pool.items"},
		{name: "item long", set: map[string]string{"pool.items": strings.Repeat("i", 1025)}, field: "pool.items"},
		{name: "item NUL", set: map[string]string{"pool.items": `["a\u0000"]`}, field: "pool.items"},
		{name: "items bad JSON", set: map[string]string{"pool.items": `["a"`}, field: "pool.items"},
		// Values of the wrong type in a file.
		{name: "file password number", file: "redis: {password: 1234567}", field: "redis.password"},
		{name: "file item number", file: "pool: {items: [a, 1]}", field: "pool.items"},
		{name: "file items not a list", file: "pool: {items: a}", field: "pool.items"},
		{name: "file env value number", file: "task: {env: {A: 1}}", field: "task.env"},
		{name: "file env entry without =", file: "task: {env: [A]}", field: "task.env"},
		{name: "file concurrency word", file: "worker: {concurrency: four}", field: "worker.concurrency"},
		{name: "file concurrency fraction", file: "worker: {concurrency: 1.5}", field: "worker.concurrency"},
		{name: "file tls enabled string", file: "redis: {tls: {enabled: maybe}}", field: "redis.tls.enabled"},
		{name: "file tls enabled number", file: "redis: {tls: {enabled: 1}}", field: "redis.tls.enabled"},
		{name: "file lease_ttl bare", file: "worker: {lease_ttl: 30}", field: "worker.lease_ttl"},
		{name: "file mode list", file: "mode: [loop]", field: "mode"},
		{name: "file mode date", file: "mode: 2024-01-01", field: "mode"},
		{name: "file section not a table", file: "worker: 5", field: "worker"},
		{name: "file subsection not a table", file: "redis: {tls: true}", field: "redis.tls"},
		{name: "file env keys not strings", file: "task: {env: {true: x}}", field: "task.env"},
		{name: "task stdout level", set: map[string]string{"log.task_stdout": "loud"}, field: "log.task_stdout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			file := ""
			if tc.file != "" {
				file = writeFile(t, "", "c.yaml", tc.file)
			}
			// The case's variables come first: the first of a name wins.
			env := append(slices.Clip(tc.env), configTestCommand, "RUNNER_REDIS_PASSWORD="+configTestSecret)
			c, err := loadConfig(file, env, tc.set)
			if err == nil {
				t.Fatalf("loaded %+v, want an error about %s", c.Redacted(), tc.field)
			}
			checkConfigError(t, err, tc.field)
			if tc.msg != "" && err.Error() != tc.msg {
				t.Errorf("error\n got %s\nwant %s", err, tc.msg)
			}
			if strings.Contains(err.Error(), "1234567") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

func TestConfigUnknownKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		file string
		env  []string
		set  map[string]string
		want string // the start of the error
	}{
		{name: "file key", file: "worker:\n  concurency: 3\n", want: `config: unknown key "worker.concurency" (did you mean "worker.concurrency"?)`},
		{name: "file nested key", file: "redis: {tls: {enable: true}}", want: `config: unknown key "redis.tls.enable"`},
		{name: "file top-level key", file: "modes: batch", want: `config: unknown key "modes"`},
		{name: "file section", file: "metrics: {listen: x}", want: `config: unknown key "metrics"`},
		{name: "file key case", file: "Worker: {concurrency: 3}", want: `config: unknown key "Worker"`},
		{name: "file key under a leaf", file: "admin: {listen: {port: 1}}", want: "config: admin.listen: want a string"},
		{name: "env", env: []string{"RUNNER_WORKER_CONCURENCY=3"}, want: "config: unknown environment variable RUNNER_WORKER_CONCURENCY (did you mean \"RUNNER_WORKER_CONCURRENCY\"?)"},
		{name: "env lease ttl spelt as one word", env: []string{"RUNNER_WORKER_LEASETTL=3s"}, want: "config: unknown environment variable RUNNER_WORKER_LEASETTL"},
		{name: "env nested", env: []string{"RUNNER_REDIS_TLS_CA=x"}, want: "config: unknown environment variable RUNNER_REDIS_TLS_CA"},
		{name: "env section only", env: []string{"RUNNER_LOG_="}, want: "config: unknown environment variable RUNNER_LOG_"},
		{name: "env empty value", env: []string{"RUNNER_ADMIN_LISTEN_ADDR="}, want: "config: unknown environment variable RUNNER_ADMIN_LISTEN_ADDR"},
		{name: "set", set: map[string]string{"worker.leasettl": "3s"}, want: `config: unknown key "worker.leasettl" in flags`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			file := ""
			if tc.file != "" {
				file = writeFile(t, "", "c.yaml", tc.file)
			}
			_, err := loadConfig(file, append([]string{configTestCommand}, tc.env...), tc.set)
			var ce *ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ErrConfig) {
				t.Fatalf("got %v, want a *ConfigError starting %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), tc.want) || strings.ContainsAny(err.Error(), "\n\r") {
				t.Errorf("error\n got %q\nwant one line starting %q", err, tc.want)
			}
		})
	}
}

func TestConfigIgnoresOtherEnv(t *testing.T) {
	parallel(t)
	env := []string{
		configTestCommand,
		"RUNNER_ITEM=k1", "RUNNER_TOKEN=1000001", "RUNNER_ATTEMPT=1", // set for tasks
		"RUNNER_WORKER=3", "RUNNER_MODEX=1", "RUNNER_CONFIG=x.yaml", "RUNNER_=1", "RUNNER",
		"runner_worker_concurrency=9", "RUNNER_Worker_Concurency=9", "OTHER_WORKER_CONCURRENCY=9",
		"RUNNER_WORKER_CONCURRENCY=",                                   // empty: unset
		"RUNNER_WORKER_MAX_ATTEMPTS=7", "RUNNER_WORKER_MAX_ATTEMPTS=8", // the first wins, as with os.Getenv
	}
	c, err := loadConfig("", env, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Worker.Concurrency != 4 || c.Worker.MaxAttempts != 7 {
		t.Errorf("concurrency, max_attempts = %d, %d; want 4 (default), 7", c.Worker.Concurrency, c.Worker.MaxAttempts)
	}
}

func TestConfigFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.yaml")
	for _, tc := range []struct {
		name, file, body, want string
	}{
		{"missing", missing, "", `config: reading "` + missing + `": no such file or directory`},
		{"directory", dir, "", `config: reading "` + dir + `": `},
		{"extension", "c.ini", "a=1", `config: reading "DIR/c.ini": unknown file type ".ini" (want .yaml, .yml, .toml or .json)`},
		{"yaml syntax", "bad.yaml", "worker: [1\n", `config: parsing "DIR/bad.yaml": yaml: line 1: `},
		{"yaml duplicate (a multi-line decoder error)", "dup.yml", "mode: loop\nmode: batch\n", `config: parsing "DIR/dup.yml": yaml: unmarshal errors: line 2: mapping key "mode" already defined at line 1`},
		{"yaml list", "list.yaml", "- a\n", `config: parsing "DIR/list.yaml": `},
		{"toml syntax", "bad.toml", "[worker]\nconcurrency = \n", `config: parsing "DIR/bad.toml": line 2 column `},
		{"json syntax", "bad.json", "{\n\"mode\": \"loop\",\n}", `config: parsing "DIR/bad.json": line 3: `},
		{"json trailing", "two.json", `{"mode": "loop"} {}`, `config: parsing "DIR/two.json": trailing data`},
		{"json array", "arr.json", `["mode"]`, `config: parsing "DIR/arr.json": want a table of keys at the top, got a list`},
		{"yaml scalar", "s.yaml", configTestSecret, `config: parsing "DIR/s.yaml": want a table of keys at the top, got a string`},
		{"yaml tag mismatch", "tag.yaml", "redis: {password: !!int " + configTestSecret + "}", `config: parsing "DIR/tag.yaml": yaml: `},
		{"yaml keys not strings", "k.yaml", "1: x\n", `config: parsing "DIR/k.yaml": want a table of keys at the top, got a table with keys that are not strings`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			file := tc.file
			if tc.body != "" {
				file = writeFile(t, dir, tc.file, tc.body)
			}
			_, err := loadConfig(file, []string{configTestCommand}, nil)
			checkConfigError(t, err, "")
			if want := strings.ReplaceAll(tc.want, "DIR", dir); err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error\n got %v\nwant it to start %s", err, want)
			}
		})
	}
}

func TestConfigEmptyFiles(t *testing.T) {
	parallel(t)
	for name, body := range map[string]string{"e.yaml": "", "e.yml": "# nothing\n", "e.toml": "", "e.json": "{}", "n.json": "null", "n.yaml": "redis:\nworker:\n  concurrency:\n"} {
		c, err := loadConfig(writeFile(t, "", name, body), []string{configTestCommand}, nil)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if c.Worker.Concurrency != 4 {
			t.Errorf("%s: concurrency %d, want the default 4", name, c.Worker.Concurrency)
		}
	}
}

func TestConfigSecretsNeverShown(t *testing.T) {
	parallel(t)
	env := []string{
		configTestCommand,
		"RUNNER_REDIS_PASSWORD=" + configTestSecret,
		"RUNNER_REDIS_SENTINEL_MASTER=m",
		"RUNNER_REDIS_SENTINEL_ADDRS=h:26379",
		"RUNNER_REDIS_SENTINEL_PASSWORD=" + configTestSecret,
		`RUNNER_TASK_ENV=["API_TOKEN=tok-123"]`,
	}
	c, err := loadConfig("", env, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.Password.Reveal() != configTestSecret || c.Redis.Sentinel.Password.Reveal() != configTestSecret {
		t.Fatal("Reveal does not return the passwords")
	}
	red := c.Redacted()
	if red["redis.password"] != "***" || red["redis.sentinel.password"] != "***" {
		t.Errorf("Redacted passwords = %v, %v; want ***", red["redis.password"], red["redis.sentinel.password"])
	}
	if !reflect.DeepEqual(red["task.env"], []string{"API_TOKEN=***"}) || strings.Contains(fmt.Sprint(red), "tok-123") {
		t.Errorf("Redacted task.env = %v, want values hidden", red["task.env"])
	}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for what, s := range map[string]string{
		"fmt.Sprint(c.Redacted())": fmt.Sprint(red),
		"%v of *Config":            fmt.Sprintf("%v", c),
		"%+v of Config":            fmt.Sprintf("%+v", *c),
		"%#v of Config":            fmt.Sprintf("%#v", *c),
		"%s and %q of the secret":  fmt.Sprintf("%s %q %x %d", c.Redis.Password, c.Redis.Password, c.Redis.Password, c.Redis.Password),
		"json.Marshal":             string(js),
	} {
		if strings.Contains(s, configTestSecret) || strings.Contains(s, fmt.Sprintf("%x", configTestSecret)) {
			t.Errorf("%s shows the password: %s", what, s)
		}
	}

	unset, err := loadConfig("", []string{configTestCommand}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := unset.Redacted()["redis.password"]; got != "" {
		t.Errorf("Redacted unset password = %q, want \"\"", got)
	}
}

func TestConfigRedacted(t *testing.T) {
	parallel(t)
	raw, _ := configTestEveryKey(t)
	c, err := loadConfig("", nil, raw)
	if err != nil {
		t.Fatal(err)
	}
	red := c.Redacted()
	if len(red) != len(configKeys) {
		t.Errorf("Redacted has %d keys, want %d", len(red), len(configKeys))
	}
	for key, want := range map[string]any{
		"worker.lease_ttl":     "1m0s",
		"worker.concurrency":   16,
		"redis.tls.enabled":    true,
		"redis.tls.key_file":   raw["redis.tls.key_file"],
		"redis.sentinel.addrs": []string{"h1:26379", "h2:26379"},
		"redis.password":       "***",
		"admin.token":          "***",
		"ui.token":             "***",
	} {
		if !reflect.DeepEqual(red[key], want) {
			t.Errorf("Redacted()[%q] = %#v, want %#v", key, red[key], want)
		}
	}
	if strings.Contains(fmt.Sprint(red), "PRIVATE KEY") {
		t.Error("Redacted shows the key file's contents")
	}
}

// TestConfigExample loads config/example.yaml, the `make run` demo, and
// runs its task once for an item whose name would be a shell command if it
// were pasted into the script.
func TestConfigExample(t *testing.T) {
	parallel(t)
	c, err := loadConfig("../../config/example.yaml", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.Addr != "" || c.Mode != "batch" || c.Batch.ID != "demo" || c.Worker.Concurrency != 4 ||
		c.Worker.LeaseTTL != 5*time.Second || c.Admin.Listen != "" || len(c.Pool.Items) != 20 {
		t.Errorf("example.yaml: got %+v; want the in-memory batch demo: 20 items, concurrency 4, lease_ttl 5s, no admin server", c.Redacted())
	}
	if n := len(slices.Compact(slices.Sorted(slices.Values(c.Pool.Items)))); n != len(c.Pool.Items) {
		t.Errorf("example.yaml: %d distinct items of %d", n, len(c.Pool.Items))
	}
	script := strings.Join(c.Task.Command, " ")
	for _, item := range c.Pool.Items {
		if strings.Contains(script, item) {
			t.Errorf("the command holds item %q; it must read $RUNNER_ITEM instead", item)
		}
	}
	if _, err := exec.LookPath(c.Task.Command[0]); err != nil {
		t.Skipf("cannot run the example's task: %v", err)
	}
	item := `$(echo pwned); key-01`
	cmd := exec.Command(c.Task.Command[0], c.Task.Command[1:]...)
	cmd.Env = append(os.Environ(), "RUNNER_ITEM="+item, "RUNNER_TOKEN=1000001", "RUNNER_ATTEMPT=1")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("example task: %v: %s", err, out)
	}
	if want := "working on " + item + " (token 1000001, attempt 1)\n"; string(out) != want {
		t.Errorf("example task printed %q, want %q", out, want)
	}
	// 20 items at concurrency 4 must finish in a few seconds.
	if took := time.Since(start); took > time.Second {
		t.Errorf("one example task took %v; the demo must finish in a few seconds", took)
	}
}

// TestConfigReadme checks config/README.md documents every key and its
// environment variable.
func TestConfigReadme(t *testing.T) {
	parallel(t)
	doc, err := os.ReadFile("../../config/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range configKeys {
		if !strings.Contains(string(doc), "`"+k.name+"`") || !strings.Contains(string(doc), "`"+k.env()+"`") {
			t.Errorf("config/README.md does not document `%s` and `%s`", k.name, k.env())
		}
	}
}

func TestConfigRunFlags(t *testing.T) {
	parallel(t)
	parse := func(args ...string) (*configFlags, []string, error) {
		cmd := &cobra.Command{Use: "run", RunE: func(*cobra.Command, []string) error { return nil }}
		cf := addConfigFlags(cmd, "redis-addr", "mode", "concurrency", "batch-id", "log-level", "admin-listen")
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.ParseFlags(args)
		return cf, cmd.Flags().Args(), err
	}
	cf, rest, err := parse(
		"-c", "cfg.yaml",
		"--set", "worker.concurrency=8",
		"--set", `task.env=["A=b=c"]`,
		"--set", "pool.items=",
		"--concurrency", "9", // later: wins
		"--mode=batch", "--redis-addr", "h:6379", "--batch-id", "b1",
		"--log-level", "debug", "--admin-listen", "127.0.0.1:0",
		"extra",
	)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"worker.concurrency": "9", "task.env": `["A=b=c"]`, "pool.items": "", "mode": "batch",
		"redis.addr": "h:6379", "batch.id": "b1", "log.level": "debug", "admin.listen": "127.0.0.1:0",
	}
	if cf.file != "cfg.yaml" || !maps.Equal(cf.overrides, want) || !slices.Equal(rest, []string{"extra"}) {
		t.Errorf("got config %q, overrides %v, args %v; want cfg.yaml, %v, [extra]", cf.file, cf.overrides, rest, want)
	}

	cf, _, err = parse("--config=other.toml", "--concurrency", "2", "--set", "worker.concurrency=3")
	if err != nil {
		t.Fatal(err)
	}
	if cf.file != "other.toml" || cf.overrides["worker.concurrency"] != "3" {
		t.Errorf("got config %q, concurrency %q; want other.toml, 3 (the last flag wins)", cf.file, cf.overrides["worker.concurrency"])
	}

	for _, args := range [][]string{
		{"--set", "worker.concurrency"},
		{"--set", "worker.concurency=3"},
		{"--bogus"},
		{"-c"},
	} {
		if _, _, err := parse(args...); err == nil {
			t.Errorf("%q: parsed, want a usage error", args)
		}
	}
}

// TestConfigEveryProblem: a file with several problems reports each of
// them, one line each, in key order after the unknown keys.
func TestConfigEveryProblem(t *testing.T) {
	parallel(t)
	file := writeFile(t, "", "c.yaml", `
worker:
  concurency: 3
  lease_ttl: 30
  max_attempts: 0
task:
  command: []
log:
  level: loud
redis:
  password: 1234567
`)
	_, err := loadConfig(file, nil, nil)
	got := []string{}
	for _, p := range configProblemsOf(err) {
		got = append(got, p.Field)
		if strings.ContainsAny(p.Error(), "\n\r") || strings.Contains(p.Error(), "1234567") {
			t.Errorf("problem %q is not one line, or shows the password", p)
		}
	}
	want := []string{"", "redis.password", "worker.lease_ttl", "worker.max_attempts", "task.command", "log.level"}
	if !slices.Equal(got, want) {
		t.Errorf("problems about %q, want %q (%v)", got, want, err)
	}
	if !strings.Contains(err.Error(), "(and 5 more problems)") {
		t.Errorf("error %q does not say how many more problems there are", err)
	}
}

// FuzzLoadConfig feeds arbitrary files and one environment variable to
// loadConfig: it must not panic, and every error must be a one-line
// *ConfigError.
func FuzzLoadConfig(f *testing.F) {
	exts := []string{".yaml", ".json", ".toml"}
	f.Add(uint8(0), []byte("task: {command: [sh, -c, 'echo $RUNNER_ITEM']}\npool: {items: [a, b]}\n"), "RUNNER_WORKER_LEASE_TTL=10s")
	f.Add(uint8(0), []byte("worker:\n  lease_ttl: 30\n  concurency: 2\n"), "RUNNER_ITEM=x")
	f.Add(uint8(0), []byte("redis: {tls: {enabled: true, ca_file: /nonexistent}}\ntask: {env: {A: 1}}\n"), "")
	f.Add(uint8(1), []byte(`{"task": {"command": ["true"], "env": {"A": "b"}}, "mode": "batch", "batch": {"id": "x"}}`), `RUNNER_TASK_ENV={"X":"y"}`)
	f.Add(uint8(1), []byte(`{"worker": {"concurrency": 1e309, "backoff": -1}}`), "RUNNER_POOL_ITEMS=a,,b")
	f.Add(uint8(2), []byte("mode = \"loop\"\n[task]\ncommand = [\"true\"]\n[worker]\nlease_ttl = \"1s\"\n"), "RUNNER_WORKER_X=1")
	f.Fuzz(func(t *testing.T, ext uint8, doc []byte, envLine string) {
		path := filepath.Join(t.TempDir(), "c"+exts[int(ext)%len(exts)])
		if err := os.WriteFile(path, doc, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := loadConfig(path, []string{envLine}, nil)
		if err == nil {
			_ = c.Redacted()
			return
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || !errors.Is(err, ErrConfig) {
			t.Fatalf("got %T %v, want a *ConfigError", err, err)
		}
		if strings.ContainsAny(err.Error(), "\n\r") {
			t.Fatalf("error is not one line: %q", err)
		}
	})
}
