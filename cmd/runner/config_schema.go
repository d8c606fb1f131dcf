package main

// The runner's configuration schema: the Config structs, one table of
// dotted keys (configKeys) and the defaults. config_load.go fills a Config
// from a file, the environment and flags with viper; config_validate.go
// checks it, leaving the rules of the libraries' own settings to them.

import (
	"cmp"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/worker"
)

// Config is the runner's configuration after loading and validation. Each
// field's key, default and environment variable are in config/README.md.
type Config struct {
	Redis RedisConfig `mapstructure:"redis"`
	Pool  PoolConfig  `mapstructure:"pool"`
	// Worker holds the worker.* keys, decoded by name (lease_ttl into
	// LeaseTTL); its other fields (Mode, TaskTimeout, BatchID, ...) come
	// from their own sections in workerConfig. Derived defaults
	// (RefreshInterval, SafetyMargin) are filled in; ID stays "" for the
	// worker's default.
	Worker worker.Config `mapstructure:"worker"`
	Task   TaskConfig    `mapstructure:"task"`
	// Mode is "loop" (serve forever) or "batch" (run every item once).
	Mode  string      `mapstructure:"mode"`
	Batch BatchConfig `mapstructure:"batch"`
	Log   LogConfig   `mapstructure:"log"`
	Admin AdminConfig `mapstructure:"admin"`
	UI    UIConfig    `mapstructure:"ui"`

	// skipTask: loaded for a command that runs no task (pool, config).
	skipTask bool
}

// configOrigins says where each key's value came from (config show).
type configOrigins map[string]source

// RedisConfig says where the pool lives. With Addr, Sentinel.Master and
// Cluster.Addrs all empty the runner uses its in-memory backend.
type RedisConfig struct {
	Addr        string              `mapstructure:"addr"`
	Username    string              `mapstructure:"username"`
	Password    configSecret        `mapstructure:"password"`
	DB          int                 `mapstructure:"db"`
	TLS         RedisTLSConfig      `mapstructure:"tls"`
	Sentinel    RedisSentinelConfig `mapstructure:"sentinel"`
	Cluster     RedisClusterConfig  `mapstructure:"cluster"`
	DialTimeout time.Duration       `mapstructure:"dial_timeout"`
	// AllowEviction accepts a Redis that may evict keys (with a warning).
	AllowEviction bool `mapstructure:"allow_eviction"`
	// MinReplicasAcked and ReplicaAckTimeout: allocator.Config's.
	MinReplicasAcked  int           `mapstructure:"min_replicas_acked"`
	ReplicaAckTimeout time.Duration `mapstructure:"replica_ack_timeout"`
}

// RedisClusterConfig names seed nodes of a Redis Cluster. A redis.addr that
// turns out to be a cluster node is used as the only seed.
type RedisClusterConfig struct {
	Addrs []string `mapstructure:"addrs"`
}

// RedisTLSConfig turns on TLS to Redis. The files are checked to be
// readable at load time; their contents are never read here.
type RedisTLSConfig struct {
	Enabled    bool   `mapstructure:"enabled"`
	CAFile     string `mapstructure:"ca_file"`
	CertFile   string `mapstructure:"cert_file"`
	KeyFile    string `mapstructure:"key_file"`
	ServerName string `mapstructure:"server_name"`
}

// RedisSentinelConfig finds the Redis master through Sentinel. Master and
// Addrs are set together or not at all.
type RedisSentinelConfig struct {
	Master   string       `mapstructure:"master"`
	Addrs    []string     `mapstructure:"addrs"`
	Password configSecret `mapstructure:"password"`
}

// PoolConfig names the lock pool: keys "<Prefix>|<Name>:<item>".
type PoolConfig struct {
	Prefix string `mapstructure:"prefix"`
	Name   string `mapstructure:"name"`
	// Items are added to the pool at start (and on SIGHUP).
	Items []string `mapstructure:"items"`
}

// TaskConfig is the command run for each item.
type TaskConfig struct {
	// Command is the argv; it is executed directly, not through a shell.
	Command []string `mapstructure:"command"`
	// Env holds "NAME=value" entries added to the task's environment.
	Env []string `mapstructure:"env"`
	// Dir is the working directory; "" is the runner's.
	Dir string `mapstructure:"dir"`
	// Timeout bounds one run; 0 means no limit.
	Timeout time.Duration `mapstructure:"timeout"`
	// KillGrace is how long the task has between SIGTERM and SIGKILL.
	KillGrace time.Duration `mapstructure:"kill_grace"`
}

// BatchConfig configures batch mode.
type BatchConfig struct {
	ID               string        `mapstructure:"id"`
	Retain           time.Duration `mapstructure:"retain"`
	ProgressInterval time.Duration `mapstructure:"progress_interval"`
}

// LogConfig configures the runner's logs.
type LogConfig struct {
	// Level is trace, debug, info, warn or error.
	Level string `mapstructure:"level"`
	// Format is text or json.
	Format string `mapstructure:"format"`
	// TaskStdout and TaskStderr are the levels of the lines a task writes
	// (default info and warn).
	TaskStdout string `mapstructure:"task_stdout"`
	TaskStderr string `mapstructure:"task_stderr"`
}

// AdminConfig configures the admin HTTP server.
type AdminConfig struct {
	// Listen is a host:port; "" turns the server off.
	Listen string `mapstructure:"listen"`
	// PoolMetrics exports the whole pool's state (see pool_metrics.go),
	// sampled every PoolMetricsInterval.
	PoolMetrics         bool          `mapstructure:"pool_metrics"`
	PoolMetricsInterval time.Duration `mapstructure:"pool_metrics_interval"`
	// Token authorizes the dashboard's actions (runner ui, admin.ui)
	// unless ui.token is set; "" for both makes the dashboard read-only.
	Token configSecret `mapstructure:"token"`
	// UI serves the dashboard's pages on admin.listen too.
	UI bool `mapstructure:"ui"`
}

// UIConfig configures the dashboard (runner ui, and admin.ui).
type UIConfig struct {
	// Listen is where runner ui serves it (its --listen flag wins).
	Listen string `mapstructure:"listen"`
	// Token, when set, authorizes the dashboard's actions instead of
	// admin.token.
	Token configSecret `mapstructure:"token"`
}

// uiToken is the token that authorizes the dashboard's actions: ui.token,
// else admin.token; "" for none.
func (c *Config) uiToken() string { return cmp.Or(c.UI.Token, c.Admin.Token).Reveal() }

// configSecret is a string that prints, formats and marshals as "***" (or
// "" when empty), so logging a Config cannot leak it. Reveal returns it.
type configSecret string

// Reveal returns the secret itself, for handing to the Redis client.
func (s configSecret) Reveal() string { return string(s) }

func (s configSecret) redacted() string {
	if s == "" {
		return ""
	}
	return "***"
}

// Format writes the redacted form for every verb.
func (s configSecret) Format(f fmt.State, _ rune) { io.WriteString(f, s.redacted()) }

// MarshalText makes encoders (JSON logs) write the redacted form.
func (s configSecret) MarshalText() ([]byte, error) { return []byte(s.redacted()), nil }

// configKey is one dotted configuration key.
type configKey struct {
	name string
	// field returns a pointer to the Config field the key sets.
	field func(*Config) any
	// secret values are never quoted in errors nor shown by Redacted.
	secret bool
	// argv values are JSON arrays in the environment and --set (commas
	// may be part of an element).
	argv bool
	// libField is the library field that checks the key's value, as
	// lock.FieldError (which allocator and worker use too) names it
	// ("Prefix", "LeaseTTL", "ExecTask.Env"); "" for a key only the runner
	// checks.
	libField string
	// zeroIsDefault: the library reads 0 (or "") as "use the default", so
	// a 0 the user wrote would silently mean something else: refused.
	zeroIsDefault bool
	// live: a SIGHUP applies a new value without a restart.
	live bool
}

// env is the key's environment variable: RUNNER_ then the key in upper
// case with dots as underscores (worker.lease_ttl: RUNNER_WORKER_LEASE_TTL).
func (k configKey) env() string {
	return "RUNNER_" + strings.ToUpper(strings.ReplaceAll(k.name, ".", "_"))
}

// configKeys lists every key, in the order of config/README.md; problems
// are reported in this order.
var configKeys = []configKey{
	{name: "redis.addr", field: func(c *Config) any { return &c.Redis.Addr }},
	{name: "redis.username", field: func(c *Config) any { return &c.Redis.Username }},
	{name: "redis.password", field: func(c *Config) any { return &c.Redis.Password }, secret: true},
	{name: "redis.db", field: func(c *Config) any { return &c.Redis.DB }},
	{name: "redis.dial_timeout", field: func(c *Config) any { return &c.Redis.DialTimeout }, zeroIsDefault: true},
	{name: "redis.tls.enabled", field: func(c *Config) any { return &c.Redis.TLS.Enabled }},
	{name: "redis.tls.ca_file", field: func(c *Config) any { return &c.Redis.TLS.CAFile }},
	{name: "redis.tls.cert_file", field: func(c *Config) any { return &c.Redis.TLS.CertFile }},
	{name: "redis.tls.key_file", field: func(c *Config) any { return &c.Redis.TLS.KeyFile }},
	{name: "redis.tls.server_name", field: func(c *Config) any { return &c.Redis.TLS.ServerName }},
	{name: "redis.sentinel.master", field: func(c *Config) any { return &c.Redis.Sentinel.Master }},
	{name: "redis.sentinel.addrs", field: func(c *Config) any { return &c.Redis.Sentinel.Addrs }},
	{name: "redis.sentinel.password", field: func(c *Config) any { return &c.Redis.Sentinel.Password }, secret: true},
	{name: "redis.cluster.addrs", field: func(c *Config) any { return &c.Redis.Cluster.Addrs }},
	{name: "redis.allow_eviction", field: func(c *Config) any { return &c.Redis.AllowEviction }},
	{name: "redis.min_replicas_acked", field: func(c *Config) any { return &c.Redis.MinReplicasAcked }, libField: "MinReplicasAcked"},
	{name: "redis.replica_ack_timeout", field: func(c *Config) any { return &c.Redis.ReplicaAckTimeout }, libField: "ReplicaAckTimeout", zeroIsDefault: true},
	{name: "pool.prefix", field: func(c *Config) any { return &c.Pool.Prefix }, libField: "Prefix"},
	{name: "pool.name", field: func(c *Config) any { return &c.Pool.Name }, libField: "Suffix", zeroIsDefault: true},
	{name: "pool.items", field: func(c *Config) any { return &c.Pool.Items }, live: true},
	{name: "worker.concurrency", field: func(c *Config) any { return &c.Worker.Concurrency }, libField: "Concurrency", zeroIsDefault: true, live: true},
	{name: "worker.lease_ttl", field: func(c *Config) any { return &c.Worker.LeaseTTL }, libField: "LeaseTTL", zeroIsDefault: true},
	{name: "worker.refresh_interval", field: func(c *Config) any { return &c.Worker.RefreshInterval }, libField: "RefreshInterval", zeroIsDefault: true},
	{name: "worker.safety_margin", field: func(c *Config) any { return &c.Worker.SafetyMargin }, libField: "SafetyMargin", zeroIsDefault: true},
	{name: "worker.cooldown", field: func(c *Config) any { return &c.Worker.Cooldown }, libField: "Cooldown"},
	{name: "worker.max_attempts", field: func(c *Config) any { return &c.Worker.MaxAttempts }, libField: "MaxAttempts", zeroIsDefault: true},
	{name: "worker.backoff", field: func(c *Config) any { return &c.Worker.Backoff }, libField: "Backoff", zeroIsDefault: true},
	{name: "worker.max_backoff", field: func(c *Config) any { return &c.Worker.MaxBackoff }, libField: "MaxBackoff", zeroIsDefault: true},
	{name: "worker.quarantine", field: func(c *Config) any { return &c.Worker.Quarantine }, libField: "Quarantine", zeroIsDefault: true},
	{name: "worker.shutdown_grace", field: func(c *Config) any { return &c.Worker.ShutdownGrace }, libField: "ShutdownGrace", zeroIsDefault: true},
	{name: "worker.id", field: func(c *Config) any { return &c.Worker.ID }, libField: "ID"},
	{name: "worker.heartbeat", field: func(c *Config) any { return &c.Worker.Heartbeat }, libField: "Heartbeat", zeroIsDefault: true},
	{name: "worker.history_retain", field: func(c *Config) any { return &c.Worker.HistoryRetain }, libField: "HistoryRetain", zeroIsDefault: true},
	{name: "task.command", field: func(c *Config) any { return &c.Task.Command }, argv: true, libField: "ExecTask.Command", live: true},
	{name: "task.env", field: func(c *Config) any { return &c.Task.Env }, argv: true, libField: "ExecTask.Env", live: true},
	{name: "task.dir", field: func(c *Config) any { return &c.Task.Dir }, libField: "ExecTask.Dir", live: true},
	{name: "task.timeout", field: func(c *Config) any { return &c.Task.Timeout }, libField: "TaskTimeout", live: true},
	{name: "task.kill_grace", field: func(c *Config) any { return &c.Task.KillGrace }, libField: "ExecTask.KillGrace", zeroIsDefault: true, live: true},
	{name: "mode", field: func(c *Config) any { return &c.Mode }, libField: "Mode"},
	{name: "batch.id", field: func(c *Config) any { return &c.Batch.ID }, libField: "BatchID", zeroIsDefault: true},
	{name: "batch.retain", field: func(c *Config) any { return &c.Batch.Retain }, libField: "BatchRetain", zeroIsDefault: true},
	{name: "batch.progress_interval", field: func(c *Config) any { return &c.Batch.ProgressInterval }, libField: "ProgressInterval", zeroIsDefault: true},
	{name: "log.level", field: func(c *Config) any { return &c.Log.Level }, live: true},
	{name: "log.format", field: func(c *Config) any { return &c.Log.Format }},
	{name: "log.task_stdout", field: func(c *Config) any { return &c.Log.TaskStdout }, live: true},
	{name: "log.task_stderr", field: func(c *Config) any { return &c.Log.TaskStderr }, live: true},
	{name: "admin.listen", field: func(c *Config) any { return &c.Admin.Listen }},
	{name: "admin.pool_metrics", field: func(c *Config) any { return &c.Admin.PoolMetrics }},
	{name: "admin.token", field: func(c *Config) any { return &c.Admin.Token }, secret: true},
	{name: "admin.pool_metrics_interval", field: func(c *Config) any { return &c.Admin.PoolMetricsInterval }},
	{name: "admin.ui", field: func(c *Config) any { return &c.Admin.UI }},
	{name: "ui.listen", field: func(c *Config) any { return &c.UI.Listen }},
	{name: "ui.token", field: func(c *Config) any { return &c.UI.Token }, secret: true},
}

var configKeyByName = func() map[string]configKey {
	m := make(map[string]configKey, len(configKeys))
	for _, k := range configKeys {
		m[k.name] = k
	}
	return m
}()

var configKeyByEnv = func() map[string]configKey {
	m := make(map[string]configKey, len(configKeys))
	for _, k := range configKeys {
		m[k.env()] = k
	}
	return m
}()

// configKeyOrder is each key's place in configKeys.
var configKeyOrder = func() map[string]int {
	m := make(map[string]int, len(configKeys))
	for i, k := range configKeys {
		m[k.name] = i
	}
	return m
}()

// configKeyByLibField maps a library field name to its key. LeaseTTL is
// both worker's and allocator's: one key.
var configKeyByLibField = func() map[string]string {
	m := map[string]string{}
	for _, k := range configKeys {
		if k.libField != "" {
			m[k.libField] = k.name
		}
	}
	return m
}()

// configSections are the first parts of dotted keys, in upper case
// ("REDIS", "WORKER"): RUNNER_<SECTION>_* variables must name a key.
var configSections = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range configKeys {
		if s, _, ok := strings.Cut(k.name, "."); ok {
			m[strings.ToUpper(s)] = true
		}
	}
	return m
}()

// isConfigTable reports whether prefix ("redis", "redis.tls") holds keys.
func isConfigTable(prefix string) bool {
	for _, k := range configKeys {
		if strings.HasPrefix(k.name, prefix+".") {
			return true
		}
	}
	return false
}

func configKeyNames() []string {
	names := make([]string, len(configKeys))
	for i, k := range configKeys {
		names[i] = k.name
	}
	return names
}

// configDefaults are the values of keys nobody set. The libraries' own
// defaults come from them (WithDefaults), so no constant is copied here;
// worker.refresh_interval, worker.safety_margin and task.kill_grace are
// derived from the merged lease_ttl after loading (deriveDefaults).
func configDefaults() map[string]any {
	w := worker.Config{}.WithDefaults()
	a := allocator.Config{}.WithDefaults()
	return map[string]any{
		"redis.dial_timeout":        5 * time.Second,
		"redis.replica_ack_timeout": a.ReplicaAckTimeout,
		"pool.prefix":               "lockpool",
		"pool.name":                 "lock-pool",
		// The runner's default; the worker library's is 1.
		"worker.concurrency":          4,
		"worker.lease_ttl":            w.LeaseTTL,
		"worker.max_attempts":         w.MaxAttempts,
		"worker.backoff":              w.Backoff,
		"worker.max_backoff":          w.MaxBackoff,
		"worker.quarantine":           w.Quarantine,
		"worker.shutdown_grace":       w.ShutdownGrace,
		"worker.heartbeat":            w.Heartbeat,
		"worker.history_retain":       w.HistoryRetain,
		"mode":                        string(w.Mode),
		"batch.id":                    w.BatchID,
		"batch.retain":                w.BatchRetain,
		"batch.progress_interval":     w.ProgressInterval,
		"log.level":                   "info",
		"admin.pool_metrics_interval": 15 * time.Second,
		"ui.listen":                   "127.0.0.1:8080",
		"log.format":                  "text",
		"log.task_stdout":             "info",
		"log.task_stderr":             "warn",
	}
}

// deriveDefaults fills the keys whose default follows other keys, unless
// someone set them.
func (c *Config) deriveDefaults(origin configOrigins) {
	d := c.Worker.WithDefaults()
	if !origin["worker.refresh_interval"].set() {
		c.Worker.RefreshInterval = d.RefreshInterval
	}
	if !origin["worker.safety_margin"].set() {
		c.Worker.SafetyMargin = d.SafetyMargin
	}
	if !origin["task.kill_grace"].set() {
		// A task whose lease is lost must be dead before the lease can
		// expire: SIGKILL comes KillGrace after SIGTERM.
		c.Task.KillGrace = min(10*time.Second, c.Worker.SafetyMargin/2)
	}
}

// workerConfig maps the configuration onto the worker pool's.
func (c *Config) workerConfig() worker.Config {
	w := c.Worker
	w.Mode = worker.Mode(c.Mode)
	w.TaskTimeout = c.Task.Timeout
	w.BatchID = c.Batch.ID
	w.BatchRetain = c.Batch.Retain
	w.ProgressInterval = c.Batch.ProgressInterval
	return w
}

// allocatorConfig maps the configuration onto the allocator's.
func (c *Config) allocatorConfig() allocator.Config {
	return allocator.Config{
		LeaseTTL:          c.Worker.LeaseTTL,
		AllowEviction:     c.Redis.AllowEviction,
		MinReplicasAcked:  c.Redis.MinReplicasAcked,
		ReplicaAckTimeout: c.Redis.ReplicaAckTimeout,
	}
}

// execTask is the task the configuration runs for each item.
func (c *Config) execTask() *worker.ExecTask {
	return &worker.ExecTask{
		Command:   c.Task.Command,
		Env:       c.Task.Env,
		Dir:       c.Task.Dir,
		KillGrace: c.Task.KillGrace,
		Wrapper:   true,
	}
}
