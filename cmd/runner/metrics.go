package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/lockpool/lockpool/pkg/worker"
)

// Metrics served on the admin endpoint's /metrics, besides the Go runtime
// (go_*) and process (process_*) collectors:
//
//	lockpool_leases_held                      gauge     leases this runner holds now
//	lockpool_acquires_total{result}           counter   acquire attempts; result="ok" got a
//	                                                    lease, "error" failed with an error
//	                                                    other than "no free item"
//	lockpool_refreshes_total{result}          counter   keep-alive refreshes; result="ok"
//	                                                    extended the lease, "error" did not
//	lockpool_leases_lost_total                counter   leases lost while their task ran
//	lockpool_task_runs_total{outcome}         counter   finished task runs by outcome
//	lockpool_task_duration_seconds{outcome}   histogram task run time by outcome
//
// outcome is one of success, failure, panic, timeout, lease_lost, cancelled
// (worker.Outcome). Every label value above starts at 0, so dashboards and
// rate() see a series before its first event. Items and owners are not
// labels: a pool can hold any number of items, and a series per item would
// grow without bound.
const metricsNamespace = "lockpool"

// taskDurationBuckets cover tasks from 1 ms to 1 h at about three buckets
// per decade; slower runs land in +Inf.
var taskDurationBuckets = []float64{
	0.001, 0.005, 0.01, 0.05, 0.1, 0.5, // sub-second
	1, 5, 10, 30, // seconds
	60, 300, 600, 1800, 3600, // minutes to an hour
}

// outcomes lists every worker.Outcome, to start each series at 0.
var outcomes = []worker.Outcome{
	worker.OutcomeSuccess,
	worker.OutcomeFailure,
	worker.OutcomePanic,
	worker.OutcomeTimeout,
	worker.OutcomeLeaseLost,
	worker.OutcomeCancelled,
}

// Label values of the result label.
const (
	resultOK    = "ok"
	resultError = "error"
)

// metrics is the runner's worker.Observer: it turns the pool's events into
// Prometheus metrics on a registry of its own, so nothing else in the
// process (or a test) can collide with it. Safe for concurrent use; no
// method blocks.
type metrics struct {
	reg *prometheus.Registry

	held         prometheus.Gauge
	acquires     *prometheus.CounterVec
	refreshes    *prometheus.CounterVec
	leasesLost   prometheus.Counter
	taskRuns     *prometheus.CounterVec
	taskDuration *prometheus.HistogramVec
}

var _ worker.Observer = (*metrics)(nil)

// newMetrics returns an observer whose metrics, with the Go runtime and
// process collectors, are registered on a fresh registry (see Registry).
func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace,
			Name:      "leases_held",
			Help:      "Leases this runner holds now.",
		}),
		acquires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "acquires_total",
			Help:      "Lease acquire attempts, by result: ok got a lease, error failed with an error other than no free item.",
		}, []string{"result"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "refreshes_total",
			Help:      "Lease keep-alive refreshes, by result: ok extended the lease, error did not.",
		}, []string{"result"}),
		leasesLost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "leases_lost_total",
			Help:      "Leases lost while their task ran.",
		}),
		taskRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "task_runs_total",
			Help:      "Finished task runs, by outcome.",
		}, []string{"outcome"}),
		taskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace,
			Name:      "task_duration_seconds",
			Help:      "Task run time in seconds, by outcome.",
			Buckets:   taskDurationBuckets,
		}, []string{"outcome"}),
	}
	for _, r := range []string{resultOK, resultError} {
		m.acquires.WithLabelValues(r)
		m.refreshes.WithLabelValues(r)
	}
	for _, o := range outcomes {
		m.taskRuns.WithLabelValues(string(o))
		m.taskDuration.WithLabelValues(string(o))
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.held, m.acquires, m.refreshes, m.leasesLost, m.taskRuns, m.taskDuration,
	)
	return m
}

// Registry is the registry holding every metric of m, for the admin
// endpoint.
func (m *metrics) Registry() *prometheus.Registry { return m.reg }

// Acquired counts an acquire attempt.
func (m *metrics) Acquired(ok bool) {
	m.acquires.WithLabelValues(result(ok)).Inc()
}

// Refreshed counts a keep-alive refresh.
func (m *metrics) Refreshed(err error) {
	m.refreshes.WithLabelValues(result(err == nil)).Inc()
}

// LeaseLost counts a lost lease.
func (m *metrics) LeaseLost(worker.Job) { m.leasesLost.Inc() }

// TaskDone counts a finished run and records how long it took.
func (m *metrics) TaskDone(_ worker.Job, outcome worker.Outcome, took time.Duration) {
	o := string(outcome)
	m.taskRuns.WithLabelValues(o).Inc()
	m.taskDuration.WithLabelValues(o).Observe(took.Seconds())
}

// Held sets the number of leases held.
func (m *metrics) Held(n int) { m.held.Set(float64(n)) }

func result(ok bool) string {
	if ok {
		return resultOK
	}
	return resultError
}
