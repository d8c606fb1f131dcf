package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockpool/lockpool/pkg/allocator"
)

// registrationBeats is how many heartbeats a registration lasts.
const registrationBeats = 3

// leaveTimeout bounds leaving the registry when Run returns: a pool whose
// Redis is gone should not wait long for a step its registration's expiry
// does anyway.
const leaveTimeout = 2 * time.Second

// newInstance is a random id for one pool's registration.
func newInstance() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// register keeps the pool in the fleet's registry: a heartbeat now and
// every Config.Heartbeat, from a goroutine the returned stop ends and
// waits for before a last heartbeat (so the fleet's throughput counts the
// runs since the one before) and leaving the registry.
func (p *Pool) register() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	warned := false
	var last rate
	go func() {
		defer close(done)
		t := time.NewTicker(p.cfg.Heartbeat)
		defer t.Stop()
		for {
			p.beat(ctx, &warned, &last)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
		lctx, lcancel := context.WithTimeout(context.Background(), leaveTimeout)
		defer lcancel()
		p.beat(lctx, &warned, &last)
		if err := p.store.Leave(lctx, p.cfg.ID, p.instance); err != nil {
			p.log.Warn("cannot leave the runner registry; the entry expires on its own", "in", registrationBeats*p.cfg.Heartbeat, "error", err)
		}
	}
}

// rate is the runs a pool had finished at a heartbeat, and when; sent
// says whether a heartbeat of the pool's Run went through.
type rate struct {
	runs int64
	at   time.Time
	sent bool
}

// beat sends one heartbeat; a failure is logged, and the next one
// retries. warned says whether a clash of ids was logged already; last is
// the previous heartbeat's runs, for the rate of runs between the two.
func (p *Pool) beat(ctx context.Context, warned *bool, last *rate) {
	bctx, cancel := context.WithTimeout(ctx, max(p.cfg.Heartbeat, time.Second))
	defer cancel()
	r, now := p.Runner(), time.Now()
	if !last.at.IsZero() {
		r.RunsPerSec = float64(r.Runs-last.runs) / now.Sub(last.at).Seconds()
	}
	// Until one heartbeat went through, each is the first: its counts
	// (what the pool did before it) go to the throughput whole.
	r.First = !last.sent
	*last = rate{runs: r.Runs, at: now, sent: last.sent}
	other, err := p.store.Heartbeat(bctx, r, registrationBeats*p.cfg.Heartbeat)
	last.sent = last.sent || err == nil
	switch {
	case err != nil && ctx.Err() == nil:
		p.log.Warn("cannot renew the runner registration", "error", err)
	case other != "" && !*warned:
		*warned = true
		p.log.Warn("another live process registered under this pool's id: the registry shows one of the two; give each process its own id", "id", p.cfg.ID)
	}
}

// Runner is what the pool reports of itself in the fleet's registry.
func (p *Pool) Runner() Runner {
	host, _ := os.Hostname()
	r := Runner{ID: p.cfg.ID, Instance: p.instance, Host: host, PID: os.Getpid(), Version: p.cfg.Version,
		Mode: p.cfg.Mode, Concurrency: p.cfg.Concurrency}
	if p.cfg.Mode == ModeBatch {
		r.Batch = p.cfg.BatchID
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r.Started, r.Held, r.Failures, r.LeasesLost, r.Grants = p.started, p.held, p.failed, p.lost, p.grants
	now := time.Now()
	for _, w := range p.workers {
		r.Runs += w.Runs
		if !w.LeasedAt.IsZero() {
			r.OldestLeaseMS = max(r.OldestLeaseMS, now.Sub(w.LeasedAt).Milliseconds())
		}
	}
	return r
}

// count counts a run's outcome for the registry.
func (p *Pool) count(o Outcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch o {
	case OutcomeFailure, OutcomePanic, OutcomeTimeout:
		p.failed++
	case OutcomeLeaseLost:
		p.lost++
	}
}

// runRecord is the history record of a run that ended with outcome, nil
// when the pool keeps no history or the run was cancelled by shutdown
// (not an outcome of the item).
func (p *Pool) runRecord(job Job, outcome Outcome, runErr error) *allocator.RunRecord {
	if p.cfg.HistoryRetain < 0 || outcome == OutcomeCancelled {
		return nil
	}
	r := &allocator.RunRecord{Outcome: string(outcome), Attempts: job.Attempt, Runner: p.cfg.ID, ExitStatus: -1, Retain: p.cfg.HistoryRetain}
	if outcome == OutcomeSuccess || runErr == nil {
		return r
	}
	r.Error = runErr.Error()
	if ee, ok := errors.AsType[*ExecError](runErr); ok {
		r.ExitStatus, r.Stderr = ee.Status, ee.Stderr
	}
	return r
}

// recordRun records rec in the item's history with a write of its own,
// for runs whose end records nothing (a lost lease, an end while the pool
// shuts down).
func (p *Pool) recordRun(ctx context.Context, log hclog.Logger, job Job, rec *allocator.RunRecord) {
	if rec == nil {
		return
	}
	if err := p.store.RecordRun(ctx, job.Item, job.Token, *rec); err != nil {
		log.Warn("cannot record the run in the item's history", "error", err)
	}
}
