package worker

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/lockpool/lockpool/internal/history"
	"github.com/lockpool/lockpool/pkg/allocator"
)

// history is the pool's item history, shared with the memory allocator's
// Lease.Next.
func (s *MemoryStore) history() *history.Log { return history.Of(s.pool, s.keys.History()) }

// RecordRun implements [RunHistory].
func (s *MemoryStore) RecordRun(ctx context.Context, item string, token int64, rec allocator.RunRecord) error {
	const op = "RecordRun"
	if err := checkItem(op, item); err != nil {
		return err
	}
	now, err := s.enter(ctx, op, strconv.Quote(item))
	if err != nil {
		return err
	}
	defer s.st.mu.Unlock()
	s.history().Write(item, token, history.Entry(rec), now)
	return nil
}

// LastRun implements [RunHistory].
func (s *MemoryStore) LastRun(ctx context.Context, item string) (ItemHistory, bool, error) {
	const op = "LastRun"
	if err := checkItem(op, item); err != nil {
		return ItemHistory{}, false, err
	}
	now, err := s.enter(ctx, op, strconv.Quote(item))
	if err != nil {
		return ItemHistory{}, false, err
	}
	defer s.st.mu.Unlock()
	last, found, tail := s.history().Get(item, now)
	h, found := itemHistory(item, last, found, tail, now)
	return h, found, nil
}

// LastRuns implements [RunHistory].
func (s *MemoryStore) LastRuns(ctx context.Context, items []string) (map[string]ItemHistory, error) {
	const op = "LastRuns"
	if err := checkItems(op, items); err != nil {
		return nil, err
	}
	now, err := s.enter(ctx, op, strconv.Itoa(len(items))+" items")
	if err != nil {
		return nil, err
	}
	defer s.st.mu.Unlock()
	out := make(map[string]ItemHistory, len(items))
	log := s.history()
	for _, it := range items {
		last, found, _ := log.Get(it, now)
		if h, ok := itemHistory(it, last, found, history.Record{}, now); ok {
			out[it] = h
		}
	}
	return out, nil
}

// FailedItems implements [RunHistory]. The cursor is the last item of the
// previous page: pages come in item order.
func (s *MemoryStore) FailedItems(ctx context.Context, id, cursor string, n int) ([]FailedItem, string, error) {
	const op = "FailedItems"
	if err := checkBatch(op, id); err != nil {
		return nil, "", err
	}
	if _, err := s.enter(ctx, op, batchSubject(id)); err != nil {
		return nil, "", err
	}
	defer s.st.mu.Unlock()
	b := s.st.batches[id]
	if b == nil {
		return []FailedItem{}, "", nil
	}
	items := make([]string, 0, len(b.errors))
	for it := range b.errors {
		if it > cursor {
			items = append(items, it)
		}
	}
	slices.Sort(items)
	n = clampPending(n)
	next := ""
	if len(items) > n {
		items, next = items[:n], items[n-1]
	}
	page := make([]FailedItem, len(items))
	for i, it := range items {
		page[i] = FailedItem{Item: it, Error: b.errors[it]}
	}
	return page, next, nil
}

// Heartbeat implements [Registry].
func (s *MemoryStore) Heartbeat(ctx context.Context, r Runner, ttl time.Duration) (string, error) {
	const op = "Heartbeat"
	if err := checkRunner(op, r, ttl); err != nil {
		return "", err
	}
	now, err := s.enter(ctx, op, "runner "+strconv.Quote(r.ID))
	if err != nil {
		return "", err
	}
	defer s.st.mu.Unlock()
	now = msClock(now)
	other := ""
	old, ok := s.st.runners[r.ID]
	if ok && old.Expires.After(now) && old.Instance != r.Instance {
		other = old.Instance
	}
	switch {
	case r.First:
		s.st.addThroughput(now, r.Grants, r.Runs)
	case ok && old.Instance == r.Instance:
		s.st.addThroughput(now, r.Grants-old.Grants, r.Runs-old.Runs)
	}
	r.First = false
	r.Host = history.Head(r.Host, 256)
	r.Beat, r.Expires = now, now.Add(time.Duration(ttl.Milliseconds())*time.Millisecond)
	s.st.runners[r.ID] = r
	s.st.pruneRunners(now)
	return other, nil
}

// Leave implements [Registry].
func (s *MemoryStore) Leave(ctx context.Context, id, instance string) error {
	const op = "Leave"
	if err := checkRunnerID(op, id); err != nil {
		return err
	}
	now, err := s.enter(ctx, op, "runner "+strconv.Quote(id))
	if err != nil {
		return err
	}
	defer s.st.mu.Unlock()
	if old, ok := s.st.runners[id]; ok && old.Instance == instance {
		delete(s.st.runners, id)
	}
	s.st.pruneRunners(msClock(now))
	return nil
}

// Runners implements [Registry].
func (s *MemoryStore) Runners(ctx context.Context) ([]Runner, error) {
	now, err := s.enter(ctx, "Runners", "of the memory pool")
	if err != nil {
		return nil, err
	}
	defer s.st.mu.Unlock()
	now = msClock(now)
	s.st.pruneRunners(now)
	out := make([]Runner, 0, len(s.st.runners))
	for _, r := range s.st.runners {
		out = append(out, r)
	}
	// The Redis store keeps the 1,000 that expire first.
	slices.SortFunc(out, func(a, b Runner) int { return a.Expires.Compare(b.Expires) })
	out = out[:min(len(out), maxRunners)]
	sortRunners(out)
	return out, nil
}

// Throughput implements [Registry].
func (s *MemoryStore) Throughput(ctx context.Context) ([]ThroughputPoint, error) {
	now, err := s.enter(ctx, "Throughput", "of the memory pool")
	if err != nil {
		return nil, err
	}
	defer s.st.mu.Unlock()
	first := throughputFirst(msClock(now))
	var out []ThroughputPoint
	for b, pt := range s.st.rate {
		if b < first {
			delete(s.st.rate, b)
			continue
		}
		out = append(out, pt)
	}
	return sortThroughput(out), nil
}

// addThroughput adds a heartbeat's grants and runs to the bucket of now,
// as registry.lua's throughput() does (the ring's older buckets are
// dropped by Throughput's reads and here). The caller holds st.mu.
func (st *memStoreState) addThroughput(now time.Time, grants, runs int64) {
	if grants <= 0 && runs <= 0 {
		return
	}
	b := throughputBucket(now)
	for old := range st.rate {
		if old <= b-throughputSlots {
			delete(st.rate, old)
		}
	}
	pt := st.rate[b]
	pt.At = time.UnixMilli(b * ThroughputBucket.Milliseconds())
	pt.Grants += max(0, grants)
	pt.Runs += max(0, runs)
	st.rate[b] = pt
}

// pruneRunners drops every registration expired at now (registry.lua
// drops up to 16 per call; readers see the same either way). The caller
// holds st.mu.
func (st *memStoreState) pruneRunners(now time.Time) {
	for id, r := range st.runners {
		if !r.Expires.After(now) {
			delete(st.runners, id)
		}
	}
}
