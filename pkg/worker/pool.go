package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// Pool runs a Task on items leased from an allocator, with
// Config.Concurrency workers. Create it with New and start it with Run.
type Pool struct {
	cfg   Config
	alloc *allocator.Allocator
	store Store
	task  Task
	log   hclog.Logger
	obs   Observer

	// hard is the context tasks and keep-alives live under: cancelled with
	// cause ErrShutdown when the shutdown grace runs out or on Abort.
	hard       context.Context
	hardCancel context.CancelCauseFunc
	// stop ends acquiring; set by Run.
	stopMu sync.Mutex
	stop   context.CancelFunc
	ran    atomic.Bool

	// instance tells this pool's registration apart from another
	// process's with the same Config.ID (Runner.Instance).
	instance string

	mu      sync.Mutex
	workers []WorkerStatus
	held    int
	// crew is the running workers while Run runs (nil before and after):
	// SetConcurrency starts and stops workers through it.
	crew *crew
	// target is the number of workers wanted (Config.Concurrency, then
	// SetConcurrency's).
	target int
	// taskTimeout is Config.TaskTimeout, then SetTaskTimeout's (ns).
	taskTimeout atomic.Int64
	// failed and lost count runs that failed (failure, panic, timeout)
	// and that lost their lease; started is when Run began.
	failed, lost int64
	// grants counts the leases granted.
	grants  int64
	started time.Time
	// failingSince is when acquiring began to fail with errors (zero
	// while it works), failErr the latest of them.
	failingSince, failedAt time.Time
	failErr                error
}

// releaseTimeout bounds recording a result and releasing a lease, which
// run even while shutting down.
const releaseTimeout = 10 * time.Second

// New returns a pool that runs task on items from alloc, keeping its run
// state in store (use the store over the same pool as alloc).
func New(alloc *allocator.Allocator, store Store, task Task, cfg Config) (*Pool, error) {
	switch {
	case alloc == nil:
		return nil, fmt.Errorf("worker: New: %w: nil allocator", ErrInvalidConfig)
	case store == nil:
		return nil, fmt.Errorf("worker: New: %w: nil store", ErrInvalidConfig)
	case task == nil:
		return nil, fmt.Errorf("worker: New: %w: nil task", ErrInvalidConfig)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("worker: New: %w", err)
	}
	if err := cfg.ValidateTask(task); err != nil {
		return nil, fmt.Errorf("worker: New: %w", err)
	}
	hard, hardCancel := context.WithCancelCause(context.Background())
	p := &Pool{
		cfg: cfg, alloc: alloc, store: store, task: task,
		log: cfg.Logger, obs: cfg.Observer,
		hard: hard, hardCancel: hardCancel,
		workers:  make([]WorkerStatus, cfg.Concurrency),
		target:   cfg.Concurrency,
		instance: newInstance(),
	}
	p.taskTimeout.Store(int64(cfg.TaskTimeout))
	now := time.Now()
	for i := range p.workers {
		p.workers[i] = WorkerStatus{ID: i, State: StateIdle, Since: now}
	}
	return p, nil
}

// Config returns the pool's configuration with defaults filled in, and
// the concurrency and task timeout set since by SetConcurrency and
// SetTaskTimeout.
func (p *Pool) Config() Config {
	c := p.cfg
	p.mu.Lock()
	c.Concurrency = p.target
	p.mu.Unlock()
	c.TaskTimeout = time.Duration(p.taskTimeout.Load())
	return c
}

// SetConcurrency changes how many workers run tasks, while Run runs or
// before it starts: 1..MaxConcurrency, else an error wrapping
// ErrInvalidConfig. Raising it starts workers at once. Lowering it stops
// the workers above n as they finish: a running task is not interrupted,
// and its lease ends as usual (released, or held for its cooldown or
// backoff) instead of being handed its worker's next item. Leases held by
// the other workers are not touched.
func (p *Pool) SetConcurrency(n int) error {
	if n < 1 || n > MaxConcurrency {
		return fmt.Errorf("worker: SetConcurrency: %w", &FieldError{Field: "Concurrency", Msg: fmt.Sprintf("must be between 1 and %d, got %d", MaxConcurrency, n), Err: ErrInvalidConfig})
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.target
	p.target = n
	now := time.Now()
	for len(p.workers) < n {
		p.workers = append(p.workers, WorkerStatus{ID: len(p.workers), State: StateIdle, Since: now})
	}
	if p.crew == nil {
		return nil
	}
	for id := n; id < old; id++ {
		p.crew.retire(id)
	}
	for id := range n {
		p.crew.start(id)
	}
	return nil
}

// SetTaskTimeout changes Config.TaskTimeout (0: no limit) for the task
// runs that start from now on; a running task keeps the timeout it
// started with. A negative d is an error wrapping ErrInvalidConfig.
func (p *Pool) SetTaskTimeout(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("worker: SetTaskTimeout: %w", &FieldError{Field: "TaskTimeout", Msg: fmt.Sprintf("must not be negative, got %q", d.String()), Err: ErrInvalidConfig})
	}
	p.taskTimeout.Store(int64(d))
	return nil
}

// Run runs the workers until ctx ends or, in batch mode, the batch is
// finished. It can be called once.
//
// When ctx ends, the pool drains: no new item is acquired, running tasks
// get Config.ShutdownGrace to finish, then their contexts are cancelled
// with cause ErrShutdown; cancelled runs release their items at once, and
// finished ones end their leases as usual (released, or held back for a
// cooldown or backoff). Run then returns nil. Abort cancels running tasks
// at once.
//
// In batch mode Run returns nil when every item of the batch is done, or
// an error wrapping ErrBatchFailed when some exhausted their attempts.
// Errors that retrying cannot fix (a key of the wrong type, a closed
// allocator) stop the pool and are returned; Redis being unreachable is
// logged and retried with backoff.
func (p *Pool) Run(ctx context.Context) error {
	if !p.ran.CompareAndSwap(false, true) {
		return errors.New("worker: Run called twice")
	}
	p.mu.Lock()
	p.started = time.Now()
	p.mu.Unlock()
	if p.cfg.Heartbeat > 0 {
		// Registered while Run runs, tasks draining after a shutdown
		// included; out of the registry when it returns.
		defer p.register()()
	}
	parent := ctx
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	p.stopMu.Lock()
	p.stop = stop
	p.stopMu.Unlock()
	if p.hard.Err() != nil { // Abort before Run
		return nil
	}
	// A worker's fatal error ends gctx: the others then drain as on
	// shutdown.
	gctx, fail := context.WithCancel(ctx)
	defer fail()

	// Once gctx ends, running tasks have the grace period, then are
	// cancelled.
	drained := make(chan struct{})
	defer close(drained)
	go func() {
		select {
		case <-drained:
			return
		case <-gctx.Done():
		}
		if p.running() > 0 {
			p.log.Info("shutting down: acquiring no more items", "running", p.running(), "grace", p.cfg.ShutdownGrace)
		}
		t := time.NewTimer(p.cfg.ShutdownGrace)
		defer t.Stop()
		select {
		case <-drained:
		case <-t.C:
			if p.running() > 0 {
				p.log.Warn("shutdown grace over: cancelling running tasks", "running", p.running())
			}
			p.hardCancel(ErrShutdown)
		}
	}()

	var b *batchRun
	if p.cfg.Mode == ModeBatch {
		var err error
		if b, err = p.startBatch(gctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if b.last.Total == 0 {
			p.log.Warn("the pool is empty: the batch has nothing to do", "batch", b.id)
			return nil
		}
		if b.complete() {
			return p.finishBatch(b)
		}
	}

	c := newCrew(gctx, fail, &p.mu, func(ctx context.Context, id int) error { return p.work(ctx, id, b) })
	p.mu.Lock()
	p.crew = c
	for id := range p.target {
		c.start(id)
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.crew = nil
		p.mu.Unlock()
	}()
	progressDone := make(chan struct{})
	if b != nil && p.cfg.ProgressInterval > 0 {
		go func() {
			defer close(progressDone)
			b.report(gctx, p)
		}()
	} else {
		close(progressDone)
	}
	err := c.wait()
	stop()
	<-progressDone
	if err != nil {
		return err
	}
	if b != nil && parent.Err() == nil && p.hard.Err() == nil {
		return p.finishBatch(b)
	}
	return nil
}

// Abort cancels running tasks at once (cause ErrShutdown) and stops
// acquiring, e.g. on a second interrupt. Leases are still released.
func (p *Pool) Abort() {
	p.hardCancel(ErrShutdown)
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.stop != nil {
		p.stop()
	}
}

// Status returns every worker's state.
func (p *Pool) Status() []WorkerStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]WorkerStatus(nil), p.workers...)
}

// Health is nil while the pool can make progress. It reports an error
// when every attempt to acquire an item has failed for at least 3 seconds
// (Redis unreachable, refused commands, a cluster redirect loop), naming
// the latest, and until 6 seconds pass without a failed attempt (retries
// after errors are at most 5 seconds apart). Waiting for a free item, or
// for the quiet period after a Redis dataset discontinuity, is not a
// failure.
func (p *Pool) Health() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Failing now: the latest failure is more recent than the longest
	// retry backoff (5s) plus a margin; a worker blocked waiting for an
	// item reports nothing, and is not failing.
	if p.failingSince.IsZero() || time.Since(p.failingSince) < healthWindow || time.Since(p.failedAt) > maxRetryBackoff+time.Second {
		return nil
	}
	return fmt.Errorf("worker: acquiring has failed for %v: %w", time.Since(p.failingSince).Round(100*time.Millisecond), p.failErr)
}

// healthWindow is how long acquiring must fail before Health reports it.
const healthWindow = 3 * time.Second

// maxRetryBackoff caps the wait between acquire attempts after errors.
const maxRetryBackoff = 5 * time.Second

// acquired records the result of an acquire attempt for Health.
func (p *Pool) acquired(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if err == nil || now.Sub(p.failedAt) > maxRetryBackoff+time.Second {
		p.failingSince, p.failErr = time.Time{}, nil
	}
	if err == nil {
		return
	}
	if p.failingSince.IsZero() {
		p.failingSince = now
	}
	p.failedAt, p.failErr = now, err
}

// Held is how many leases the pool holds now.
func (p *Pool) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

func (p *Pool) running() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, w := range p.workers {
		if w.State == StateRunning {
			n++
		}
	}
	return n
}

func (p *Pool) setState(id int, s WorkerState, job *Job) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := &p.workers[id]
	w.State, w.Since = s, time.Now()
	w.Item, w.Token, w.Attempt = "", 0, 0
	if job != nil {
		w.Item, w.Token, w.Attempt = job.Item, job.Token, job.Attempt
	}
}

func (p *Pool) addHeld(d int, ran bool, id int) {
	p.mu.Lock()
	p.held += d
	n := p.held
	if ran {
		p.workers[id].Runs++
	}
	if d > 0 {
		p.grants++
		p.workers[id].LeasedAt = time.Now()
	} else {
		p.workers[id].LeasedAt = time.Time{}
	}
	p.mu.Unlock()
	p.obs.Held(n)
}

// work is one worker: acquire, run, record, release, until ctx ends or
// the batch is finished. A run's end and the next grant are one step
// (Lease.Next): in loop mode Acquire only runs when that found no free
// item; in batch mode the grant draws from the batch's pending items, and
// b.next (which samples, waits, and sees the batch complete) only runs
// when that found none free.
func (p *Pool) work(ctx context.Context, id int, b *batchRun) error {
	defer p.setState(id, StateStopped, nil)
	owner := p.cfg.ID + "/w" + strconv.Itoa(id)
	failures := 0
	var l *allocator.Lease // granted by the last run's end
	defer func() {
		if l != nil { // granted just as the pool began to stop
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			_ = l.Release(rctx)
			cancel()
		}
	}()
	for ctx.Err() == nil {
		if l == nil {
			p.setState(id, StateAcquiring, nil)
			var err error
			if b != nil {
				l, err = b.next(ctx, p, owner)
			} else {
				l, err = p.alloc.Acquire(ctx, owner, allocator.AcquireOptions{TTL: p.cfg.LeaseTTL})
			}
			switch {
			case err == nil:
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, errBatchComplete):
				return nil
			case fatal(err):
				p.obs.Acquired(false)
				p.acquired(err)
				return fmt.Errorf("worker %d: %w", id, err)
			default:
				p.obs.Acquired(false)
				p.acquired(err)
				failures++
				d := backoff(failures, 100*time.Millisecond, maxRetryBackoff)
				p.log.Warn("cannot acquire an item, retrying", "worker", id, "in", d.Round(time.Millisecond), "error", err)
				p.setState(id, StateBackoff, nil)
				sleep(ctx, d)
				continue
			}
			failures = 0
			p.obs.Acquired(true)
			p.acquired(nil)
			if ctx.Err() != nil {
				return nil // the deferred release ends l
			}
		}
		cur := l
		l = nil
		l = p.runLease(ctx, id, owner, cur, b)
	}
	return nil
}

// fatal reports errors that retrying cannot fix.
func fatal(err error) bool {
	return errors.Is(err, allocator.ErrClosed) || errors.Is(err, lock.ErrWrongType) ||
		errors.Is(err, allocator.ErrInvalidConfig) || errors.Is(err, allocator.ErrInvalidOwner) ||
		errors.Is(err, lock.ErrInvalidKey) || errors.Is(err, ErrInvalidBatch) || errors.Is(err, ErrBatchLost)
}

// runLease runs the task on one leased item and records the result. While
// ctx has not ended, it returns the next lease, granted in the step that
// ended this one (nil when none was free).
func (p *Pool) runLease(ctx context.Context, id int, owner string, l *allocator.Lease, b *batchRun) *allocator.Lease {
	p.addHeld(1, false, id)
	defer p.addHeld(-1, true, id)
	scope := b.scope()
	// Keep the lease alive first: everything after this may wait on Redis.
	ka, err := l.KeepAlive(p.hard, allocator.KeepAliveOptions{
		Interval:  p.cfg.RefreshInterval,
		Margin:    p.cfg.SafetyMargin,
		OnRefresh: p.obs.Refreshed,
	})
	if err != nil { // shutting down, or the lease is already gone
		p.finish(ctx, p.log.With("item", l.Item(), "worker", id), Job{Item: l.Item(), Token: l.Token(), Owner: owner, Worker: id, Lease: l}, nil, b, OutcomeCancelled, 0)
		return nil
	}
	// Lease.Next read the count in its step; other leases need a look.
	fails := l.Failures()
	if fails < 0 {
		rctx, cancel := context.WithTimeout(ka.Context(), releaseTimeout)
		fails, err = p.store.Failures(rctx, scope, l.Item())
		cancel()
		if err != nil {
			p.log.Warn("cannot read the item's failure count; counting from 0", "item", l.Item(), "error", err)
		}
	}
	job := Job{Item: l.Item(), Token: l.Token(), Owner: owner, Worker: id, Attempt: fails + 1, Lease: l}
	log := p.log.With("item", job.Item, "worker", id, "token", job.Token)

	taskCtx := ka.Context()
	if timeout := time.Duration(p.taskTimeout.Load()); timeout > 0 {
		var cancel context.CancelFunc
		taskCtx, cancel = context.WithTimeoutCause(taskCtx, timeout, ErrTaskTimeout)
		defer cancel()
	}
	p.setState(id, StateRunning, &job)
	log.Debug("task started", "attempt", job.Attempt)
	// Say so the moment the lease is lost, not only once the task has
	// stopped: a task may take up to its kill grace to die.
	taskDone := make(chan struct{})
	defer close(taskDone)
	go func() {
		select {
		case <-taskDone:
		case <-ka.Done():
			if cause := context.Cause(ka.Context()); errors.Is(cause, ErrLeaseLost) {
				log.Warn("lease lost: stopping the task", "cause", cause)
			}
		}
	}()
	start := time.Now()
	runErr := p.safeRun(taskCtx, job, log)
	took := time.Since(start)
	lost := errors.Is(context.Cause(ka.Context()), ErrLeaseLost)
	ka.Stop()
	p.setState(id, StateReleasing, &job)

	var outcome Outcome
	switch {
	case lost:
		outcome = OutcomeLeaseLost
	case runErr == nil:
		outcome = OutcomeSuccess
	case p.hard.Err() != nil:
		outcome = OutcomeCancelled
	case errors.Is(runErr, ErrTaskPanic):
		outcome = OutcomePanic
	case errors.Is(context.Cause(taskCtx), ErrTaskTimeout):
		outcome = OutcomeTimeout
	default:
		outcome = OutcomeFailure
	}
	p.obs.TaskDone(job, outcome, took)
	p.count(outcome)
	if lost {
		runErr = context.Cause(ka.Context())
	}
	return p.finish(ctx, log, job, runErr, b, outcome, took)
}

// safeRun runs the task, turning a panic into an error.
func (p *Pool) safeRun(ctx context.Context, job Job, log hclog.Logger) (err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("task panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: %v", ErrTaskPanic, r)
		}
	}()
	return p.task.Run(ctx, job)
}

// finish records the run's result and ends the lease: released, held for
// the cooldown or a retry backoff, or quarantined. While ctx has not ended,
// the end also grants the next item (Lease.Next; in batch mode one still
// pending in the batch), which finish returns (nil when none was free).
// A batch run that finished the item makes two round trips: Finish, which
// records it under the lease check, then Next; a retry makes one, Next,
// which counts the failure in the batch's failures HASH.
func (p *Pool) finish(ctx context.Context, log hclog.Logger, job Job, runErr error, b *batchRun, outcome Outcome, took time.Duration) *allocator.Lease {
	// Not ended with ctx (a stopping pool still records its runs), but with
	// its values: the caller's tracing and request-scoped values reach the
	// end step as they reach the grant.
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	l := job.Lease
	rec := p.runRecord(job, outcome, runErr)
	release := func() {
		if err := l.Release(ectx); errors.Is(err, allocator.ErrLeaseLost) {
			log.Warn("item not released: its lease was already lost", "error", err)
		} else if err != nil {
			log.Warn("cannot release the item; it comes back when its lease expires", "error", err)
		}
	}
	switch outcome {
	case OutcomeLeaseLost:
		p.obs.LeaseLost(job)
		log.Warn("lease lost: task stopped", "cause", runErr, "took", took.Round(time.Millisecond))
		// The guard may have given up while the server still held the
		// lease (Redis slow, not gone): free the item now rather than at
		// its expiry. Release is fenced, so this never frees another's.
		_ = l.Release(ectx)
		p.recordRun(ectx, log, job, rec)
		return nil
	case OutcomeCancelled:
		log.Info("task cancelled by shutdown; item released", "error", runErr)
		release()
		return nil
	case OutcomeSuccess:
		log.Info("task succeeded", "attempt", job.Attempt, "took", took.Round(time.Millisecond))
		if b != nil {
			p.record(ectx, log, b, l, true, rec)
			return p.end(ctx, ectx, log, job, allocator.EndOptions{}, b)
		}
		end := allocator.EndOptions{Hold: p.cfg.Cooldown, Record: rec}
		if job.Attempt > 1 {
			end.Count = allocator.CountClear
		}
		return p.end(ctx, ectx, log, job, end, nil)
	}
	// A failure: panic, timeout or error. The count read at the start is
	// the item's in this scope (only its holder changes it), so this is the
	// failure's number.
	n := job.Attempt
	if n < p.cfg.MaxAttempts {
		d := backoff(n, p.cfg.Backoff, p.cfg.MaxBackoff)
		log.Warn("task failed; retrying the item after a backoff", "outcome", outcome, "attempt", n, "max_attempts", p.cfg.MaxAttempts, "backoff", d.Round(time.Millisecond), "error", runErr)
		return p.end(ctx, ectx, log, job, allocator.EndOptions{Hold: d, Count: allocator.CountAdd, Record: rec}, b)
	}
	if b != nil {
		// Finish forgets the item's count with the result.
		log.Warn("task failed; item marked failed in the batch", "outcome", outcome, "attempts", n, "error", runErr)
		p.record(ectx, log, b, l, false, rec)
		return p.end(ctx, ectx, log, job, allocator.EndOptions{}, b)
	}
	log.Warn("task failed; item quarantined", "outcome", outcome, "attempts", n, "quarantine", p.cfg.Quarantine, "error", runErr)
	return p.end(ctx, ectx, log, job, allocator.EndOptions{Hold: p.cfg.Quarantine, Quarantine: true, Count: allocator.CountClear, Record: rec}, nil)
}

// end ends job's lease as end says, counting in b's scope (loop mode's
// when b is nil): while ctx has not ended, with Lease.Next, which grants
// the next item in the same step (in batch mode one pending in b);
// otherwise the count is changed in the store, then the item released or
// held back.
func (p *Pool) end(ctx, ectx context.Context, log hclog.Logger, job Job, end allocator.EndOptions, b *batchRun) *allocator.Lease {
	l := job.Lease
	lostMsg, failMsg := "item not released: its lease was already lost", "cannot release the item; it comes back when its lease expires"
	if end.Hold > 0 {
		lostMsg, failMsg = "item not held back: its lease was already lost", "cannot hold the item back; it comes back when its lease expires"
		// A jittered backoff under 1ms would be refused (holds are whole
		// milliseconds), leaving the item held until its lease expires.
		end.Hold = max(end.Hold, time.Millisecond)
	}
	endFailed := func(err error) {
		if errors.Is(err, allocator.ErrLeaseLost) {
			log.Warn(lostMsg, "error", err)
		} else {
			log.Warn(failMsg, "error", err)
		}
	}
	if ctx.Err() == nil {
		next, ended, err := l.Next(ectx, end, job.Owner, p.nextOptions(b))
		if ended != nil {
			endFailed(ended)
		}
		switch {
		case err == nil:
			p.obs.Acquired(true)
			p.acquired(nil)
			return next
		case !errors.Is(err, allocator.ErrNoFreeItem) && err != ended:
			log.Warn("cannot acquire the next item", "error", err)
		}
		return nil
	}
	// Ending without a grant: the history needs a write of its own
	// (fenced by the run's token, so it never hides a later run).
	p.recordRun(ectx, log, job, end.Record)
	var err error
	switch end.Count {
	case allocator.CountAdd:
		_, err = p.store.AddFailure(ectx, b.scope(), job.Item)
	case allocator.CountClear:
		err = p.store.ClearFailures(ectx, b.scope(), job.Item)
	}
	if err != nil {
		log.Warn("cannot update the item's failure count", "error", err)
	}
	switch {
	case end.Hold > 0 && end.Quarantine:
		err = l.Quarantine(ectx, end.Hold)
	case end.Hold > 0:
		err = l.Cooldown(ectx, end.Hold)
	default:
		err = l.Release(ectx)
	}
	if err != nil {
		endFailed(err)
	}
	return nil
}

// nextOptions are what Lease.Next grants at a run's end: any free item,
// counting in loop mode's failures; in batch mode an item still pending in
// b (its todo SET: the grant and "still pending" are one step, so no
// IsPending look is needed), counting in b's failures HASH.
func (p *Pool) nextOptions(b *batchRun) allocator.AcquireOptions {
	opts := allocator.AcquireOptions{TTL: p.cfg.LeaseTTL}
	if b != nil {
		k := p.alloc.Keys().Batch(b.id)
		opts.From, opts.Failures = k.Todo, k.Failures
	}
	return opts
}

func (p *Pool) record(ctx context.Context, log hclog.Logger, b *batchRun, l *allocator.Lease, ok bool, rec *allocator.RunRecord) {
	recorded, err := p.store.Finish(ctx, b.id, l, ok, p.cfg.BatchRetain, rec)
	switch {
	case err != nil:
		log.Warn("cannot record the result in the batch; the item will be run again", "error", err)
	case !recorded:
		log.Warn("result not recorded: the lease was no longer current; the item will be run again")
	}
}

// backoff is the n-th (from 1) exponential delay from base, capped, with
// jitter over its upper half so retries of many items spread out.
func backoff(n int, base, maxd time.Duration) time.Duration {
	d := base
	for i := 1; i < n && d < maxd; i++ {
		d *= 2
	}
	d = min(d, maxd)
	half := d / 2
	return half + rand.N(half+1)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
