package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/lockpool/lockpool/pkg/allocator"
)

// errBatchComplete tells a worker that nothing is left to do.
var errBatchComplete = errors.New("worker: batch complete")

// sampleSize is how many pending items a worker looks at per try.
const sampleSize = 16

// batchRun is one pool's view of a fleet-wide batch.
type batchRun struct {
	id string
	// first is the first progress this pool saw, and when: the rate is
	// measured from it.
	first   Progress
	firstAt time.Time
	last    Progress
}

func (b *batchRun) complete() bool { return b.last.Complete() }

// scope is the Store scope of failure counts: the batch id, or "" for
// loop mode (b nil).
func (b *batchRun) scope() string {
	if b == nil {
		return ""
	}
	return b.id
}

// startBatch creates the batch or joins it, retrying while the store is
// unreachable.
func (p *Pool) startBatch(ctx context.Context) (*batchRun, error) {
	for attempt := 1; ; attempt++ {
		prog, err := p.store.StartBatch(ctx, p.cfg.BatchID)
		if err == nil {
			b := &batchRun{id: p.cfg.BatchID, first: prog, firstAt: time.Now(), last: prog}
			p.log.Info("batch joined", "batch", b.id, "total", prog.Total, "done", prog.Done, "failed", prog.Failed, "pending", prog.Pending())
			return b, nil
		}
		if ctx.Err() != nil || fatal(err) {
			return nil, fmt.Errorf("worker: start batch %q: %w", p.cfg.BatchID, err)
		}
		d := backoff(attempt, 100*time.Millisecond, 5*time.Second)
		p.log.Warn("cannot start the batch, retrying", "batch", p.cfg.BatchID, "in", d.Round(time.Millisecond), "error", err)
		sleep(ctx, d)
	}
}

// next leases an item still pending in the batch, waiting while every
// pending item is held by someone. It returns errBatchComplete when none
// is pending. It is the slow path: in the steady state a run's end grants
// the next pending item (Pool.nextOptions); next runs for a worker's
// first item and after that found none free.
//
// Pending items are sampled at random, so workers across the fleet rarely
// try the same ones; each is taken with an exact acquire, and is checked
// to still be pending under the lease, since it may have finished between
// the sample and the acquire. An item whose holder died comes back when
// its lease expires; the wait between looks is at most 250ms.
func (b *batchRun) next(ctx context.Context, p *Pool, owner string) (*allocator.Lease, error) {
	for {
		items, err := p.store.Pending(ctx, b.id, sampleSize)
		if err != nil {
			return nil, err
		}
		if len(items) == 0 {
			// Finished, or gone: an empty todo set and a missing batch
			// look alike.
			if _, found, err := p.store.Progress(ctx, b.id); err != nil {
				return nil, err
			} else if !found {
				return nil, fmt.Errorf("%w: batch %q is no longer in the store (a Redis restart without persistence?); which items are done is unknown, start a new batch id", ErrBatchLost, b.id)
			}
			return nil, errBatchComplete
		}
		var busy []string
		for _, item := range items {
			l, err := p.alloc.TryAcquire(ctx, owner, allocator.AcquireOptions{TTL: p.cfg.LeaseTTL, Prefer: item, Exact: true})
			if errors.Is(err, allocator.ErrNoFreeItem) {
				busy = append(busy, item)
				continue
			}
			if err != nil {
				return nil, err
			}
			pending, err := p.store.IsPending(ctx, b.id, item)
			if err == nil && pending {
				return l, nil
			}
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			_ = l.Release(rctx)
			cancel()
			if err != nil {
				return nil, err
			}
		}
		// Items removed from the pool since the batch began can never be
		// leased: take them out, or the batch would wait for them forever.
		if n, err := p.store.DropRemoved(ctx, b.id, busy, p.cfg.BatchRetain); err != nil {
			return nil, err
		} else if n > 0 {
			p.log.Warn("items removed from the pool were dropped from the batch", "batch", b.id, "dropped", n)
			continue
		}
		sleep(ctx, 50*time.Millisecond+rand.N(200*time.Millisecond))
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// report logs the batch's progress every ProgressInterval until ctx ends.
func (b *batchRun) report(ctx context.Context, p *Pool) {
	t := time.NewTicker(p.cfg.ProgressInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		prog, found, err := p.store.Progress(ctx, b.id)
		if err != nil || !found {
			continue
		}
		b.warnRollback(p, prog)
		b.last = prog
		rate, eta := b.rate(prog, time.Now())
		args := []any{"batch", b.id, "done", prog.Done, "failed", prog.Failed, "total", prog.Total, "rate_per_s", fmt.Sprintf("%.1f", rate)}
		if eta > 0 {
			args = append(args, "eta", eta.Round(time.Second))
		}
		p.log.Info("batch progress", args...)
	}
}

// warnRollback says when the batch's state went through a discontinuity
// of the Redis dataset since this pool last looked.
func (b *batchRun) warnRollback(p *Pool, prog Progress) {
	if prog.Rollbacks > b.last.Rollbacks {
		p.log.Warn("the batch's state went through a redis dataset discontinuity (restart, failover or restore): items recorded done shortly before it may be pending again and run again, and its counts may have gone back",
			"batch", b.id, "rollbacks", prog.Rollbacks, "at", prog.RolledBack, "done", prog.Done, "failed", prog.Failed, "total", prog.Total)
	}
}

// rate is items finished per second fleet-wide since this pool joined,
// and the time left at that rate (0 when unknown).
func (b *batchRun) rate(prog Progress, now time.Time) (float64, time.Duration) {
	return Rate(b.first, b.firstAt, prog, now)
}

// Rate is how many items per second finished between two observations of
// a batch, and the time left at that rate (0 when unknown).
func Rate(from Progress, fromAt time.Time, to Progress, toAt time.Time) (float64, time.Duration) {
	secs := toAt.Sub(fromAt).Seconds()
	finished := (to.Done + to.Failed) - (from.Done + from.Failed)
	if secs <= 0 || finished <= 0 {
		return 0, 0
	}
	rate := float64(finished) / secs
	return rate, time.Duration(float64(to.Pending()) / rate * float64(time.Second))
}

// finishBatch logs the batch's end and reports failed items.
func (p *Pool) finishBatch(b *batchRun) error {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	prog, found, err := p.store.Progress(ctx, b.id)
	if err != nil {
		return fmt.Errorf("worker: batch %q: %w", b.id, err)
	}
	if !found {
		return fmt.Errorf("%w: batch %q is no longer in the store", ErrBatchLost, b.id)
	}
	b.warnRollback(p, prog)
	p.log.Info("batch finished", "batch", b.id, "done", prog.Done, "failed", prog.Failed, "total", prog.Total, "rollbacks", prog.Rollbacks)
	if prog.Failed > 0 {
		return fmt.Errorf("%w: batch %q: %d of %d items failed", ErrBatchFailed, b.id, prog.Failed, prog.Total)
	}
	return nil
}
