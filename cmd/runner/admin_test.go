package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lockpool/lockpool/pkg/worker"
)

// startAdmin starts an admin server on a free loopback port, stopped when
// the test ends, and returns it with its base URL.
func startAdmin(t *testing.T, reg *prometheus.Registry, ready func(context.Context) error, status func() any) (*adminServer, string) {
	t.Helper()
	if reg == nil {
		reg = newMetrics().Registry()
	}
	if ready == nil {
		ready = func(context.Context) error { return nil }
	}
	if status == nil {
		status = func() any { return []worker.WorkerStatus{} }
	}
	s, err := newAdminServer("127.0.0.1:0", reg, ready, status, nil)
	if err != nil {
		t.Fatalf("newAdminServer: got error %v, want a running server", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s, "http://" + s.Addr()
}

var testClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// do sends a request and returns the response with its body read.
func do(t *testing.T, method, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, string(body)
}

// scrape GETs /metrics and parses it.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, body := do(t, http.MethodGet, base+"/metrics")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d, want 200; body:\n%s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q, want text/plain", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return mfs
}

// gather collects reg's metrics without HTTP.
func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	list, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	mfs := make(map[string]*dto.MetricFamily, len(list))
	for _, mf := range list {
		mfs[mf.GetName()] = mf
	}
	return mfs
}

// series finds the one series of family name whose labels are exactly
// labels (name=value pairs).
func series(t *testing.T, mfs map[string]*dto.MetricFamily, name string, wantType dto.MetricType, labels ...string) *dto.Metric {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
	if mf.GetType() != wantType {
		t.Fatalf("metric %s has type %v, want %v", name, mf.GetType(), wantType)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
next:
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, lp := range m.GetLabel() {
			if v, ok := want[lp.GetName()]; !ok || v != lp.GetValue() {
				continue next
			}
		}
		return m
	}
	t.Fatalf("metric %s has no series with labels %v", name, want)
	return nil
}

func counterValue(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	return series(t, mfs, name, dto.MetricType_COUNTER, labels...).GetCounter().GetValue()
}

func wantValue(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9 {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// feedOutcomes is how many times, and how long, each outcome is fed:
// different counts per outcome catch a mixed-up label.
var feedOutcomes = []struct {
	outcome worker.Outcome
	times   int
	took    time.Duration
}{
	{worker.OutcomeSuccess, 1, 3 * time.Millisecond},
	{worker.OutcomeFailure, 2, 200 * time.Millisecond},
	{worker.OutcomePanic, 3, 2 * time.Second},
	{worker.OutcomeTimeout, 4, 20 * time.Minute},
	{worker.OutcomeLeaseLost, 5, 45 * time.Second},
	{worker.OutcomeCancelled, 6, 2 * time.Hour},
}

func TestMetricsExposedWithValues(t *testing.T) {
	parallel(t)
	m := newMetrics()
	_, base := startAdmin(t, m.Registry(), nil, nil)

	job := worker.Job{Item: "item-1", Token: 7, Owner: "r1/w0"}
	m.Acquired(true)
	m.Acquired(true)
	m.Acquired(false)
	m.Refreshed(nil)
	m.Refreshed(nil)
	m.Refreshed(nil)
	m.Refreshed(errors.New("redis: connection refused"))
	m.LeaseLost(job)
	m.Held(5)
	m.Held(3)
	for _, f := range feedOutcomes {
		for range f.times {
			m.TaskDone(job, f.outcome, f.took)
		}
	}

	mfs := scrape(t, base)

	wantValue(t, "lockpool_leases_held",
		series(t, mfs, "lockpool_leases_held", dto.MetricType_GAUGE).GetGauge().GetValue(), 3)
	wantValue(t, `lockpool_acquires_total{result="ok"}`,
		counterValue(t, mfs, "lockpool_acquires_total", "result", "ok"), 2)
	wantValue(t, `lockpool_acquires_total{result="error"}`,
		counterValue(t, mfs, "lockpool_acquires_total", "result", "error"), 1)
	wantValue(t, `lockpool_refreshes_total{result="ok"}`,
		counterValue(t, mfs, "lockpool_refreshes_total", "result", "ok"), 3)
	wantValue(t, `lockpool_refreshes_total{result="error"}`,
		counterValue(t, mfs, "lockpool_refreshes_total", "result", "error"), 1)
	wantValue(t, "lockpool_leases_lost_total",
		counterValue(t, mfs, "lockpool_leases_lost_total"), 1)
	if n := len(mfs["lockpool_task_runs_total"].GetMetric()); n != len(feedOutcomes) {
		t.Errorf("lockpool_task_runs_total has %d series, want one per outcome (%d)", n, len(feedOutcomes))
	}

	for _, f := range feedOutcomes {
		o := string(f.outcome)
		wantValue(t, `lockpool_task_runs_total{outcome="`+o+`"}`,
			counterValue(t, mfs, "lockpool_task_runs_total", "outcome", o), float64(f.times))

		h := series(t, mfs, "lockpool_task_duration_seconds", dto.MetricType_HISTOGRAM, "outcome", o).GetHistogram()
		if got := h.GetSampleCount(); got != uint64(f.times) {
			t.Errorf("lockpool_task_duration_seconds_count{outcome=%q} = %d, want %d", o, got, f.times)
		}
		wantValue(t, `lockpool_task_duration_seconds_sum{outcome="`+o+`"}`,
			h.GetSampleSum(), float64(f.times)*f.took.Seconds())
		// Buckets are cumulative: each run is in every bucket at or
		// above its duration and in none below.
		for _, b := range h.GetBucket() {
			want := uint64(0)
			if f.took.Seconds() <= b.GetUpperBound() {
				want = uint64(f.times)
			}
			if b.GetCumulativeCount() != want {
				t.Errorf("lockpool_task_duration_seconds_bucket{outcome=%q,le=%v} = %d, want %d",
					o, b.GetUpperBound(), b.GetCumulativeCount(), want)
			}
		}
	}

	// Runtime and process collectors come with the registry.
	series(t, mfs, "go_goroutines", dto.MetricType_GAUGE)
	if runtime.GOOS == "linux" {
		series(t, mfs, "process_start_time_seconds", dto.MetricType_GAUGE)
	}
}

func TestMetricsStartAtZero(t *testing.T) {
	parallel(t)
	mfs := gather(t, newMetrics().Registry())

	wantValue(t, "lockpool_leases_held",
		series(t, mfs, "lockpool_leases_held", dto.MetricType_GAUGE).GetGauge().GetValue(), 0)
	wantValue(t, "lockpool_leases_lost_total", counterValue(t, mfs, "lockpool_leases_lost_total"), 0)
	for _, r := range []string{"ok", "error"} {
		wantValue(t, "lockpool_acquires_total "+r, counterValue(t, mfs, "lockpool_acquires_total", "result", r), 0)
		wantValue(t, "lockpool_refreshes_total "+r, counterValue(t, mfs, "lockpool_refreshes_total", "result", r), 0)
	}
	for _, f := range feedOutcomes {
		o := string(f.outcome)
		wantValue(t, "lockpool_task_runs_total "+o, counterValue(t, mfs, "lockpool_task_runs_total", "outcome", o), 0)
		h := series(t, mfs, "lockpool_task_duration_seconds", dto.MetricType_HISTOGRAM, "outcome", o).GetHistogram()
		if h.GetSampleCount() != 0 {
			t.Errorf("lockpool_task_duration_seconds_count{outcome=%q} = %d, want 0", o, h.GetSampleCount())
		}
	}
	// The outcome list here is the one the metrics start at zero.
	if len(outcomes) != len(feedOutcomes) {
		t.Errorf("metrics know %d outcomes, test knows %d: keep both in step with worker.Outcome", len(outcomes), len(feedOutcomes))
	}
}

func TestMetricsBucketsSpanMillisecondToHour(t *testing.T) {
	parallel(t)
	h := series(t, gather(t, newMetrics().Registry()), "lockpool_task_duration_seconds",
		dto.MetricType_HISTOGRAM, "outcome", string(worker.OutcomeSuccess)).GetHistogram()
	b := h.GetBucket()
	if len(b) == 0 {
		t.Fatal("lockpool_task_duration_seconds has no buckets")
	}
	if lo, hi := b[0].GetUpperBound(), b[len(b)-1].GetUpperBound(); lo != 0.001 || hi != 3600 {
		t.Errorf("buckets run from %v to %v, want 0.001 to 3600", lo, hi)
	}
}

func TestMetricsOwnRegistry(t *testing.T) {
	parallel(t)
	// Two observers in one process must not collide, and neither may
	// touch the global registry.
	a, b := newMetrics(), newMetrics()
	a.Acquired(true)
	if got := counterValue(t, gather(t, b.Registry()), "lockpool_acquires_total", "result", "ok"); got != 0 {
		t.Errorf("second observer's acquires_total{ok} = %v after the first counted one, want 0", got)
	}
	global, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("default Gather: %v", err)
	}
	for _, mf := range global {
		if strings.HasPrefix(mf.GetName(), "lockpool_") {
			t.Errorf("%s is registered on the global registry", mf.GetName())
		}
	}
}

func TestMetricsConcurrentObservers(t *testing.T) {
	parallel(t)
	const goroutines, rounds = 8, 500
	m := newMetrics()
	job := worker.Job{Item: "x"}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range rounds {
				m.Acquired(i%2 == 0)
				if i%5 == 0 {
					m.Refreshed(errors.New("boom"))
				} else {
					m.Refreshed(nil)
				}
				m.LeaseLost(job)
				m.TaskDone(job, outcomes[(g+i)%len(outcomes)], time.Millisecond)
				m.Held(g)
			}
		})
	}
	// Scrape while they write, as Prometheus would.
	wg.Go(func() {
		for range 20 {
			if _, err := m.Registry().Gather(); err != nil {
				t.Errorf("Gather during writes: %v", err)
				return
			}
		}
	})
	wg.Wait()

	mfs := gather(t, m.Registry())
	total := float64(goroutines * rounds)
	wantValue(t, "acquires ok", counterValue(t, mfs, "lockpool_acquires_total", "result", "ok"), total/2)
	wantValue(t, "acquires error", counterValue(t, mfs, "lockpool_acquires_total", "result", "error"), total/2)
	wantValue(t, "refreshes error", counterValue(t, mfs, "lockpool_refreshes_total", "result", "error"), total/5)
	wantValue(t, "refreshes ok", counterValue(t, mfs, "lockpool_refreshes_total", "result", "ok"), total*4/5)
	wantValue(t, "leases lost", counterValue(t, mfs, "lockpool_leases_lost_total"), total)
	var runs float64
	var observed uint64
	for _, o := range outcomes {
		runs += counterValue(t, mfs, "lockpool_task_runs_total", "outcome", string(o))
		observed += series(t, mfs, "lockpool_task_duration_seconds", dto.MetricType_HISTOGRAM,
			"outcome", string(o)).GetHistogram().GetSampleCount()
	}
	wantValue(t, "task runs, all outcomes", runs, total)
	if observed != uint64(total) {
		t.Errorf("task durations observed = %d, want %v", observed, total)
	}
	held := series(t, mfs, "lockpool_leases_held", dto.MetricType_GAUGE).GetGauge().GetValue()
	if held < 0 || held >= goroutines || held != math.Trunc(held) {
		t.Errorf("leases_held = %v, want one of the values set (0..%d)", held, goroutines-1)
	}
}

func TestAdminHealthz(t *testing.T) {
	t.Parallel()
	release := make(chan struct{}) // unblocks the ready that ignores its deadline
	t.Cleanup(func() { close(release) })
	tests := []struct {
		name       string
		ready      func(context.Context) error
		wantStatus int
		wantBody   string
	}{
		{
			name:       "ready",
			ready:      func(context.Context) error { return nil },
			wantStatus: http.StatusOK,
			wantBody:   "ok\n",
		},
		{
			name:       "not ready",
			ready:      func(context.Context) error { return errors.New("dial tcp 10.0.0.1:6379: connection refused") },
			wantStatus: http.StatusServiceUnavailable,
			wantBody:   "not ready: dial tcp 10.0.0.1:6379: connection refused\n",
		},
		{
			name: "honours the deadline",
			ready: func(ctx context.Context) error {
				<-ctx.Done()
				return ctx.Err()
			},
			wantStatus: http.StatusServiceUnavailable,
			wantBody:   "not ready: no answer within 1s\n",
		},
		{
			name: "ignores the deadline",
			ready: func(context.Context) error {
				<-release
				return nil
			},
			wantStatus: http.StatusServiceUnavailable,
			wantBody:   "not ready: no answer within 1s\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parallel(t)
			_, base := startAdmin(t, nil, tt.ready, nil)
			start := time.Now()
			resp, body := do(t, http.MethodGet, base+"/healthz")
			took := time.Since(start)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if body != tt.wantBody {
				t.Errorf("body %q, want %q", body, tt.wantBody)
			}
			if took > 2*time.Second {
				t.Errorf("took %v, want at most about 1 s", took)
			}
		})
	}
}

func TestAdminHealthzDeadline(t *testing.T) {
	parallel(t)
	deadline := make(chan time.Duration, 1)
	_, base := startAdmin(t, nil, func(ctx context.Context) error {
		d, ok := ctx.Deadline()
		if !ok {
			deadline <- -1
		} else {
			deadline <- time.Until(d)
		}
		return nil
	}, nil)
	do(t, http.MethodGet, base+"/healthz")
	if d := <-deadline; d <= 0 || d > time.Second {
		t.Errorf("ready got a context ending in %v, want one ending within 1 s", d)
	}
}

func TestAdminStatus(t *testing.T) {
	parallel(t)
	since := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	want := map[string]any{
		"runner": "host-a",
		"workers": []worker.WorkerStatus{
			{ID: 0, State: worker.StateRunning, Item: "item-7", Token: 42, Attempt: 1, Since: since, Runs: 3},
			{ID: 1, State: worker.StateIdle, Since: since},
		},
	}
	calls := 0
	var mu sync.Mutex
	_, base := startAdmin(t, nil, nil, func() any {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return want
	})

	resp, body := do(t, http.MethodGet, base+"/status")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200; body %q", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	wantJSON, err := json.MarshalIndent(want, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if body != string(wantJSON)+"\n" {
		t.Errorf("body:\n%s\nwant:\n%s", body, wantJSON)
	}
	var got struct {
		Runner  string                `json:"runner"`
		Workers []worker.WorkerStatus `json:"workers"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	if got.Runner != "host-a" || len(got.Workers) != 2 || got.Workers[0].Item != "item-7" ||
		got.Workers[0].Token != 42 || !got.Workers[1].Since.Equal(since) {
		t.Errorf("decoded %+v, want %+v", got, want)
	}

	// Each request asks for a fresh status.
	do(t, http.MethodGet, base+"/status")
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 {
		t.Errorf("status called %d times for 2 requests, want 2", calls)
	}
}

func TestAdminStatusUnencodable(t *testing.T) {
	parallel(t)
	_, base := startAdmin(t, nil, nil, func() any { return map[string]any{"c": make(chan int)} })
	resp, body := do(t, http.MethodGet, base+"/status")
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("status %d, want 500; body %q", resp.StatusCode, body)
	}
	if strings.Contains(body, "{") {
		t.Errorf("body %q, want no partial JSON", body)
	}
}

func TestAdminHead(t *testing.T) {
	parallel(t)
	_, base := startAdmin(t, nil, nil, nil)
	for _, path := range []string{"/metrics", "/healthz", "/status"} {
		resp, body := do(t, http.MethodHead, base+path)
		if resp.StatusCode != http.StatusOK || body != "" {
			t.Errorf("HEAD %s: status %d body %q, want 200 and no body", path, resp.StatusCode, body)
		}
	}
}

func TestAdminMethodNotAllowed(t *testing.T) {
	parallel(t)
	calls := 0
	var mu sync.Mutex
	_, base := startAdmin(t, nil, func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return nil
	}, nil)
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		for _, path := range []string{"/metrics", "/healthz", "/status"} {
			resp, _ := do(t, method, base+path)
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: status %d, want 405", method, path, resp.StatusCode)
			}
			if allow := resp.Header.Get("Allow"); !strings.Contains(allow, "GET") {
				t.Errorf("%s %s: Allow %q, want it to list GET", method, path, allow)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 0 {
		t.Errorf("ready called %d times by refused requests, want 0", calls)
	}
}

func TestAdminNotFound(t *testing.T) {
	parallel(t)
	_, base := startAdmin(t, nil, nil, nil)
	for _, path := range []string{"/", "/nope", "/metrics/x", "/status/", "/debug/pprof/", "/debug/vars"} {
		resp, _ := do(t, http.MethodGet, base+path)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", path, resp.StatusCode)
		}
	}
}

func TestAdminBadAddress(t *testing.T) {
	parallel(t)
	busy, _ := startAdmin(t, nil, nil, nil)
	reg := newMetrics().Registry()
	ready := func(context.Context) error { return nil }
	status := func() any { return nil }
	for _, addr := range []string{busy.Addr(), "127.0.0.1:notaport", ""} {
		s, err := newAdminServer(addr, reg, ready, status, nil)
		if err == nil {
			_ = s.Shutdown(context.Background())
			t.Errorf("newAdminServer(%q): no error, want one naming admin.listen", addr)
			continue
		}
		if !strings.Contains(err.Error(), "admin.listen") {
			t.Errorf("newAdminServer(%q): error %q, want it to name admin.listen", addr, err)
		}
	}
}

func TestAdminShutdown(t *testing.T) {
	parallel(t)
	s, err := newAdminServer("127.0.0.1:0", newMetrics().Registry(),
		func(context.Context) error { return nil }, func() any { return nil }, nil)
	if err != nil {
		t.Fatalf("newAdminServer: %v", err)
	}
	base := "http://" + s.Addr()
	if resp, _ := do(t, http.MethodGet, base+"/healthz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("before Shutdown: status %d, want 200", resp.StatusCode)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if resp, err := testClient.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("after Shutdown: GET answered %d, want a connection error", resp.StatusCode)
	}
	// The port is free again.
	ln, err := net.Listen("tcp", s.Addr())
	if err != nil {
		t.Fatalf("after Shutdown: cannot listen on %s again: %v", s.Addr(), err)
	}
	ln.Close()
}
