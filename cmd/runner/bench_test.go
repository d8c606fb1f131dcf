package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkRunnerThroughput runs the runner binary in batch mode on its
// embedded in-memory pool with b.N items, concurrency 8 and a task of
// "true" (started through the exec supervisor, as always), and reports task
// runs per second (runs/s), against a baseline measured in the same run:
// os/exec of "true" from 8 goroutines, with no runner, lease or supervisor
// (baseline-runs/s; ratio = runs/s ÷ baseline-runs/s). The runner's
// start-up and shutdown are included.
//
//	go test -run '^$' -bench RunnerThroughput -benchtime 2000x ./cmd/runner
func BenchmarkRunnerThroughput(b *testing.B) {
	const concurrency = 8
	items := make([]string, b.N)
	for i := range items {
		items[i] = fmt.Sprintf("i%d", i)
	}
	cfg := filepath.Join(b.TempDir(), "bench.yaml")
	body := fmt.Sprintf("mode: batch\npool:\n  items: [%s]\nworker:\n  concurrency: %d\ntask:\n  command: [\"true\"]\nlog:\n  level: warn\n",
		strings.Join(items, ", "), concurrency)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	out, err := exec.Command(runnerBin, "run", "-c", cfg).CombinedOutput()
	took := time.Since(start)
	if err != nil {
		b.Fatalf("runner: %v\n%s", err, out)
	}
	base := baselineExecRate(b, b.N, concurrency)
	b.ReportMetric(0, "ns/op")
	rate := float64(b.N) / took.Seconds()
	b.ReportMetric(rate, "runs/s")
	b.ReportMetric(base, "baseline-runs/s")
	b.ReportMetric(rate/base, "ratio")
}

func baselineExecRate(b *testing.B, n, concurrency int) float64 {
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	errs := make(chan error, concurrency)
	start := time.Now()
	for range concurrency {
		go func() {
			var err error
			for range jobs {
				if err = exec.Command("true").Run(); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range concurrency {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}
