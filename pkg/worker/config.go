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

// WithDefaults returns c with every zero field set to its documented
// default (RefreshInterval and SafetyMargin from LeaseTTL, ID from the
// host name and process id). New applies it; a program can use it to show
// the settings a Pool will run with.
func (c Config) WithDefaults() Config {
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

// Validate reports every bad setting of c, with the defaults filled in,
// as *FieldError values joined with errors.Join (see FieldErrors); each
// wraps ErrInvalidConfig, or ErrInvalidBatch for BatchID. New calls it.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var p fieldProblems
	if c.Mode != ModeLoop && c.Mode != ModeBatch {
		p.add("Mode", `must be "loop" or "batch", got %q`, c.Mode)
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		p.add("Concurrency", "must be between 1 and %d, got %d", MaxConcurrency, c.Concurrency)
	}
	if len(c.ID) > MaxIDLen || strings.ContainsAny(c.ID, "\x00\n\r") {
		p.add("ID", "must be at most %d bytes without a NUL byte or newline, got %d bytes", MaxIDLen, len(c.ID))
	}
	if c.LeaseTTL < MinLeaseTTL {
		p.add("LeaseTTL", "must be at least %v, got %q", MinLeaseTTL, c.LeaseTTL.String())
	} else {
		if c.RefreshInterval <= 0 || c.RefreshInterval > c.LeaseTTL/2 {
			p.add("RefreshInterval", "must be > 0 and at most LeaseTTL/2 (%v), got %q", c.LeaseTTL/2, c.RefreshInterval.String())
		}
		if c.SafetyMargin <= 0 || c.LeaseTTL-c.SafetyMargin <= c.RefreshInterval {
			p.add("SafetyMargin", "must be > 0 and below LeaseTTL - RefreshInterval (%v), got %q", c.LeaseTTL-c.RefreshInterval, c.SafetyMargin.String())
		}
	}
	for _, d := range []struct {
		field  string
		v, min time.Duration
	}{
		{"Cooldown", c.Cooldown, 0},
		{"Backoff", c.Backoff, time.Millisecond},
		{"Quarantine", c.Quarantine, time.Millisecond},
		{"TaskTimeout", c.TaskTimeout, 0},
		{"ShutdownGrace", c.ShutdownGrace, 0},
		{"BatchRetain", c.BatchRetain, time.Millisecond},
		{"ProgressInterval", c.ProgressInterval, 0},
	} {
		if d.v < d.min {
			p.add(d.field, "must be at least %v, got %q", d.min, d.v.String())
		}
	}
	if c.MaxAttempts < 1 {
		p.add("MaxAttempts", "must be at least 1, got %d", c.MaxAttempts)
	}
	if c.MaxBackoff < c.Backoff {
		p.add("MaxBackoff", "must be at least Backoff (%v), got %q", c.Backoff, c.MaxBackoff.String())
	}
	if c.Heartbeat > 0 && c.Heartbeat < 10*time.Millisecond {
		p.add("Heartbeat", "must be at least 10ms, or -1 for none, got %q", c.Heartbeat.String())
	}
	if c.HistoryRetain > 0 && c.HistoryRetain < time.Millisecond {
		p.add("HistoryRetain", "must be at least 1ms, or -1 for none, got %q", c.HistoryRetain.String())
	}
	if len(c.Version) > maxVersion || strings.ContainsAny(c.Version, "\x00\n\r") {
		p.add("Version", "must be at most %d bytes without a NUL byte or newline, got %q", maxVersion, history.Head(c.Version, 40))
	}
	if err := ValidateBatchID(c.BatchID); err != nil {
		p = append(p, &FieldError{Field: "BatchID", Msg: "must be 1 to " + strconv.Itoa(MaxBatchIDLen) + " bytes without a NUL byte or newline: " + strings.TrimPrefix(err.Error(), ErrInvalidBatch.Error()+": "), Err: ErrInvalidBatch})
	}
	return p.err()
}

// ValidateTask reports, as Validate does, a task that cannot run safely
// under c: an ExecTask's own bad settings (ExecTask.Validate), and a
// KillGrace not below c's SafetyMargin (field "ExecTask.KillGrace"), which
// would let a task whose lease is lost outlive the lease. New calls it.
func (c Config) ValidateTask(task Task) error {
	c = c.WithDefaults()
	var p fieldProblems
	if v, ok := task.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			p = append(p, err)
		}
	}
	// Cancelling only asks a task to stop: an exec task must be killed
	// before a lost lease can expire (see the package comment).
	if et, ok := task.(*ExecTask); ok && et.KillGrace >= 0 && et.killGrace() >= c.SafetyMargin {
		p.add("ExecTask.KillGrace", "must be below SafetyMargin (%v) so that a task whose lease is lost is killed before the lease can expire, got %q", c.SafetyMargin, et.killGrace().String())
	}
	return p.err()
}

// Limits of Config, checked by Validate.
const (
	// MaxConcurrency is the most workers a Pool runs.
	MaxConcurrency = 10000
	// MaxIDLen is the longest Config.ID, leaving room for "/w<worker>"
	// in an allocator owner (allocator.MaxOwnerLen).
	MaxIDLen = 1000
	// MinLeaseTTL is the shortest Config.LeaseTTL.
	MinLeaseTTL = 10 * time.Millisecond
)

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
