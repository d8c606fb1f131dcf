package worker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lockpool/lockpool/internal/history"
	"github.com/lockpool/lockpool/pkg/allocator"
)

// RunHistory keeps, beside the pool, each item's last outcome and the
// errors of a batch's failed items, for operators (pkg/keyspace's hist:*
// and batch:<id>:errors keys). A run's end records its
// outcome in the same step that records the result (Lease.Next in loop
// mode and for a batch retry, Finish for a batch result), so history costs
// no round trip of its own; RecordRun records the rest (a lost lease, a
// run that ended as the pool shut down).
//
// Bounds: one record per item that ran within its retention, and one
// stderr tail (4 KiB at most) per item whose last failure is within it;
// a batch's errors (1 KiB each) live and expire with the batch.
type RunHistory interface {
	// RecordRun records rec as item's last outcome, for the run with
	// fencing token token, unless a run with a higher token is recorded.
	RecordRun(ctx context.Context, item string, token int64, rec allocator.RunRecord) error
	// LastRun returns item's last recorded outcome within its retention,
	// with the stderr tail of its last failure within it; found is false
	// when there is none.
	LastRun(ctx context.Context, item string) (h ItemHistory, found bool, err error)
	// LastRuns is LastRun for up to 1,000 items at once (a page of an item
	// table), in one step, without the stderr tails (Stderr empty): the
	// items with a record within its retention, by item.
	LastRuns(ctx context.Context, items []string) (map[string]ItemHistory, error)
	// FailedItems pages through batch id's failed items with the error of
	// their last run: cursor "" starts, and next is "" after the last
	// page. A page has about n items (clamped to 1..1000; it may have
	// fewer, or none before the end); an item that stays failed for the
	// whole scan is returned at least once.
	FailedItems(ctx context.Context, id, cursor string, n int) (page []FailedItem, next string, err error)
}

// ItemHistory is an item's last recorded run.
type ItemHistory struct {
	Item string `json:"item"`
	// Outcome is how the run ended: OutcomeSuccess, OutcomeFailure,
	// OutcomePanic, OutcomeTimeout or OutcomeLeaseLost.
	Outcome Outcome `json:"outcome"`
	// At is when it was recorded, by the store's clock (the Redis
	// server's).
	At time.Time `json:"at"`
	// Runner is the Config.ID of the pool that ran it, Token the run's
	// fencing token.
	Runner string `json:"runner"`
	Token  int64  `json:"token"`
	// Attempts is the run's attempt: runs of the item since its last
	// success, this one included (so a failure's count in a row).
	Attempts int `json:"attempts"`
	// ExitStatus is the exit status of an exec task that exited non-zero,
	// -1 otherwise.
	ExitStatus int `json:"exit_status"`
	// Error is the run's error (its first 1 KiB), "" for a success.
	Error string `json:"error,omitempty"`
	// Stderr is the stderr tail (the last 20 lines, 4 KiB at most) of the
	// item's last failed run within the retention, which may be an earlier
	// run than this one; StderrAt and StderrToken say which.
	Stderr      string    `json:"stderr,omitempty"`
	StderrAt    time.Time `json:"stderr_at,omitzero"`
	StderrToken int64     `json:"stderr_token,omitempty"`
}

// FailedItem is an item that failed in a batch, with the error of its
// last run.
type FailedItem struct {
	Item  string `json:"item"`
	Error string `json:"error"`
}

// itemHistory builds an ItemHistory from the stored record, as visible at
// now, and the tail of the item's last failure (Stderr "" for none), which
// the caller found visible.
func itemHistory(item string, last history.Record, found bool, tail history.Record, now time.Time) (ItemHistory, bool) {
	if !found || !last.Visible(now) {
		return ItemHistory{}, false
	}
	h := ItemHistory{Item: item, Outcome: Outcome(last.Outcome), At: last.At, Runner: last.Runner, Token: last.Token,
		Attempts: last.Attempts, ExitStatus: last.ExitStatus, Error: last.Error}
	if tail.Stderr != "" {
		h.Stderr, h.StderrAt, h.StderrToken = tail.Stderr, tail.At, tail.Token
	}
	return h, true
}

// Registry is the fleet's live registry: every Pool registers itself
// beside the pool it serves, renews its registration every
// Config.Heartbeat and leaves when Run returns. A registration lasts three
// heartbeats, so a process that died (kill -9, a lost host) is gone from
// Runners within three heartbeats. Bounds: the registry holds the live
// processes and the registrations that expired since the last few
// heartbeats; none of its keys grows with the number of processes that
// ever ran.
type Registry interface {
	// Heartbeat registers r, or renews its registration, until ttl from
	// now by the store's clock. other is the Instance of another live
	// registration under r.ID that this one replaced ("" for none): two
	// processes with one Config.ID share one entry.
	Heartbeat(ctx context.Context, r Runner, ttl time.Duration) (other string, err error)
	// Leave removes the registration of id made by instance, if it is
	// still that instance's.
	Leave(ctx context.Context, id, instance string) error
	// Runners returns the live registrations (at most 1,000), by ID.
	Runners(ctx context.Context) ([]Runner, error)
	// Throughput returns the fleet's grants and finished runs per
	// ThroughputBucket over the last ThroughputWindow, oldest first, as
	// the heartbeats reported them (each heartbeat adds what its process
	// did since the one before, to the bucket of the heartbeat's time):
	// only the buckets with some, and empty when there are none.
	Throughput(ctx context.Context) ([]ThroughputPoint, error)
}

// The throughput series' resolution and span (Registry.Throughput).
const (
	ThroughputBucket = 10 * time.Second
	ThroughputWindow = time.Hour
)

// throughputSlots is how many buckets the window holds: the ring's size.
const throughputSlots = int64(ThroughputWindow / ThroughputBucket)

// throughputBucket is the number of the ThroughputBucket holding t.
func throughputBucket(t time.Time) int64 { return t.UnixMilli() / ThroughputBucket.Milliseconds() }

// throughputFirst is the number of the first bucket of the window ending
// at now.
func throughputFirst(now time.Time) int64 { return throughputBucket(now) - throughputSlots + 1 }

// sortThroughput orders points oldest first.
func sortThroughput(pts []ThroughputPoint) []ThroughputPoint {
	slices.SortFunc(pts, func(a, b ThroughputPoint) int { return a.At.Compare(b.At) })
	return pts
}

// ThroughputPoint is what the fleet did in one ThroughputBucket starting
// At (by the store's clock): leases granted and task runs finished.
type ThroughputPoint struct {
	At     time.Time `json:"at"`
	Grants int64     `json:"grants"`
	Runs   int64     `json:"runs"`
}

// Runner is a process of the fleet as its last heartbeat reported it.
type Runner struct {
	// ID is the pool's Config.ID; Instance is random per Pool, telling
	// apart processes that share an ID.
	ID       string `json:"id"`
	Instance string `json:"instance"`
	Host     string `json:"host"`
	PID      int    `json:"pid"`
	// Version is Config.Version: the program's version, "" when not set.
	Version string `json:"version,omitempty"`
	Mode    Mode   `json:"mode"`
	// Batch is the batch id in batch mode.
	Batch       string `json:"batch,omitempty"`
	Concurrency int    `json:"concurrency"`
	// Started is when the pool began to run, by its own clock.
	Started time.Time `json:"started"`
	// Held is how many leases it held at the heartbeat; Runs how many
	// task runs it has finished, Failures how many of them failed
	// (failure, panic, timeout), LeasesLost how many lost their lease.
	Held       int   `json:"held"`
	Runs       int64 `json:"runs"`
	Failures   int64 `json:"failures"`
	LeasesLost int64 `json:"leases_lost"`
	// Grants is how many leases it was granted; RunsPerSec how many runs
	// a second it finished between its two last heartbeats.
	Grants     int64   `json:"grants"`
	RunsPerSec float64 `json:"runs_per_s"`
	// OldestLeaseMS is the age, in ms, of the oldest lease it held at the
	// heartbeat (0 when it held none).
	OldestLeaseMS int64 `json:"oldest_lease_ms,omitempty"`
	// First marks a pool's first heartbeat of a Run: the store adds its
	// Grants and Runs whole to the fleet's throughput (later heartbeats
	// add what grew since the stored report, and a heartbeat that finds
	// no report of its instance, its registration having expired, adds
	// nothing). Not stored.
	First bool `json:"-"`
	// Beat is when the store received the last heartbeat, Expires when
	// the registration ends without another, both by the store's clock.
	Beat    time.Time `json:"beat,omitzero"`
	Expires time.Time `json:"expires,omitzero"`
}

// Limits of a registration.
const (
	// MaxRunnerID is the longest Runner.ID (Config.ID), in bytes.
	MaxRunnerID = MaxIDLen
	// maxRunners bounds what Runners returns.
	maxRunners = 1000
	// maxLastRuns bounds the items of one LastRuns.
	maxLastRuns = 1000
)

// checkItems validates the items of one LastRuns.
func checkItems(op string, items []string) error {
	if len(items) > maxLastRuns {
		return fmt.Errorf("worker: %s: %w: %d items, limit %d", op, ErrInvalidConfig, len(items), maxLastRuns)
	}
	for _, it := range items {
		if err := checkItem(op, it); err != nil {
			return err
		}
	}
	return nil
}

// checkRunner validates a registration before anything is written.
func checkRunner(op string, r Runner, ttl time.Duration) error {
	if err := checkRunnerID(op, r.ID); err != nil {
		return err
	}
	if ttl < time.Millisecond {
		return fmt.Errorf("worker: %s %q: %w: ttl %v (want >= 1ms)", op, r.ID, ErrInvalidConfig, ttl)
	}
	return nil
}

func checkRunnerID(op, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("worker: %s: %w: empty runner id", op, ErrInvalidConfig)
	case len(id) > MaxRunnerID:
		return fmt.Errorf("worker: %s: %w: runner id is %d bytes, limit %d", op, ErrInvalidConfig, len(id), MaxRunnerID)
	case strings.IndexByte(id, 0) >= 0:
		return fmt.Errorf("worker: %s %q: %w: runner id contains a NUL byte", op, id, ErrInvalidConfig)
	}
	return nil
}
