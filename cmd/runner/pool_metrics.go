package main

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/pkg/lock"
)

// Pool-level metrics (admin.pool_metrics: true): the whole pool and fleet
// as "runner pool status" sees them, sampled every
// admin.pool_metrics_interval in the background (a sample reads every
// held item's lock, so scrapes never do) and exported on /metrics:
//
//	lockpool_pool_items{state}          gauge  items by state: free, leased, cooldown,
//	                                           quarantine, locked_other, error
//	lockpool_pool_paused                gauge  1 while "runner pool pause" holds
//	lockpool_pool_runners_alive         gauge  live runners in the fleet's registry
//	lockpool_pool_oldest_lease_seconds  gauge  age of the oldest lease a live runner holds,
//	                                           as of its last heartbeat
//	lockpool_batch_items{state}         gauge  batch mode: done, failed, pending
//	lockpool_pool_sample_age_seconds    gauge  time since the last good sample
//	lockpool_pool_sample_seconds        gauge  how long the last sample took
//
// One runner per pool is enough to export them (or several: they agree).
// docs/metrics.md has example alert rules.
type poolMetrics struct {
	mu     sync.Mutex
	last   statusReport
	at     time.Time // when last was read; zero before the first
	took   time.Duration
	batch  bool
	descs  map[string]*prometheus.Desc
	states []string
}

func newPoolMetrics(batch bool) *poolMetrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(metricsNamespace+"_"+name, help, labels, nil)
	}
	return &poolMetrics{batch: batch, states: []string{"free", "leased", "cooldown", "quarantine", "locked_other", "error"},
		descs: map[string]*prometheus.Desc{
			"items":   d("pool_items", "Items of the pool by state, at the last sample.", "state"),
			"paused":  d("pool_paused", "1 while the pool is paused (runner pool pause), at the last sample."),
			"runners": d("pool_runners_alive", "Live runners in the fleet's registry, at the last sample."),
			"oldest":  d("pool_oldest_lease_seconds", "Age of the oldest lease held by a live runner, as of its last heartbeat, at the last sample."),
			"batch":   d("batch_items", "Items of the batch by state, at the last sample.", "state"),
			"age":     d("pool_sample_age_seconds", "Time since the last good sample of the pool."),
			"took":    d("pool_sample_seconds", "How long the last sample of the pool took."),
		}}
}

// Describe implements prometheus.Collector.
func (m *poolMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range m.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the last sample, nothing until
// the first.
func (m *poolMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	r, at, took := m.last, m.at, m.took
	m.mu.Unlock()
	if at.IsZero() {
		return
	}
	gauge := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(m.descs[name], prometheus.GaugeValue, v, labels...)
	}
	for i, n := range []int64{r.Free, r.Leased, r.Cooldown, r.Quarantine, r.Locked, r.Errors} {
		gauge("items", float64(n), m.states[i])
	}
	paused := 0.0
	if !r.PausedSince.IsZero() {
		paused = 1
	}
	gauge("paused", paused)
	gauge("runners", float64(len(r.Runners)))
	var oldest int64
	for _, rn := range r.Runners {
		oldest = max(oldest, rn.OldestLeaseMS)
	}
	gauge("oldest", float64(oldest)/1000)
	if m.batch {
		var done, failed, pending int64
		if r.Batch != nil {
			done, failed, pending = r.Batch.Done, r.Batch.Failed, r.Batch.Pending
		}
		gauge("batch", float64(done), "done")
		gauge("batch", float64(failed), "failed")
		gauge("batch", float64(pending), "pending")
	}
	gauge("age", time.Since(at).Seconds())
	gauge("took", took.Seconds())
}

// run samples the pool every interval until ctx ends; a failed sample is
// logged and the last good one kept (its age shows it). A sample reads
// every held item's lock, or every item's where the lock keys are not
// walked (planWalk: seconds for 1,000,000 items), so the next one starts
// no sooner than four times the last one took: sampling keeps Redis busy
// a fifth of the time at most.
func (m *poolMetrics) run(ctx context.Context, every time.Duration, cfg *Config, client redis.UniversalClient, pool *lock.RedisLockPool, log hclog.Logger) {
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for {
		start := time.Now()
		r, err := buildStatus(ctx, cfg, client, pool)
		took := time.Since(start)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Warn("cannot sample the pool for its metrics", "error", err)
		default:
			m.mu.Lock()
			m.last, m.at, m.took = r, time.Now(), took
			m.mu.Unlock()
		}
		t.Reset(max(every, 4*took))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
