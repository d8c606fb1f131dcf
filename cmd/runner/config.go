package main

// The runner's configuration: one table of dotted keys (configKeys) drives
// the file decoder, the environment, --set and the reference in
// config/README.md. Sources apply in order of precedence: defaults, then
// the file (-c), then RUNNER_* environment variables, then flags.
//
// Files are decoded with the YAML, TOML and JSON decoders viper itself uses,
// not through viper: viper lowercases every map key and splits keys on
// dots, which would turn task.env's PATH into path.

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"go.yaml.in/yaml/v3"

	"github.com/lockpool/lockpool/pkg/lock"
)

// ErrConfig matches, with errors.Is, every error loadConfig returns.
var ErrConfig = errors.New("config: invalid configuration")

// ConfigError is a configuration problem. Its message is one line and never
// holds the value of a secret (redis.password, redis.sentinel.password).
type ConfigError struct {
	// Field is the dotted key at fault ("worker.lease_ttl"), or "" when the
	// problem is a whole file or an unknown key or variable (named in Msg).
	Field string
	// Msg says what is wrong and, where it helps, what is wanted.
	Msg string
}

// Error returns "config: <field>: <msg>", or "config: <msg>" without a
// field.
func (e *ConfigError) Error() string {
	if e.Field == "" {
		return "config: " + e.Msg
	}
	return "config: " + e.Field + ": " + e.Msg
}

// Is makes errors.Is(err, ErrConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

func configErrorf(field, format string, args ...any) *ConfigError {
	return &ConfigError{Field: field, Msg: configOneLine(fmt.Sprintf(format, args...))}
}

// configOneLine joins a (decoder's) multi-line message into one line.
func configOneLine(s string) string {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return strings.Join(slices.DeleteFunc(lines, func(l string) bool { return l == "" }), " ")
}

// Config is the runner's configuration after parsing and validation. Each
// field's key, default and environment variable are in config/README.md.
type Config struct {
	Redis  RedisConfig
	Pool   PoolConfig
	Worker WorkerConfig
	Task   TaskConfig
	// Mode is "loop" (serve forever) or "batch" (run every item once).
	Mode  string
	Batch BatchConfig
	Log   LogConfig
	Admin AdminConfig

	// skipTask: loaded for a pool subcommand, which runs no task.
	skipTask bool
}

// RedisConfig says where the pool lives. With Addr, Sentinel.Master and
// Cluster.Addrs all empty the runner uses its in-memory backend.
type RedisConfig struct {
	Addr        string
	Username    string
	Password    configSecret
	DB          int
	TLS         RedisTLSConfig
	Sentinel    RedisSentinelConfig
	Cluster     RedisClusterConfig
	DialTimeout time.Duration
	// AllowEviction accepts a Redis that may evict keys (with a warning).
	AllowEviction bool
	// MinReplicasAcked and ReplicaAckTimeout: allocator.Config's.
	MinReplicasAcked  int
	ReplicaAckTimeout time.Duration
}

// RedisClusterConfig names seed nodes of a Redis Cluster. A redis.addr that
// turns out to be a cluster node is used as the only seed.
type RedisClusterConfig struct {
	Addrs []string
}

// RedisTLSConfig turns on TLS to Redis. The files are checked to be
// readable at load time; their contents are never read here.
type RedisTLSConfig struct {
	Enabled    bool
	CAFile     string
	CertFile   string
	KeyFile    string
	ServerName string
}

// RedisSentinelConfig finds the Redis master through Sentinel. Master and
// Addrs are set together or not at all.
type RedisSentinelConfig struct {
	Master   string
	Addrs    []string
	Password configSecret
}

// PoolConfig names the lock pool: keys "<Prefix>|<Name>:<item>".
type PoolConfig struct {
	Prefix string
	Name   string
	// Items are added to the pool at start.
	Items []string
}

// WorkerConfig maps onto worker.Config. RefreshInterval and SafetyMargin
// hold their derived defaults (LeaseTTL/3, LeaseTTL/5) when not set.
type WorkerConfig struct {
	Concurrency     int
	LeaseTTL        time.Duration
	RefreshInterval time.Duration
	SafetyMargin    time.Duration
	Cooldown        time.Duration
	MaxAttempts     int
	Backoff         time.Duration
	MaxBackoff      time.Duration
	Quarantine      time.Duration
	ShutdownGrace   time.Duration
	// ID is "" for the worker's default, "<hostname>:<pid>".
	ID string
}

// TaskConfig is the command run for each item.
type TaskConfig struct {
	// Command is the argv; it is executed directly, not through a shell.
	Command []string
	// Env is added to the task's environment.
	Env map[string]string
	// Dir is the working directory; "" is the runner's.
	Dir string
	// Timeout bounds one run; 0 means no limit.
	Timeout time.Duration
	// KillGrace is how long the task has between SIGTERM and SIGKILL.
	KillGrace time.Duration
}

// BatchConfig configures batch mode.
type BatchConfig struct {
	ID               string
	Retain           time.Duration
	ProgressInterval time.Duration
}

// LogConfig configures the runner's logs.
type LogConfig struct {
	// Level is trace, debug, info, warn or error.
	Level string
	// Format is text or json.
	Format string
}

// AdminConfig configures the admin HTTP server.
type AdminConfig struct {
	// Listen is a host:port; "" turns the server off.
	Listen string
}

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
	// argv values are JSON arrays in the environment and --set.
	argv bool
}

// env is the key's environment variable: RUNNER_ then the key in upper
// case with dots as underscores (worker.lease_ttl: RUNNER_WORKER_LEASE_TTL).
func (k configKey) env() string {
	return "RUNNER_" + strings.ToUpper(strings.ReplaceAll(k.name, ".", "_"))
}

// configKeys lists every key, in the order of config/README.md; the first
// invalid one in this order is the one reported.
var configKeys = []configKey{
	{name: "redis.addr", field: func(c *Config) any { return &c.Redis.Addr }},
	{name: "redis.username", field: func(c *Config) any { return &c.Redis.Username }},
	{name: "redis.password", field: func(c *Config) any { return &c.Redis.Password }, secret: true},
	{name: "redis.db", field: func(c *Config) any { return &c.Redis.DB }},
	{name: "redis.dial_timeout", field: func(c *Config) any { return &c.Redis.DialTimeout }},
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
	{name: "redis.min_replicas_acked", field: func(c *Config) any { return &c.Redis.MinReplicasAcked }},
	{name: "redis.replica_ack_timeout", field: func(c *Config) any { return &c.Redis.ReplicaAckTimeout }},
	{name: "pool.prefix", field: func(c *Config) any { return &c.Pool.Prefix }},
	{name: "pool.name", field: func(c *Config) any { return &c.Pool.Name }},
	{name: "pool.items", field: func(c *Config) any { return &c.Pool.Items }},
	{name: "worker.concurrency", field: func(c *Config) any { return &c.Worker.Concurrency }},
	{name: "worker.lease_ttl", field: func(c *Config) any { return &c.Worker.LeaseTTL }},
	{name: "worker.refresh_interval", field: func(c *Config) any { return &c.Worker.RefreshInterval }},
	{name: "worker.safety_margin", field: func(c *Config) any { return &c.Worker.SafetyMargin }},
	{name: "worker.cooldown", field: func(c *Config) any { return &c.Worker.Cooldown }},
	{name: "worker.max_attempts", field: func(c *Config) any { return &c.Worker.MaxAttempts }},
	{name: "worker.backoff", field: func(c *Config) any { return &c.Worker.Backoff }},
	{name: "worker.max_backoff", field: func(c *Config) any { return &c.Worker.MaxBackoff }},
	{name: "worker.quarantine", field: func(c *Config) any { return &c.Worker.Quarantine }},
	{name: "worker.shutdown_grace", field: func(c *Config) any { return &c.Worker.ShutdownGrace }},
	{name: "worker.id", field: func(c *Config) any { return &c.Worker.ID }},
	{name: "task.command", field: func(c *Config) any { return &c.Task.Command }, argv: true},
	{name: "task.env", field: func(c *Config) any { return &c.Task.Env }},
	{name: "task.dir", field: func(c *Config) any { return &c.Task.Dir }},
	{name: "task.timeout", field: func(c *Config) any { return &c.Task.Timeout }},
	{name: "task.kill_grace", field: func(c *Config) any { return &c.Task.KillGrace }},
	{name: "mode", field: func(c *Config) any { return &c.Mode }},
	{name: "batch.id", field: func(c *Config) any { return &c.Batch.ID }},
	{name: "batch.retain", field: func(c *Config) any { return &c.Batch.Retain }},
	{name: "batch.progress_interval", field: func(c *Config) any { return &c.Batch.ProgressInterval }},
	{name: "log.level", field: func(c *Config) any { return &c.Log.Level }},
	{name: "log.format", field: func(c *Config) any { return &c.Log.Format }},
	{name: "admin.listen", field: func(c *Config) any { return &c.Admin.Listen }},
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

func defaultConfig() *Config {
	return &Config{
		Redis: RedisConfig{DialTimeout: 5 * time.Second, ReplicaAckTimeout: time.Second},
		Pool:  PoolConfig{Prefix: "lockpool", Name: "lock-pool"},
		Worker: WorkerConfig{
			Concurrency:   4,
			LeaseTTL:      30 * time.Second,
			MaxAttempts:   3,
			Backoff:       time.Second,
			MaxBackoff:    time.Minute,
			Quarantine:    10 * time.Minute,
			ShutdownGrace: 30 * time.Second,
		},
		Task:  TaskConfig{}, // KillGrace defaults to min(10s, safety_margin/2)
		Mode:  "loop",
		Batch: BatchConfig{ID: "default", Retain: 24 * time.Hour, ProgressInterval: 10 * time.Second},
		Log:   LogConfig{Level: "info", Format: "text"},
	}
}

// loadConfig reads file (none when ""), then the RUNNER_* variables of
// environ ("KEY=value" entries, as os.Environ returns), then overrides
// (dotted key to raw value, as from flags), and validates the result. Every
// error is a *ConfigError.
func loadConfig(file string, environ []string, overrides map[string]string) (*Config, error) {
	return loadConfigFor(file, environ, overrides, true)
}

// loadConfigFor is loadConfig; the task section is checked only when
// forRun (the pool subcommands run no task).
func loadConfigFor(file string, environ []string, overrides map[string]string, forRun bool) (*Config, error) {
	c := defaultConfig()
	c.skipTask = !forRun
	set := map[string]bool{}
	if file != "" {
		doc, err := readConfigFile(file)
		if err != nil {
			return nil, err
		}
		if err := c.applyTable("", doc, set); err != nil {
			return nil, err
		}
	}
	if err := c.applyEnv(environ, set); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(overrides))
	for name := range overrides {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		k, ok := configKeyByName[name]
		if !ok {
			return nil, configErrorf("", "unknown key %q in flags%s", name, configHint(name, configKeyNames()))
		}
		if err := c.setText(k, overrides[name], "flags"); err != nil {
			return nil, err
		}
		set[name] = true
	}
	if !set["worker.refresh_interval"] {
		c.Worker.RefreshInterval = c.Worker.LeaseTTL / 3
	}
	if !set["worker.safety_margin"] {
		c.Worker.SafetyMargin = c.Worker.LeaseTTL / 5
	}
	if !set["task.kill_grace"] {
		// A task whose lease is lost must be dead before the lease can
		// expire: SIGKILL comes KillGrace after SIGTERM.
		c.Task.KillGrace = min(10*time.Second, c.Worker.SafetyMargin/2)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// maxConfigFile bounds what readConfigFile reads: no configuration comes
// near it, and "-c /dev/zero" or a runaway generator must not fill memory.
const maxConfigFile = 16 << 20

// readConfigFile decodes a .yaml/.yml, .toml or .json file into a table.
func readConfigFile(file string) (map[string]any, error) {
	ext := strings.ToLower(filepath.Ext(file))
	switch ext {
	case ".yaml", ".yml", ".toml", ".json":
	default:
		return nil, configErrorf("", "reading %q: unknown file type %q (want .yaml, .yml, .toml or .json)", file, ext)
	}
	data, err := readConfigBytes(file)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, configErrorf("", "reading %q: %v", file, err)
	}
	// YAML and JSON decode into any so that a document that is not a
	// table is reported here, without the decoder quoting its content.
	var top any
	switch ext {
	case ".yaml", ".yml":
		if err = yaml.Unmarshal(data, &top); err != nil {
			// Type errors quote content between backquotes: hide it.
			err = errors.New(configYAMLQuoted.ReplaceAllString(err.Error(), "`...`"))
		}
	case ".toml":
		doc := map[string]any{}
		err = toml.Unmarshal(data, &doc)
		top = doc
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			err = fmt.Errorf("line %d column %d: %w", row, col, err)
		}
	case ".json":
		err = decodeConfigJSON(data, &top)
	}
	if err != nil {
		return nil, configErrorf("", "parsing %q: %v", file, err)
	}
	switch doc := top.(type) {
	case nil:
		return map[string]any{}, nil
	case map[string]any:
		return doc, nil
	default:
		return nil, configErrorf("", "parsing %q: want a table of keys at the top, got %s", file, describeConfigValue(top))
	}
}

// readConfigBytes reads file, refusing one longer than maxConfigFile.
func readConfigBytes(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err == nil && len(data) > maxConfigFile {
		err = fmt.Errorf("longer than %d MiB", maxConfigFile>>20)
	}
	return data, err
}

var configYAMLQuoted = regexp.MustCompile("`[^`]*`")

func decodeConfigJSON(data []byte, doc *any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	err := dec.Decode(doc)
	if err == nil {
		if _, err = dec.Token(); err == io.EOF {
			return nil
		}
		return errors.New("trailing data after the JSON object")
	}
	var off int64 = -1
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	}
	if off >= 0 && off <= int64(len(data)) {
		return fmt.Errorf("line %d: %w", 1+bytes.Count(data[:off], []byte("\n")), err)
	}
	return err
}

// applyTable applies a decoded file table whose keys sit under prefix.
func (c *Config) applyTable(prefix string, table map[string]any, set map[string]bool) error {
	names := make([]string, 0, len(table))
	for name := range table {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		full := name
		if prefix != "" {
			full = prefix + "." + name
		}
		v := table[name]
		if k, ok := configKeyByName[full]; ok {
			if v == nil { // "key:" with no value leaves the default
				continue
			}
			if err := c.setValue(k, v); err != nil {
				return err
			}
			set[full] = true
			continue
		}
		if !isConfigTable(full) {
			return configErrorf("", "unknown key %q%s", full, configHint(full, configKeyNames()))
		}
		switch sub := v.(type) {
		case nil:
		case map[string]any:
			if err := c.applyTable(full, sub, set); err != nil {
				return err
			}
		default:
			return configErrorf(full, "want a table of keys, got %s", describeConfigValue(v))
		}
	}
	return nil
}

// applyEnv applies the RUNNER_* variables of environ. A variable of a
// known section (RUNNER_WORKER_...) must name a key; others (RUNNER_ITEM)
// are not the runner's and are ignored, as are empty values.
func (c *Config) applyEnv(environ []string, set map[string]bool) error {
	seen := map[string]bool{}
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, "RUNNER_") || seen[name] {
			continue
		}
		seen[name] = true // the first wins, as with os.Getenv
		k, known := configKeyByEnv[name]
		if !known {
			section, _, sub := strings.Cut(strings.TrimPrefix(name, "RUNNER_"), "_")
			if sub && configSections[section] {
				envs := make([]string, len(configKeys))
				for i, k := range configKeys {
					envs[i] = k.env()
				}
				return configErrorf("", "unknown environment variable %s%s", configQuoteName(name), configHint(name, envs))
			}
			continue
		}
		if val == "" {
			continue
		}
		if err := c.setText(k, val, name); err != nil {
			return err
		}
		set[k.name] = true
	}
	return nil
}

// setValue sets k from a value decoded from a file.
func (c *Config) setValue(k configKey, v any) error {
	if s, ok := v.(string); ok {
		switch k.field(c).(type) {
		case *int, *bool, *time.Duration:
			return c.setText(k, s, "")
		}
	}
	wrong := func(want string) error {
		return configErrorf(k.name, "want %s, got %s", want, describeConfigValue(v))
	}
	switch p := k.field(c).(type) {
	case *string:
		s, ok := v.(string)
		if !ok {
			return wrong("a string (quote it)")
		}
		*p = s
	case *configSecret:
		s, ok := v.(string)
		if !ok {
			return wrong("a string (quote it)")
		}
		*p = configSecret(s)
	case *int:
		n, ok := configInt(v)
		if !ok {
			return wrong("an integer")
		}
		*p = n
	case *bool:
		b, ok := v.(bool)
		if !ok {
			return wrong("true or false")
		}
		*p = b
	case *time.Duration:
		switch v.(type) {
		case int, int64, uint64, float64, json.Number:
			if n, ok := configInt(v); ok && n == 0 {
				*p = 0
				return nil
			}
			return configErrorf(k.name, "bare number %v has no unit; write a Go duration such as \"30s\" or \"1m30s\"", v)
		}
		return wrong(`a Go duration string such as "30s"`)
	case *[]string:
		list, ok := v.([]any)
		if !ok {
			return wrong("a list of strings")
		}
		out := make([]string, len(list))
		for i, e := range list {
			s, ok := e.(string)
			if !ok {
				return configErrorf(k.name, "element %d: want a string (quote it), got %s", i, describeConfigValue(e))
			}
			out[i] = s
		}
		*p = out
	case *map[string]string:
		table, ok := v.(map[string]any)
		if !ok {
			return wrong("a table of string values")
		}
		out := make(map[string]string, len(table))
		for name, e := range table {
			s, ok := e.(string)
			if !ok {
				return configErrorf(k.name, "%q: want a string (quote it), got %s", name, describeConfigValue(e))
			}
			out[name] = s
		}
		*p = out
	default:
		panic(fmt.Sprintf("config: key %s has unhandled type %T", k.name, p))
	}
	return nil
}

// setText sets k from text: an environment variable, a --set flag or a
// quoted file value. from names the source for error messages ("" for a
// file).
func (c *Config) setText(k configKey, s, from string) error {
	bad := func(format string, args ...any) error {
		err := configErrorf(k.name, format, args...)
		if from != "" {
			err.Msg += " (from " + configQuoteName(from) + ")"
		}
		return err
	}
	switch p := k.field(c).(type) {
	case *string:
		*p = s
	case *configSecret:
		*p = configSecret(s)
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return bad("want an integer, got %q", s)
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return bad("want true or false, got %q", s)
		}
		*p = b
	case *time.Duration:
		d, msg := parseConfigDuration(s)
		if msg != "" {
			return bad("%s", msg)
		}
		*p = d
	case *[]string:
		t := strings.TrimSpace(s)
		switch {
		case strings.HasPrefix(t, "["):
			var list []string
			if err := json.Unmarshal([]byte(t), &list); err != nil {
				return bad("want a JSON array of strings: %v", err)
			}
			*p = list
		case k.argv:
			return bad(`want a JSON array of strings, such as ["sh","-c","echo hi"]`)
		case t == "":
			*p = []string{}
		default:
			list := strings.Split(t, ",")
			for i := range list {
				list[i] = strings.TrimSpace(list[i])
			}
			*p = list
		}
	case *map[string]string:
		var m map[string]string
		if err := json.Unmarshal([]byte(s), &m); err != nil || m == nil {
			return bad(`want a JSON object of strings, such as {"LANG":"C"}`)
		}
		*p = m
	default:
		panic(fmt.Sprintf("config: key %s has unhandled type %T", k.name, p))
	}
	return nil
}

// parseConfigDuration parses a Go duration string; msg says why it is not
// one. Negative durations and bare numbers other than 0 are refused.
func parseConfigDuration(s string) (d time.Duration, msg string) {
	t := strings.TrimSpace(s)
	if isConfigBareNumber(t) {
		if strings.Trim(t, "+-0.") == "" {
			return 0, ""
		}
		return 0, fmt.Sprintf("bare number %q has no unit; write a Go duration such as \"30s\" or \"1m30s\"", s)
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Sprintf("%q is not a Go duration such as \"30s\" or \"1m30s\"", s)
	}
	if d < 0 {
		return 0, fmt.Sprintf("must not be negative, got %q", s)
	}
	return d, ""
}

func isConfigBareNumber(s string) bool {
	s = strings.TrimLeft(s, "+-")
	digits := 0
	for i, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case r == '.' && !strings.Contains(s[:i], "."):
		default:
			return false
		}
	}
	return digits > 0
}

// configInt converts an integral number from a decoder.
func configInt(v any) (int, bool) {
	switch n := v.(type) {
	case int:
		return n, true
	case int64:
		return int(n), int64(int(n)) == n
	case uint64:
		return int(n), n <= uint64(int(^uint(0)>>1))
	case float64:
		if n < -1<<53 || n > 1<<53 || n != float64(int(n)) {
			return 0, false
		}
		return int(n), true
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil && int64(int(i)) == i
	}
	return 0, false
}

// describeConfigValue names a decoded value's kind, never its content.
func describeConfigValue(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int, int64, uint64, float64, json.Number:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "a table"
	case map[any]any:
		return "a table with keys that are not strings"
	case nil:
		return "nothing"
	case time.Time, toml.LocalDate, toml.LocalTime, toml.LocalDateTime:
		return "a date or time"
	}
	return fmt.Sprintf("a %T", v)
}

// configQuoteName returns an environment variable or flag name as is, or
// quoted when it holds anything but printable ASCII.
func configQuoteName(s string) string {
	for _, r := range s {
		if r <= ' ' || r > '~' {
			return strconv.Quote(s)
		}
	}
	return s
}

func configKeyNames() []string {
	names := make([]string, len(configKeys))
	for i, k := range configKeys {
		names[i] = k.name
	}
	return names
}

// configHint suggests the known name nearest a misspelt one.
func configHint(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := configEditDistance(name, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", strconv.Quote(best))
}

func configEditDistance(a, b string) int {
	if len(a) > 300 || len(b) > 300 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Limits mirrored from the libraries so that a bad value is reported with
// its dotted key before any library sees it.
const (
	configMaxBatchIDLen = 200  // worker.MaxBatchIDLen
	configMaxWorkerID   = 1000 // leaves room for "/w<n>" in allocator.MaxOwnerLen
	configMaxWorkers    = 10000
	configMinLeaseTTL   = 10 * time.Millisecond
)

// validate checks the merged configuration; it returns the first problem
// in configKeys order.
func (c *Config) validate() error {
	r, w := &c.Redis, &c.Worker
	if r.Addr != "" {
		if err := checkConfigAddr("redis.addr", r.Addr); err != nil {
			return err
		}
		if r.Sentinel.Master != "" {
			return configErrorf("redis.addr", "set together with redis.sentinel.master; use one or the other")
		}
	}
	if r.DB < 0 {
		return configErrorf("redis.db", "must be >= 0, got %d", r.DB)
	}
	if r.DialTimeout <= 0 {
		return configErrorf("redis.dial_timeout", "must be > 0, got %q", r.DialTimeout.String())
	}
	tlsFiles := []struct{ key, path string }{
		{"redis.tls.ca_file", r.TLS.CAFile},
		{"redis.tls.cert_file", r.TLS.CertFile},
		{"redis.tls.key_file", r.TLS.KeyFile},
		{"redis.tls.server_name", r.TLS.ServerName},
	}
	for i, f := range tlsFiles {
		if f.path == "" {
			continue
		}
		if !r.TLS.Enabled {
			return configErrorf(f.key, "set but redis.tls.enabled is false; set redis.tls.enabled to true")
		}
		if i < 3 {
			if err := checkConfigReadable(f.key, f.path); err != nil {
				return err
			}
		}
	}
	if (r.TLS.CertFile == "") != (r.TLS.KeyFile == "") {
		if r.TLS.CertFile == "" {
			return configErrorf("redis.tls.cert_file", "must be set with redis.tls.key_file")
		}
		return configErrorf("redis.tls.key_file", "must be set with redis.tls.cert_file")
	}
	switch {
	case r.Sentinel.Master != "" && len(r.Sentinel.Addrs) == 0:
		return configErrorf("redis.sentinel.addrs", "must be set with redis.sentinel.master")
	case r.Sentinel.Master == "" && len(r.Sentinel.Addrs) > 0:
		return configErrorf("redis.sentinel.master", "must be set with redis.sentinel.addrs")
	}
	for _, a := range r.Sentinel.Addrs {
		if err := checkConfigAddr("redis.sentinel.addrs", a); err != nil {
			return err
		}
	}
	if len(r.Cluster.Addrs) > 0 {
		switch {
		case r.Addr != "" || r.Sentinel.Master != "":
			return configErrorf("redis.cluster.addrs", "set together with redis.addr or redis.sentinel.master; use one of them")
		case r.DB != 0:
			return configErrorf("redis.db", "must be 0 on a redis cluster, got %d", r.DB)
		}
	}
	for _, a := range r.Cluster.Addrs {
		if err := checkConfigAddr("redis.cluster.addrs", a); err != nil {
			return err
		}
	}
	if r.MinReplicasAcked < 0 || r.MinReplicasAcked > 100 {
		return configErrorf("redis.min_replicas_acked", "must be 0..100, got %d", r.MinReplicasAcked)
	}
	if r.ReplicaAckTimeout < time.Millisecond {
		return configErrorf("redis.replica_ack_timeout", "must be >= 1ms, got %q", r.ReplicaAckTimeout.String())
	}

	if err := checkConfigName("pool.prefix", c.Pool.Prefix, lock.MaxKeyLen); err != nil {
		return err
	}
	if err := checkConfigName("pool.name", c.Pool.Name, lock.MaxKeyLen); err != nil {
		return err
	}
	if n := len(c.Pool.Prefix) + len(c.Pool.Name); n > lock.MaxKeyLen {
		return configErrorf("pool.name", "pool.prefix and pool.name are %d bytes together, limit %d", n, lock.MaxKeyLen)
	}
	for i, item := range c.Pool.Items {
		if err := checkConfigName("pool.items", item, lock.MaxKeyLen); err != nil {
			err.Msg = fmt.Sprintf("element %d: %s", i, err.Msg)
			return err
		}
	}

	if w.Concurrency < 1 || w.Concurrency > configMaxWorkers {
		return configErrorf("worker.concurrency", "must be between 1 and %d, got %d", configMaxWorkers, w.Concurrency)
	}
	switch {
	case w.LeaseTTL <= 0:
		return configErrorf("worker.lease_ttl", "must be > 0, got %q", w.LeaseTTL.String())
	case w.LeaseTTL < configMinLeaseTTL:
		return configErrorf("worker.lease_ttl", "must be at least %v, got %q", configMinLeaseTTL, w.LeaseTTL.String())
	case w.RefreshInterval <= 0:
		return configErrorf("worker.refresh_interval", "must be > 0, got %q", w.RefreshInterval.String())
	case w.RefreshInterval > w.LeaseTTL/2:
		return configErrorf("worker.refresh_interval", "must be at most worker.lease_ttl/2 (%v), got %q", w.LeaseTTL/2, w.RefreshInterval.String())
	case w.SafetyMargin <= 0:
		return configErrorf("worker.safety_margin", "must be > 0, got %q", w.SafetyMargin.String())
	case w.LeaseTTL-w.SafetyMargin <= w.RefreshInterval:
		return configErrorf("worker.safety_margin", "must be below worker.lease_ttl - worker.refresh_interval (%v), got %q", w.LeaseTTL-w.RefreshInterval, w.SafetyMargin.String())
	case w.MaxAttempts < 1:
		return configErrorf("worker.max_attempts", "must be >= 1, got %d", w.MaxAttempts)
	case w.Backoff < time.Millisecond:
		return configErrorf("worker.backoff", "must be at least 1ms, got %q", w.Backoff.String())
	case w.MaxBackoff < w.Backoff:
		return configErrorf("worker.max_backoff", "must be >= worker.backoff (%v), got %q", w.Backoff, w.MaxBackoff.String())
	case w.Quarantine < time.Millisecond:
		return configErrorf("worker.quarantine", "must be at least 1ms, got %q", w.Quarantine.String())
	case w.ShutdownGrace <= 0:
		return configErrorf("worker.shutdown_grace", "must be > 0, got %q", w.ShutdownGrace.String())
	case len(w.ID) > configMaxWorkerID:
		return configErrorf("worker.id", "%d bytes, limit %d", len(w.ID), configMaxWorkerID)
	case strings.ContainsAny(w.ID, "\x00\n\r"):
		return configErrorf("worker.id", "contains a NUL byte or newline")
	}

	if c.Task.KillGrace <= 0 {
		return configErrorf("task.kill_grace", "must be > 0, got %q", c.Task.KillGrace.String())
	}
	if c.Task.KillGrace >= c.Worker.SafetyMargin && !c.skipTask {
		return configErrorf("task.kill_grace", "must be below worker.safety_margin (%v) so that a task whose lease is lost is killed before the lease can expire; got %q", c.Worker.SafetyMargin, c.Task.KillGrace.String())
	}
	if len(c.Task.Command) == 0 && !c.skipTask {
		return configErrorf("task.command", `must be set to the command's argv, such as ["sh", "-c", "echo $RUNNER_ITEM"]`)
	}
	if len(c.Task.Command) > 0 && c.Task.Command[0] == "" {
		return configErrorf("task.command", "the program (element 0) is empty")
	}
	for i, arg := range c.Task.Command {
		if strings.IndexByte(arg, 0) >= 0 {
			return configErrorf("task.command", "element %d contains a NUL byte", i)
		}
	}
	envNames := make([]string, 0, len(c.Task.Env))
	for name := range c.Task.Env {
		envNames = append(envNames, name)
	}
	slices.Sort(envNames)
	for _, name := range envNames {
		switch {
		case name == "":
			return configErrorf("task.env", "a variable name is empty")
		case strings.ContainsAny(name, "=\x00"):
			return configErrorf("task.env", "variable name %q contains '=' or a NUL byte", name)
		case strings.IndexByte(c.Task.Env[name], 0) >= 0:
			return configErrorf("task.env", "the value of %q contains a NUL byte", name)
		}
	}
	if strings.IndexByte(c.Task.Dir, 0) >= 0 {
		return configErrorf("task.dir", "contains a NUL byte")
	}

	if c.Mode != "loop" && c.Mode != "batch" {
		return configErrorf("mode", `must be "loop" or "batch", got %q`, c.Mode)
	}
	switch b := c.Batch; {
	case b.ID == "":
		return configErrorf("batch.id", "must not be empty")
	case len(b.ID) > configMaxBatchIDLen:
		return configErrorf("batch.id", "%d bytes, limit %d", len(b.ID), configMaxBatchIDLen)
	case strings.ContainsAny(b.ID, "\x00\n\r"):
		return configErrorf("batch.id", "contains a NUL byte or newline")
	case b.Retain <= 0:
		return configErrorf("batch.retain", "must be > 0, got %q", b.Retain.String())
	case b.ProgressInterval <= 0:
		return configErrorf("batch.progress_interval", "must be > 0, got %q", b.ProgressInterval.String())
	}
	switch c.Log.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		return configErrorf("log.level", `must be one of trace, debug, info, warn, error; got %q`, c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return configErrorf("log.format", `must be "text" or "json", got %q`, c.Log.Format)
	}
	if c.Admin.Listen != "" {
		if err := checkConfigAddr("admin.listen", c.Admin.Listen); err != nil {
			return err
		}
	}
	return nil
}

// checkConfigAddr checks a host:port with a numeric port. A value that
// looks like it holds credentials (user:pass@host) is not quoted back.
func checkConfigAddr(key, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		var n uint64
		n, err = strconv.ParseUint(port, 10, 16)
		if err == nil && n == 0 && key != "admin.listen" {
			err = errors.New("port 0")
		}
	}
	if err == nil {
		return nil
	}
	if strings.Contains(addr, "@") {
		return configErrorf(key, "must be host:port (value not shown: it looks like it holds credentials)")
	}
	return configErrorf(key, "must be host:port with a numeric port, got %q", addr)
}

func checkConfigReadable(key, path string) error {
	fi, err := os.Stat(path)
	if err == nil && !fi.Mode().IsRegular() {
		return configErrorf(key, "%q is not a regular file", path)
	}
	if err == nil {
		var f *os.File
		if f, err = os.Open(path); err == nil {
			return f.Close()
		}
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return configErrorf(key, "cannot read %q: %v", path, err)
}

func checkConfigName(key, s string, limit int) *ConfigError {
	switch {
	case s == "":
		return configErrorf(key, "must not be empty")
	case len(s) > limit:
		return configErrorf(key, "%d bytes, limit %d", len(s), limit)
	case strings.IndexByte(s, 0) >= 0:
		return configErrorf(key, "contains a NUL byte")
	}
	return nil
}

// Redacted returns the configuration for logging, by dotted key: durations
// as strings, secrets as "***" ("" when unset), task.env values as "***";
// TLS file paths are shown, their contents never read.
func (c *Config) Redacted() map[string]any {
	out := make(map[string]any, len(configKeys))
	for _, k := range configKeys {
		switch p := k.field(c).(type) {
		case *configSecret:
			out[k.name] = p.redacted()
		case *time.Duration:
			out[k.name] = p.String()
		case *[]string:
			out[k.name] = slices.Clone(*p)
		case *map[string]string:
			m := make(map[string]string, len(*p))
			for name := range *p {
				m[name] = "***"
			}
			out[k.name] = m
		case *string:
			out[k.name] = *p
		case *int:
			out[k.name] = *p
		case *bool:
			out[k.name] = *p
		}
	}
	return out
}

// runFlags holds what the flags of "runner run" (and the pool subcommands)
// ask for: the file, and dotted keys set on the command line.
type runFlags struct {
	// Config is the -c/--config file, "" for none.
	Config string
	// Overrides maps dotted keys to raw values from --set and the
	// convenience flags; on the command line, the last one for a key wins.
	Overrides map[string]string
}

// newRunFlags returns a flag set (flag.ContinueOnError: Parse errors are
// usage errors) filling the returned runFlags.
func newRunFlags(name string) (*flag.FlagSet, *runFlags) {
	rf := &runFlags{Overrides: map[string]string{}}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&rf.Config, "c", "", "read the configuration from `FILE` (.yaml, .yml, .toml or .json)")
	fs.StringVar(&rf.Config, "config", "", "read the configuration from `FILE` (same as -c)")
	fs.Func("set", "set a config key, as `key=value` (repeatable; the value is written as in its RUNNER_* variable; beats the file and the environment)", func(s string) error {
		key, val, ok := strings.Cut(s, "=")
		if !ok {
			return errors.New("want key=value, such as worker.concurrency=8")
		}
		if _, known := configKeyByName[key]; !known {
			return fmt.Errorf("unknown key %q%s", key, configHint(key, configKeyNames()))
		}
		rf.Overrides[key] = val
		return nil
	})
	for _, cv := range []struct{ flag, key string }{
		{"redis-addr", "redis.addr"},
		{"mode", "mode"},
		{"concurrency", "worker.concurrency"},
		{"batch-id", "batch.id"},
		{"log-level", "log.level"},
		{"admin-listen", "admin.listen"},
	} {
		fs.Func(cv.flag, "set "+cv.key+" (same as --set "+cv.key+"=`VALUE`)", func(s string) error {
			rf.Overrides[cv.key] = s
			return nil
		})
	}
	return fs, rf
}
