package allocator

import (
	"time"

	"github.com/lockpool/lockpool/internal/history"
)

// RunRecord is how the run under a lease ended, for the item's history
// (pkg/worker reads it: Store.History). EndOptions.Record writes it in
// Lease.Next's step, only while the lease is current, and never over the
// record of a later run of the item (a higher fencing token).
type RunRecord struct {
	// Outcome is pkg/worker's Outcome ("success", "failure", "timeout",
	// "panic", "lease_lost").
	Outcome string
	// Attempts is the run's attempt: runs of the item since its last
	// success, this one included.
	Attempts int
	// Runner is the id of the process that ran it.
	Runner string
	// ExitStatus is the exit status of an exec task that exited, -1
	// otherwise.
	ExitStatus int
	// Error is the run's error, "" for a success; its first 1 KiB is
	// kept. Stderr is the failed run's stderr tail, "" to keep the tail
	// of an earlier failure; its last 4 KiB are kept.
	Error, Stderr string
	// Retain is how long the record (and tail) is kept; at least 1ms.
	Retain time.Duration
}

// historyArgs are next.lua's history ARGV for r: none (”) when r is nil.
func historyArgs(l *Lease, r *RunRecord) []any {
	if r == nil {
		return []any{"", l.token, "", 0}
	}
	rec, tail, retain := history.Entry(*r).Args()
	return []any{rec, l.token, tail, retain}
}

// writeHistory is the memory twin of next.lua's history(...) call.
func (s *memoryStore) writeHistory(l *Lease, r *RunRecord) {
	if r != nil {
		history.Of(s.pool, s.names().History()).Write(l.item, l.token, history.Entry(*r), time.Now())
	}
}
