package main

import (
	"strings"
	"testing"
)

// A benchmark's name and figures come in two output events; a failed
// benchmark is named.
const events = `{"Action":"output","Package":"p","Output":"goos: linux\n"}
{"Action":"output","Package":"p","Test":"BenchmarkA","Output":"=== RUN   BenchmarkA\n"}
{"Action":"output","Package":"p","Test":"BenchmarkA","Output":"BenchmarkA\n"}
{"Action":"output","Package":"p","Test":"BenchmarkA/goroutines=8","Output":"BenchmarkA/goroutines=8-2   \t"}
{"Action":"output","Package":"p","Test":"BenchmarkA/goroutines=8","Output":"    2000\t    100.0 baseline-ns/op\t         0.75 throughput-ratio\n"}
{"Action":"output","Package":"p","Output":"BenchmarkA/goroutines=8-2   \t    2000\t    90.0 baseline-ns/op\t         0.85 throughput-ratio\n"}
{"Action":"output","Package":"p","Output":"BenchmarkA/goroutines=8-2   \t    2000\t    95.0 baseline-ns/op\t         0.95 throughput-ratio\n"}
{"Action":"output","Package":"p","Output":"BenchmarkA/goroutines=80-2   \t    1\t    1 throughput-ratio\n"}
{"Action":"output","Package":"p","Output":"BenchmarkT-2   \t    1\t    1 parallel-missing\t 50 runs/s\n"}
{"Action":"fail","Package":"p","Test":"BenchmarkB"}
`

func TestParseAndJudge(t *testing.T) {
	res, failed, err := parseEvents(strings.NewReader(events))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 5 {
		t.Fatalf("parsed %d results, want 5: %v", len(res), res)
	}
	if len(failed) != 1 || failed[0] != "p BenchmarkB" {
		t.Errorf("failed = %q, want [p BenchmarkB]", failed)
	}
	rows := judge([]goal{
		{id: "x", bench: "BenchmarkA/goroutines=8", baseline: "baseline-ns/op", measured: "subject-ns/op", ratio: "throughput-ratio", op: ">=", target: 0.8},
		{id: "y", bench: "BenchmarkA/goroutines=8", ratio: "throughput-ratio", op: ">=", target: 0.9},
		{id: "z", bench: "BenchmarkT", baseLabel: "parallel", missing: "parallel-missing", ratio: "parallel-ratio", op: ">=", target: 1.2},
		{id: "n", bench: "BenchmarkNone", ratio: "r", op: "<=", target: 1},
		{id: "c", bench: "BenchmarkT", measured: "runs/s", op: ">=", target: 40},
	}, res)
	want := map[string]string{"x": resultPass, "y": resultFail, "z": resultMissing, "n": resultNone, "c": resultPass}
	for _, r := range rows {
		if r.result != want[r.id] {
			t.Errorf("goal %s: %s (%s), want %s", r.id, r.result, r.ratioText, want[r.id])
		}
	}
	// Three rounds: min–max and the median they are judged on.
	if got, want := rows[0].ratioText, "0.750–0.950 (m=0.850)x"; got != want {
		t.Errorf("ratio text = %q, want %q", got, want)
	}
}
