package main

// Validation: the runner checks what only it knows (Redis addresses and
// TLS files, log settings, the admin address); the settings the libraries
// take are checked by the libraries (lock.Config.Validate and ValidateKey,
// worker.Config.Validate and ValidateTask, allocator.Config.Validate),
// whose *FieldError names the Go field that configKeys maps back to its
// key.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// validate adds every problem of the merged configuration to probs; a key
// that already has one (it did not decode) is not checked again.
func (c *Config) validate(origin configOrigins, probs *problems) {
	add := func(e *ConfigError) {
		if e != nil && !probs.has(e.Field) {
			probs.add(e)
		}
	}
	for _, k := range configKeys {
		if k.zeroIsDefault && origin[k.name].set() && reflect0(k.field(c)) {
			add(configErrorf(k.name, "%s", zeroText(k.field(c))))
		}
	}
	for _, e := range c.checkRedis() {
		add(e)
	}
	add(c.checkItems())
	switch c.Log.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		add(configErrorf("log.level", `must be one of trace, debug, info, warn, error; got %q`, c.Log.Level))
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		add(configErrorf("log.format", `must be "text" or "json", got %q`, c.Log.Format))
	}
	for _, key := range []string{"log.task_stdout", "log.task_stderr"} {
		switch lvl := *configKeyByName[key].field(c).(*string); lvl {
		case "trace", "debug", "info", "warn", "error", "off":
		default:
			add(configErrorf(key, `must be one of trace, debug, info, warn, error, off; got %q`, lvl))
		}
	}
	if c.Admin.Listen != "" {
		add(checkConfigAddr("admin.listen", c.Admin.Listen))
	}
	// What the admin endpoint serves of the whole pool needs the endpoint,
	// and a pool in Redis.
	for _, f := range []struct {
		on         bool
		key, what  string
		embeddedNo string
	}{
		{c.Admin.PoolMetrics, "admin.pool_metrics", "the metrics are", "the embedded pool's runner already reports its own state"},
		{c.Admin.UI, "admin.ui", "the dashboard is", "the dashboard reads the pool from Redis (the embedded pool's runner reports its own state on /status)"},
	} {
		switch {
		case !f.on:
		case c.Admin.Listen == "":
			add(configErrorf(f.key, "needs admin.listen: %s served there", f.what))
		case c.embedded():
			add(configErrorf(f.key, "needs redis.addr: %s", f.embeddedNo))
		}
	}
	if c.UI.Listen != "" {
		add(checkConfigAddr("ui.listen", c.UI.Listen))
	}
	if c.Admin.PoolMetricsInterval < time.Second {
		add(configErrorf("admin.pool_metrics_interval", "must be at least 1s, got %q", c.Admin.PoolMetricsInterval.String()))
	}
	// The libraries' rules, on the settings they will run with.
	wc := c.workerConfig()
	errs := []error{c.lockConfig().Validate(), wc.Validate(), c.allocatorConfig().Validate()}
	if !c.skipTask {
		errs = append(errs, wc.ValidateTask(c.execTask()))
	}
	for _, e := range libraryProblems(errors.Join(errs...)) {
		add(e)
	}
}

// libraryProblems maps the *FieldError values of err to config problems.
func libraryProblems(err error) []*ConfigError {
	var out []*ConfigError
	for _, fe := range worker.FieldErrors(err) {
		key, ok := configKeyByLibField[fe.Field]
		if !ok {
			// A field the configuration does not set: a bug here.
			out = append(out, configErrorf("", "%v", fe))
			continue
		}
		out = append(out, &ConfigError{Field: key, Msg: configOneLine(libFieldNames.Replace(fe.Msg))})
	}
	return out
}

// libFieldNames rewrites the Go field names in a library's message
// ("at most LeaseTTL/2") into keys.
var libFieldNames = func() *strings.Replacer {
	var pairs []string
	fields := slices.Collect(mapsKeys(configKeyByLibField))
	// Longest first: "MaxBackoff" before "Backoff".
	slices.SortFunc(fields, func(a, b string) int { return len(b) - len(a) })
	for _, f := range fields {
		pairs = append(pairs, f, configKeyByLibField[f])
	}
	return strings.NewReplacer(pairs...)
}()

// reflect0 reports whether the value p points to is zero.
func reflect0(p any) bool {
	switch v := p.(type) {
	case *time.Duration:
		return *v == 0
	case *int:
		return *v == 0
	case *string:
		return *v == ""
	}
	return false
}

// zeroText says why a zero the user wrote is refused.
func zeroText(p any) string {
	switch v := p.(type) {
	case *time.Duration:
		return "must be > 0, got " + strconv.Quote(v.String())
	case *string:
		return "must not be empty"
	}
	return "must be > 0, got 0"
}

// checkRedis checks the redis section.
func (c *Config) checkRedis() []*ConfigError {
	r := &c.Redis
	var out []*ConfigError
	add := func(e *ConfigError) {
		if e != nil {
			out = append(out, e)
		}
	}
	if r.Addr != "" {
		add(checkConfigAddr("redis.addr", r.Addr))
		if r.Sentinel.Master != "" {
			add(configErrorf("redis.addr", "set together with redis.sentinel.master; use one or the other"))
		}
	}
	if r.DB < 0 {
		add(configErrorf("redis.db", "must be >= 0, got %d", r.DB))
	}
	if r.DialTimeout < 0 {
		add(configErrorf("redis.dial_timeout", "must be > 0, got %q", r.DialTimeout.String()))
	}
	tlsFiles := []struct{ key, path string }{
		{"redis.tls.ca_file", r.TLS.CAFile},
		{"redis.tls.cert_file", r.TLS.CertFile},
		{"redis.tls.key_file", r.TLS.KeyFile},
		{"redis.tls.server_name", r.TLS.ServerName},
	}
	for i, f := range tlsFiles {
		switch {
		case f.path == "":
		case !r.TLS.Enabled:
			add(configErrorf(f.key, "set but redis.tls.enabled is false; set redis.tls.enabled to true"))
		case i < 3:
			add(checkConfigReadable(f.key, f.path))
		}
	}
	if (r.TLS.CertFile == "") != (r.TLS.KeyFile == "") {
		if r.TLS.CertFile == "" {
			add(configErrorf("redis.tls.cert_file", "must be set with redis.tls.key_file"))
		} else {
			add(configErrorf("redis.tls.key_file", "must be set with redis.tls.cert_file"))
		}
	}
	switch {
	case r.Sentinel.Master != "" && len(r.Sentinel.Addrs) == 0:
		add(configErrorf("redis.sentinel.addrs", "must be set with redis.sentinel.master"))
	case r.Sentinel.Master == "" && len(r.Sentinel.Addrs) > 0:
		add(configErrorf("redis.sentinel.master", "must be set with redis.sentinel.addrs"))
	}
	for _, a := range r.Sentinel.Addrs {
		add(checkConfigAddr("redis.sentinel.addrs", a))
	}
	if len(r.Cluster.Addrs) > 0 {
		switch {
		case r.Addr != "" || r.Sentinel.Master != "":
			add(configErrorf("redis.cluster.addrs", "set together with redis.addr or redis.sentinel.master; use one of them"))
		case r.DB != 0:
			add(configErrorf("redis.db", "must be 0 on a redis cluster, got %d", r.DB))
		}
	}
	for _, a := range r.Cluster.Addrs {
		add(checkConfigAddr("redis.cluster.addrs", a))
	}
	return out
}

// checkItems checks pool.items as pkg/lock checks every key.
func (c *Config) checkItems() *ConfigError {
	for i, item := range c.Pool.Items {
		if err := lock.ValidateKey(item); err != nil {
			return configErrorf("pool.items", "element %d: %v", i, err)
		}
	}
	return nil
}

// redactEnv shows task.env's names, never its values.
func redactEnv(env []string) []string {
	out := make([]string, len(env))
	for i, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		out[i] = name + "=***"
	}
	return out
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

// configHint suggests the known name nearest a misspelt one.
func configHint(name string, known []string) string {
	if best := nearest(name, known, 3); best != "" {
		return fmt.Sprintf(" (did you mean %s?)", strconv.Quote(best))
	}
	return ""
}

// configEditDistance is the optimal string alignment distance: edits,
// with a swap of two neighbours ("lsit" for "list") counting as one.
func configEditDistance(a, b string) int {
	if len(a) > 300 || len(b) > 300 {
		return 1 << 30
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// checkConfigAddr checks a host:port with a numeric port. A value that
// looks like it holds credentials (user:pass@host) is not quoted back.
func checkConfigAddr(key, addr string) *ConfigError {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		var n uint64
		n, err = strconv.ParseUint(port, 10, 16)
		if err == nil && n == 0 && key != "admin.listen" && key != "ui.listen" {
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

func checkConfigReadable(key, path string) *ConfigError {
	fi, err := os.Stat(path)
	if err == nil && !fi.Mode().IsRegular() {
		return configErrorf(key, "%q is not a regular file", path)
	}
	if err == nil {
		var f *os.File
		if f, err = os.Open(path); err == nil {
			f.Close()
			return nil
		}
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return configErrorf(key, "cannot read %q: %v", path, err)
}

// Redacted returns the configuration for logging, by dotted key: durations
// as strings, secrets as "***" ("" when unset), task.env values as "NAME=***";
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
			if k.name == "task.env" {
				out[k.name] = redactEnv(*p)
			}
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
