package worker

import (
	"context"
	"errors"

	"github.com/lockpool/lockpool/pkg/allocator"
)

// Sentinel errors. Returned errors wrap them with context; check with
// errors.Is.
var (
	// ErrLeaseLost is the cause of a task's context when its item's lease
	// was lost (a refresh said so, or none succeeded in time). It is
	// allocator.ErrLeaseLost, so either name matches.
	ErrLeaseLost = allocator.ErrLeaseLost
	// ErrShutdown is the cause of a task's context when the pool stopped
	// before the task finished: the shutdown grace ran out, or Abort.
	ErrShutdown = errors.New("worker: shutting down")
	// ErrTaskTimeout is the cause of a task's context when it ran longer
	// than Config.TaskTimeout.
	ErrTaskTimeout = errors.New("worker: task timed out")
	// ErrTaskPanic wraps the value a task panicked with.
	ErrTaskPanic = errors.New("worker: task panicked")
	// ErrTaskFailed: an exec task exited with a non-zero status or was
	// killed by a signal; the error names the code or signal.
	ErrTaskFailed = errors.New("worker: task failed")
	// ErrSupervisorDied: the exec supervisor (ExecTask.Wrapper) died
	// while it ran the command, which was killed with it; an ExecTask's
	// error wraps it with ErrTaskFailed. The next task starts a new
	// supervisor.
	ErrSupervisorDied = errors.New("worker: exec supervisor died")
	// ErrInvalidConfig: New or a task was given a bad setting.
	ErrInvalidConfig = errors.New("worker: invalid config")
	// ErrInvalidBatch: a batch id is empty, too long, or has a NUL byte.
	ErrInvalidBatch = errors.New("worker: invalid batch id")
	// ErrBatchFailed: the batch finished with items that exhausted their
	// attempts. Pool.Run returns it (wrapped with the counts).
	ErrBatchFailed = errors.New("worker: batch finished with failed items")
	// ErrBatchLost: the batch's state vanished from the store while it
	// ran (a Redis restart without persistence, or its keys deleted), so
	// which items are done is unknown. Pool.Run returns it.
	ErrBatchLost = errors.New("worker: batch state lost")
)

// Job is one run of the task on one leased item.
type Job struct {
	// Item is the pool item the task works on.
	Item string
	// Token is the lease's fencing token: strictly increasing per pool.
	// Pass it with every write the task makes so that writes of a holder
	// whose lease has passed can be rejected.
	Token int64
	// Owner is the lease owner, "<runner id>/w<worker>".
	Owner string
	// Worker is the worker's number in its pool, from 0.
	Worker int
	// Attempt counts runs of this item since its last success, from 1,
	// fleet-wide (kept beside the pool).
	Attempt int
	// Lease is the lease the job runs under. Tasks need not touch it: the
	// worker keeps it alive and releases it.
	Lease *allocator.Lease
}

// Task runs the work for one item. Run must return when ctx ends;
// context.Cause(ctx) then tells why: ErrLeaseLost, ErrShutdown or
// ErrTaskTimeout. A nil error is success; any other error or a panic is a
// failure that is retried (Config.MaxAttempts).
type Task interface {
	Run(ctx context.Context, job Job) error
}

// TaskFunc adapts a function to Task.
type TaskFunc func(ctx context.Context, job Job) error

// Run calls f.
func (f TaskFunc) Run(ctx context.Context, job Job) error { return f(ctx, job) }
