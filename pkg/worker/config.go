package worker

import (
	"cmp"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockpool/lockpool/internal/history"
)

// maxVersion bounds Config.Version.
const maxVersion = 128

// Mode is how a pool chooses work.
type Mode string

const (
	// ModeLoop serves forever: any free item, again and again, each no
	// sooner than Config.Cooldown after its last run finished.
	ModeLoop Mode = "loop"
	// ModeBatch runs every item of the pool successfully once, fleet-wide,
	// then Run returns.
	ModeBatch Mode = "batch"
)

// Config configures a Pool. Zero values mean the defaults.
type Config struct {
	// Mode is ModeLoop (default) or ModeBatch.
	Mode Mode
	// Concurrency is how many workers run tasks at once. Default 1.
	Concurrency int
	// ID names this pool in lease owners ("<ID>/w<worker>"). Default
	// "<hostname>:<pid>".
	ID string
	// LeaseTTL is each lease's time to live. Default 30s.
	LeaseTTL time.Duration
	// RefreshInterval is how often a held lease is refreshed; at most
	// LeaseTTL/2. Default LeaseTTL/3.
	RefreshInterval time.Duration
	// SafetyMargin: a task is stopped when no refresh has been confirmed
	// for LeaseTTL - SafetyMargin, so at least SafetyMargin before its
	// lease could expire. LeaseTTL - SafetyMargin must exceed
	// RefreshInterval, or one slow refresh would stop the task. Default
	// LeaseTTL/5.
	SafetyMargin time.Duration
	// Cooldown is how long an item rests after a run before anyone runs it
	// again (loop mode). Default 0.
	Cooldown time.Duration
	// MaxAttempts is how many failures in a row an item may have before
	// it is quarantined (loop mode) or reported failed (batch mode).
	// Default 3.
	MaxAttempts int
	// Backoff is the base delay before a failed item is retried: the
	// n-th failure waits Backoff * 2^(n-1), capped at MaxBackoff, with
	// full jitter in its upper half. Default 1s.
	Backoff time.Duration
	// MaxBackoff caps the retry delay. Default 1m.
	MaxBackoff time.Duration
	// Quarantine is how long an item that exhausted MaxAttempts is kept
	// from everyone (loop mode). Default 10m.
	Quarantine time.Duration
	// TaskTimeout bounds one task run; 0 means no limit.
	TaskTimeout time.Duration
	// ShutdownGrace is how long running tasks may finish after the Run
	// context ends before they are cancelled. Default 30s.
	ShutdownGrace time.Duration
	// BatchID names the batch (batch mode). Default "default".
	BatchID string
	// BatchRetain is how long a finished batch's state is kept. Default
	// 24h.
	BatchRetain time.Duration
	// ProgressInterval is how often batch progress is logged. Default 10s.
	ProgressInterval time.Duration
	// Version is the program's version, shown in the fleet's registry
	// (Registry); at most 128 bytes. Default "".
	Version string
	// Heartbeat is how often the pool renews its registration in the
	// fleet's registry (Registry) while Run runs. A registration lasts
	// three heartbeats, so a process that died is gone from the registry
	// within three. Each heartbeat is one small write. Default 5s; -1 (any
	// negative value) keeps the pool out of the registry.
	Heartbeat time.Duration
	// HistoryRetain is how long an item's last outcome, and the stderr
	// tail of its last failure, are kept (RunHistory). Recording them
	// costs no round trip: it rides in the step that ends the run. Default
	// 7 days; -1 (any negative value) records no history.
	HistoryRetain time.Duration
	// Logger receives the pool's logs. Default hclog.NewNullLogger().
	Logger hclog.Logger
	// Observer receives events for metrics. Default NopObserver.
	Observer Observer
}

func (c Config) withDefaults() Config {
	c.Mode = cmp.Or(c.Mode, ModeLoop)
	c.Concurrency = cmp.Or(c.Concurrency, 1)
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = cmp.Or(host, "localhost") + ":" + strconv.Itoa(os.Getpid())
	}
	c.LeaseTTL = cmp.Or(c.LeaseTTL, 30*time.Second)
	c.RefreshInterval = cmp.Or(c.RefreshInterval, c.LeaseTTL/3)
	c.SafetyMargin = cmp.Or(c.SafetyMargin, c.LeaseTTL/5)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, 3)
	c.Backoff = cmp.Or(c.Backoff, time.Second)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, time.Minute)
	c.Quarantine = cmp.Or(c.Quarantine, 10*time.Minute)
	c.ShutdownGrace = cmp.Or(c.ShutdownGrace, 30*time.Second)
	c.BatchID = cmp.Or(c.BatchID, "default")
	c.BatchRetain = cmp.Or(c.BatchRetain, 24*time.Hour)
	c.ProgressInterval = cmp.Or(c.ProgressInterval, 10*time.Second)
	c.Heartbeat = cmp.Or(c.Heartbeat, 5*time.Second)
	c.HistoryRetain = cmp.Or(c.HistoryRetain, 7*24*time.Hour)
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
	return c
}

func (c Config) validate() error {
	bad := func(field string, v any, want string) error {
		return fmt.Errorf("%w: %s %v (want %s)", ErrInvalidConfig, field, v, want)
	}
	switch {
	case c.Mode != ModeLoop && c.Mode != ModeBatch:
		return bad("Mode", c.Mode, `"loop" or "batch"`)
	case c.Concurrency < 1 || c.Concurrency > 10000:
		return bad("Concurrency", c.Concurrency, "1..10000")
	case c.LeaseTTL < 10*time.Millisecond:
		return bad("LeaseTTL", c.LeaseTTL, ">= 10ms")
	case c.RefreshInterval <= 0 || c.RefreshInterval > c.LeaseTTL/2:
		return bad("RefreshInterval", c.RefreshInterval, fmt.Sprintf("> 0 and <= LeaseTTL/2 = %v", c.LeaseTTL/2))
	case c.SafetyMargin <= 0 || c.LeaseTTL-c.SafetyMargin <= c.RefreshInterval:
		return bad("SafetyMargin", c.SafetyMargin, fmt.Sprintf("> 0 and < LeaseTTL - RefreshInterval = %v", c.LeaseTTL-c.RefreshInterval))
	case c.Cooldown < 0:
		return bad("Cooldown", c.Cooldown, ">= 0")
	case c.MaxAttempts < 1:
		return bad("MaxAttempts", c.MaxAttempts, ">= 1")
	case c.Backoff < time.Millisecond:
		return bad("Backoff", c.Backoff, ">= 1ms")
	case c.MaxBackoff < c.Backoff:
		return bad("MaxBackoff", c.MaxBackoff, ">= Backoff")
	case c.Quarantine < time.Millisecond:
		return bad("Quarantine", c.Quarantine, ">= 1ms")
	case c.TaskTimeout < 0:
		return bad("TaskTimeout", c.TaskTimeout, ">= 0")
	case c.ShutdownGrace < 0:
		return bad("ShutdownGrace", c.ShutdownGrace, ">= 0")
	case c.ProgressInterval < 0:
		return bad("ProgressInterval", c.ProgressInterval, ">= 0")
	case c.Heartbeat > 0 && c.Heartbeat < 10*time.Millisecond:
		return bad("Heartbeat", c.Heartbeat, ">= 10ms, or -1 for none")
	case c.HistoryRetain > 0 && c.HistoryRetain < time.Millisecond:
		return bad("HistoryRetain", c.HistoryRetain, ">= 1ms, or -1 for none")
	case len(c.Version) > maxVersion || strings.ContainsAny(c.Version, "\x00\n\r"):
		return fmt.Errorf("%w: Version %q (want at most %d bytes, no NUL byte or newline)", ErrInvalidConfig, history.Head(c.Version, 40), maxVersion)
	case len(c.ID) > MaxRunnerID || strings.IndexByte(c.ID, 0) >= 0:
		return fmt.Errorf("%w: ID %q (want at most %d bytes, no NUL byte)", ErrInvalidConfig, history.Head(c.ID, 40), MaxRunnerID)
	}
	return ValidateBatchID(c.BatchID)
}

// ValidateBatchID checks a batch id: 1 to MaxBatchIDLen bytes, no NUL byte
// or newline.
func ValidateBatchID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrInvalidBatch)
	case len(id) > MaxBatchIDLen:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrInvalidBatch, len(id), MaxBatchIDLen)
	case strings.ContainsAny(id, "\x00\n\r"):
		return fmt.Errorf("%w: %q contains a NUL byte or newline", ErrInvalidBatch, id)
	}
	return nil
}
