package worker

import (
	"context"
	"sync"
)

// crew runs a resizable set of workers, numbered from 0, for one Run.
// start and retire are called with mu (the Pool's) held. A retired
// worker's context is cancelled: it stops acquiring and returns once its
// running task has finished and its lease has ended, as at shutdown. wait
// returns once no worker runs, with the first worker error; that error
// also calls fail, so the others drain at once.
type crew struct {
	ctx  context.Context
	fail context.CancelFunc
	work func(ctx context.Context, id int) error

	// Guarded by mu.
	mu      *sync.Mutex
	members map[int]*crewMember
	err     error
	stopped bool // every worker has returned: start does nothing
	idle    *sync.Cond
}

type crewMember struct {
	cancel  context.CancelFunc
	retired bool
	// restart: started again while retired; it restarts when it returns.
	restart bool
}

func newCrew(ctx context.Context, fail context.CancelFunc, mu *sync.Mutex, work func(ctx context.Context, id int) error) *crew {
	return &crew{ctx: ctx, fail: fail, work: work, mu: mu, members: map[int]*crewMember{}, idle: sync.NewCond(mu)}
}

// start starts worker id unless it runs. A worker that was retired but is
// still finishing its task is started again as soon as it returns.
func (c *crew) start(id int) {
	if c.stopped {
		return
	}
	if m, ok := c.members[id]; ok {
		m.restart = m.retired
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	m := &crewMember{cancel: cancel}
	c.members[id] = m
	go func() {
		err := c.work(ctx, id)
		cancel()
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil && c.err == nil {
			c.err = err
			c.fail()
		}
		delete(c.members, id)
		if m.restart && c.ctx.Err() == nil {
			c.start(id)
		}
		if len(c.members) == 0 {
			c.stopped = true
			c.idle.Broadcast()
		}
	}()
}

// retire asks worker id to stop once its running task has finished.
func (c *crew) retire(id int) {
	if m, ok := c.members[id]; ok {
		m.retired, m.restart = true, false
		m.cancel()
	}
}

// wait waits until no worker runs and returns the first worker error.
func (c *crew) wait() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.stopped {
		c.idle.Wait()
	}
	return c.err
}
