package worker

import "time"

// Outcome is how one task run ended.
type Outcome string

// Outcomes of a task run.
const (
	// OutcomeSuccess: the task returned nil.
	OutcomeSuccess Outcome = "success"
	// OutcomeFailure: the task returned an error (an exec task exited
	// non-zero), or it timed out.
	OutcomeFailure Outcome = "failure"
	// OutcomePanic: the task panicked; counted as a failure.
	OutcomePanic Outcome = "panic"
	// OutcomeTimeout: the task ran past Config.TaskTimeout; counted as a
	// failure.
	OutcomeTimeout Outcome = "timeout"
	// OutcomeLeaseLost: the lease was lost and the task was stopped.
	OutcomeLeaseLost Outcome = "lease_lost"
	// OutcomeCancelled: the pool shut down before the task finished.
	OutcomeCancelled Outcome = "cancelled"
)

// Observer receives the pool's events, e.g. to export metrics. Methods are
// called from worker goroutines and must be safe for concurrent use and
// not block. Embed NopObserver to implement only some.
type Observer interface {
	// Acquired: a worker got a lease (ok) or an acquire attempt failed
	// with an error other than "no free item".
	Acquired(ok bool)
	// Refreshed: a keep-alive refresh ran; err is nil when it extended
	// the lease.
	Refreshed(err error)
	// LeaseLost: a lease was lost while its task ran.
	LeaseLost(job Job)
	// TaskDone: a task run ended.
	TaskDone(job Job, outcome Outcome, took time.Duration)
	// Held: the number of leases this pool holds changed to n.
	Held(n int)
}

// NopObserver ignores every event.
type NopObserver struct{}

func (NopObserver) Acquired(bool)                        {}
func (NopObserver) Refreshed(error)                      {}
func (NopObserver) LeaseLost(Job)                        {}
func (NopObserver) TaskDone(Job, Outcome, time.Duration) {}
func (NopObserver) Held(int)                             {}

// WorkerState is what a worker is doing.
type WorkerState string

// Worker states.
const (
	StateIdle      WorkerState = "idle"      // not started or finished
	StateAcquiring WorkerState = "acquiring" // waiting for an item
	StateRunning   WorkerState = "running"   // running the task
	StateReleasing WorkerState = "releasing" // recording the result, releasing
	StateBackoff   WorkerState = "backoff"   // waiting after an error
	StateStopped   WorkerState = "stopped"
)

// WorkerStatus is one worker's state, for /status.
type WorkerStatus struct {
	ID      int         `json:"id"`
	State   WorkerState `json:"state"`
	Item    string      `json:"item,omitempty"`
	Token   int64       `json:"token,omitempty"`
	Attempt int         `json:"attempt,omitempty"`
	Since   time.Time   `json:"since"`
	Runs    int64       `json:"runs"`
	// LeasedAt is when the worker was granted the lease it holds (zero
	// when it holds none).
	LeasedAt time.Time `json:"leased_at,omitzero"`
}
