package worker

import (
	"context"
	"time"

	"github.com/lockpool/lockpool/pkg/allocator"
)

// MaxBatchIDLen is the longest batch id, in bytes.
const MaxBatchIDLen = 200

// Store keeps the run state a fleet of workers shares beside the pool:
// consecutive failures per item, batches, each item's last outcome
// (RunHistory) and the fleet's live registry (Registry). RedisStore and
// MemoryStore implement it.
//
// A scope is "" for loop mode, or a batch id: failures counted in one
// batch do not carry into another.
type Store interface {
	// Failures returns the consecutive failures recorded for item.
	Failures(ctx context.Context, scope, item string) (int, error)
	// AddFailure records one more failure of item and returns the count.
	AddFailure(ctx context.Context, scope, item string) (int, error)
	// ClearFailures forgets item's failures.
	ClearFailures(ctx context.Context, scope, item string) error

	// StartBatch creates batch id from the pool's members at this moment,
	// unless it exists, and returns its progress. Items added to the pool
	// later are not part of it. An empty pool makes no batch: the progress
	// returned is complete with Total 0, and nothing is stored.
	StartBatch(ctx context.Context, id string) (Progress, error)
	// Pending returns up to n items of batch id that are neither done nor
	// failed, in random order; none when the batch is finished or does not
	// exist (check Progress to tell them apart).
	Pending(ctx context.Context, id string, n int) ([]string, error)
	// IsPending reports whether item is still to do in batch id.
	IsPending(ctx context.Context, id, item string) (bool, error)
	// Finish records item as done (ok) or failed in batch id, only while
	// lease is still the item's current lease. It reports whether it was
	// recorded. When the last pending item finishes, the batch's keys
	// expire after retain (kept forever when retain is 0). With rec, the
	// same step records the run in the item's history (see RunHistory)
	// and, for a failed item, rec.Error as its error in the batch
	// (FailedItems).
	Finish(ctx context.Context, id string, lease *allocator.Lease, ok bool, retain time.Duration, rec *allocator.RunRecord) (bool, error)
	// DropRemoved takes those of items that are pending in batch id but no
	// longer members of the pool out of the batch (and its total), so the
	// batch does not wait for items nobody can lease, and returns how many
	// it dropped. Finishing the batch this way expires it as Finish does.
	DropRemoved(ctx context.Context, id string, items []string, retain time.Duration) (int, error)
	// RetryFailed puts batch id's failed items back among its pending
	// items, forgetting their errors, and returns how many: the batch's
	// runners (or the next run of the batch) try them again. A finished
	// batch is running again. No batch, or none failed, returns 0.
	RetryFailed(ctx context.Context, id string) (int, error)
	// Progress returns batch id's counts; found is false when no such batch
	// exists.
	Progress(ctx context.Context, id string) (p Progress, found bool, err error)

	RunHistory
	Registry
}

// Progress is a batch's state.
type Progress struct {
	// Total is how many items the batch has.
	Total int64 `json:"total"`
	// Done and Failed count finished items.
	Done   int64 `json:"done"`
	Failed int64 `json:"failed"`
	// Started is when the batch was created, Finished when its last item
	// finished (zero while running), by the server's clock.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	// Rollbacks counts the discontinuities of the Redis dataset (a restart
	// from a snapshot, a failover that lost the last writes) the batch's
	// state went through, the last at RolledBack: items recorded done
	// shortly before one may be pending again, and then run again. Zero for
	// the memory store.
	Rollbacks  int64     `json:"rollbacks,omitempty"`
	RolledBack time.Time `json:"rolled_back,omitzero"`
}

// Pending is how many items are still to do.
func (p Progress) Pending() int64 { return p.Total - p.Done - p.Failed }

// Complete reports whether every item is done or failed.
func (p Progress) Complete() bool { return p.Total == p.Done+p.Failed }
