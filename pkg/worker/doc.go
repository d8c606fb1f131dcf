// Package worker runs a task on items leased from an allocator while
// keeping each lease alive: the product's main job.
//
// A Pool runs Config.Concurrency workers under one errgroup. Each worker
// loops: acquire an item (any free item in loop mode; an item still pending
// in the batch in batch mode), start the lease's keep-alive, run the Task
// with a context, record the result, end the lease, repeat. The Task gets a
// Job with the item, its fencing token, the owner, the worker's number and
// the attempt. TaskFunc adapts a Go function; ExecTask runs a command in
// its own process group with the job in RUNNER_* environment variables.
//
// # A lost lease stops the task
//
// The task's context is cancelled with cause ErrLeaseLost when a refresh
// reports the lease lost (it expired, or someone else holds the item), or
// when no refresh has been confirmed for LeaseTTL - SafetyMargin since the
// last confirmed one was sent, measured on this process's monotonic clock.
//
// Why that is before anyone else can be granted the item: a refresh that
// succeeded ran on the Redis server after the worker sent it, and set the
// lock to expire LeaseTTL after it ran, by the server's clock. The server
// grants the item to someone else only after the lock expires, so no
// earlier than LeaseTTL after the send. The worker gives up LeaseTTL -
// SafetyMargin after the send by its own clock. As long as the two clocks'
// rates differ by less than SafetyMargin/LeaseTTL (20% with the defaults;
// real clocks drift by parts per million) and the process is not paused,
// the cancellation comes at least SafetyMargin before the expiry. No wall
// clock and no clock synchronisation is involved: only elapsed time on
// each side.
//
// Cancelling a context asks the task to stop; it does not stop it. An
// ExecTask sends SIGTERM to the task's process group at once and SIGKILL
// after its KillGrace, so its processes are gone before the lease can
// expire when KillGrace < SafetyMargin (New enforces this for an ExecTask,
// and the runner binary for its configuration).
// A Go TaskFunc must return promptly when its context ends.
//
// What no lease can do: a process that is paused (SIGSTOP, a long GC or VM
// pause, swapping) cannot cancel anything while paused, and its task may
// resume after another worker got the item. That is what the fencing
// token is for: pass it with every write, and have the store reject a
// token lower than one it has seen for the item.
//
// # Failures, cooldown, quarantine
//
// A task that returns an error, times out (Config.TaskTimeout) or panics
// (recovered) fails. Failures are counted per item beside the pool, so the
// count is fleet-wide. After the n-th failure in a row the item is held
// back from everyone for an exponential backoff with jitter and retried by
// whichever worker gets it next; after Config.MaxAttempts failures in a
// row it is quarantined for Config.Quarantine (loop mode) or recorded as
// failed (batch mode), and logged at warn. In loop mode a successful item
// rests for Config.Cooldown before anyone runs it again. Holding an item
// back uses the allocator's quarantine, which lives in Redis, so cooldowns
// and backoffs hold across the fleet.
//
// # Batches
//
// In batch mode the first runner to start creates the batch from the
// pool's members under Config.BatchID; every runner then takes pending
// items until none is left. A result is recorded only while its lease is
// current, so an item whose runner crashed is run again by another, and an
// item recorded done is never run again in that batch.
//
// A run's end and the next grant are one step (allocator Lease.Next), in
// both modes. In loop mode that is one round trip per run. In batch mode
// it is two: Finish records the result under the lease check, then Next
// ends the lease and grants an item still pending in the batch (drawn from
// its todo SET in the same step, so nothing needs checking after), with
// the item's failure count in the batch; a retry is only Next, which
// counts the failure and holds the item back. A worker samples the pending
// items itself, waiting between looks, only for its first item and when
// Next found none free: that is also how it sees the batch complete.
//
// # The fleet's registry and each item's history
//
// Every Pool registers itself beside the pool it serves while Run runs
// (Registry): its id, host, pid, Config.Version, mode, concurrency, when it
// started, the leases it holds, and its runs, failures and lost leases so
// far, renewed every Config.Heartbeat (one small write) and lasting three
// heartbeats, so a process that died is gone within three; Run leaves the
// registry when it returns. Store.Runners lists the live ones.
//
// Every run's outcome is kept as its item's last (RunHistory): success,
// failure, panic, timeout or lost lease, when by the store's clock, by
// which pool, the attempt, the error (with an exec task's exit status), and
// the last 20 lines (4 KiB) of stderr of the item's last failed run, for
// Config.HistoryRetain. The record is written in the step that records the
// run's result (Lease.Next's EndOptions.Record, Finish), so loop mode
// stays one round trip per run and batch mode two; only a lost lease or a
// run that ended while the pool shut down costs a write of its own. A
// record never hides a later run's: the later fencing token wins. A batch
// also keeps each failed item's last error (FailedItems).
//
// Neither grows with time: the registry holds the live processes and those
// that died in the last few heartbeats, and the history one record per
// item within its retention (see pkg/keyspace for the keys and how each is
// bounded).
//
// # Shutdown
//
// Cancelling Run's context stops acquiring; running tasks get
// Config.ShutdownGrace to finish, then are cancelled with cause
// ErrShutdown; each lease then ends as after any run: released so its
// item is free at once, or held back for a cooldown, retry backoff or
// quarantine as the run's result asks (a cancelled run is released and
// counts as no failure). Abort cancels running tasks at once.
package worker
