package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// goal is one performance goal: which benchmark measures it, which of its
// metrics are the baseline, the measured figure and their ratio, and the
// bound. Where ratio is empty the bound is on the measured figure itself
// (a count), and the baseline is shown for scale.
type goal struct {
	id, what string
	bench    string // full name, without the -GOMAXPROCS suffix
	// baseline and measured are metric units, shown with a label.
	baseLabel, baseline string
	measLabel, measured string
	ratio               string
	op                  string // ">=", "<=", or "" when only reported
	target              float64
	// missing is the metric a benchmark reports when the baseline tool
	// is not installed.
	missing string
}

// goals are issue 11's, in the order of bench/README.md. Keep the two in
// step.
var goals = []goal{
	{id: "1a", what: "exec 2,000 × true at -P8: runs/s vs xargs", bench: "BenchmarkRunnerThroughput",
		baseLabel: "xargs", baseline: "xargs-runs/s", measLabel: "runner", measured: "runs/s",
		ratio: "xargs-ratio", op: ">=", target: 0.8, missing: "xargs-missing"},
	{id: "1b", what: "exec 2,000 × true at -j8: runs/s vs GNU parallel", bench: "BenchmarkRunnerThroughput",
		baseLabel: "parallel", baseline: "parallel-runs/s", measLabel: "runner", measured: "runs/s",
		ratio: "parallel-ratio", op: ">=", target: 1.2, missing: "parallel-missing"},
	{id: "1c", what: "exec: CPU per run (process tree) vs xargs", bench: "BenchmarkRunnerThroughput",
		baseLabel: "xargs", baseline: "xargs-cpu-us/run", measLabel: "runner", measured: "cpu-us/run",
		ratio: "cpu-ratio", op: "<=", target: 1.3, missing: "xargs-missing"},
	{id: "2", what: "memory, 64 sleep tasks: RSS runner+helpers vs runner", bench: "BenchmarkRunnerMemory",
		baseLabel: "runner", baseline: "runner-rss-MiB", measLabel: "runner+helpers", measured: "total-rss-MiB",
		ratio: "rss-ratio", op: "<=", target: 1.5},
	{id: "3a", what: "TryAcquire+Release vs SET NX PX+DEL, 1 goroutine", bench: "BenchmarkAcquireRelease/goroutines=1",
		baseLabel: "raw", baseline: "baseline-ns/op", measLabel: "lockpool", measured: "subject-ns/op",
		ratio: "throughput-ratio"},
	{id: "3b", what: "TryAcquire+Release vs SET NX PX+DEL, 8 goroutines", bench: "BenchmarkAcquireRelease/goroutines=8",
		baseLabel: "raw", baseline: "baseline-ns/op", measLabel: "lockpool", measured: "subject-ns/op",
		ratio: "throughput-ratio", op: ">=", target: 0.8},
	{id: "3c", what: "TryAcquire+Release vs SET NX PX+DEL, 64 goroutines", bench: "BenchmarkAcquireRelease/goroutines=64",
		baseLabel: "raw", baseline: "baseline-ns/op", measLabel: "lockpool", measured: "subject-ns/op",
		ratio: "throughput-ratio", op: ">=", target: 0.8},
	{id: "3d", what: "Redis server CPU per cycle vs raw (phases)", bench: "BenchmarkRedisCPUPerCycle/goroutines=8",
		baseLabel: "raw", baseline: "baseline-cpu-us/op", measLabel: "lockpool", measured: "cpu-us/op",
		ratio: "cpu-us-ratio", op: "<=", target: 1.6},
	{id: "4a", what: "loop mode, func task, 8 workers vs bare cycle", bench: "BenchmarkPoolThroughput/redis/func",
		baseLabel: "bare cycle", baseline: "baseline-runs/s", measLabel: "loop", measured: "runs/s",
		ratio: "ratio", op: ">=", target: 0.9},
	{id: "4b", what: "loop mode: Redis round trips per run (steady)", bench: "BenchmarkPoolThroughput/redis/func",
		baseLabel: "bare cycle", baseline: "baseline-round-trips/op", measLabel: "loop", measured: "round-trips/run",
		op: "<=", target: 1},
	{id: "5", what: "keep-alive: refresh scripts per interval", bench: "BenchmarkKeepAliveScripts",
		baseLabel: "held", baseline: "leases", measLabel: "", measured: "refresh-scripts/interval",
		op: "<=", target: 10},
	{id: "6a", what: "Redis memory per item, 100,000 items, vs Python layout", bench: "BenchmarkRedisMemoryPerItem",
		baseLabel: "python", baseline: "python-B/item", measLabel: "lockpool", measured: "lockpool-B/item",
		ratio: "python-ratio", op: "<=", target: 1.3},
	{id: "6b", what: "Redis memory per item vs a plain SADD of the names", bench: "BenchmarkRedisMemoryPerItem",
		baseLabel: "sadd", baseline: "sadd-B/item", measLabel: "lockpool", measured: "lockpool-B/item",
		ratio: "sadd-ratio"},
	{id: "7a", what: "acquire cost, 1,000,000 items vs 100, 1 goroutine", bench: "BenchmarkAcquireReleasePoolSize/1M-vs-100/goroutines=1",
		baseLabel: "100 items", baseline: "baseline-ns/op", measLabel: "1M items", measured: "subject-ns/op",
		ratio: "time-ratio", op: "<=", target: 1.2},
	{id: "7b", what: "acquire cost, 1,000,000 items vs 100, 8 goroutines", bench: "BenchmarkAcquireReleasePoolSize/1M-vs-100/goroutines=8",
		baseLabel: "100 items", baseline: "baseline-ns/op", measLabel: "1M items", measured: "subject-ns/op",
		ratio: "time-ratio", op: "<=", target: 1.2},
}

// What a row's result can be.
const (
	resultPass    = "pass"
	resultFail    = "FAIL"
	resultInfo    = "info"    // no bound: reported for scale
	resultMissing = "missing" // the baseline tool is not installed
	resultNone    = "NO RESULT"
)

// row is a goal as measured.
type row struct {
	goal
	base, meas, ratioText, targetText, result string
}

// judge matches each goal with its benchmark's results.
func judge(gs []goal, res []result) []row {
	var rows []row
	for _, g := range gs {
		r := row{goal: g, targetText: targetText(g)}
		var runs []result
		for _, x := range res {
			if x.matches(g.bench) {
				runs = append(runs, x)
			}
		}
		switch {
		case len(runs) == 0:
			r.result = resultNone
			r.base = "no result for " + g.bench
		case g.missing != "" && slices.ContainsFunc(runs, func(x result) bool { return x.metrics[g.missing] != 0 }):
			r.result = resultMissing
			r.base = g.baseLabel + ": missing"
			r.meas = label(g.measLabel, series(runs, g.measured), g.measured)
		default:
			r.base = label(g.baseLabel, series(runs, g.baseline), g.baseline)
			r.meas = label(g.measLabel, series(runs, g.measured), g.measured)
			judged := g.measured
			if g.ratio != "" {
				judged = g.ratio
				r.ratioText = spread(series(runs, g.ratio)) + "x"
			}
			vals := series(runs, judged)
			switch {
			case len(vals) < len(runs):
				r.result = resultNone
				r.meas += fmt.Sprintf(" (%s missing from %d of %d results)", judged, len(runs)-len(vals), len(runs))
			case g.op == "":
				r.result = resultInfo
			case meets(median(vals), g.op, g.target):
				r.result = resultPass
			default:
				r.result = resultFail
			}
		}
		rows = append(rows, r)
	}
	return rows
}

func targetText(g goal) string {
	if g.op == "" {
		return "(reported)"
	}
	t := strconv.FormatFloat(g.target, 'f', -1, 64)
	if g.ratio != "" {
		return g.op + " " + t + "x"
	}
	return g.op + " " + t + " " + g.measured
}

func meets(v float64, op string, target float64) bool {
	if op == ">=" {
		return v >= target
	}
	return v <= target
}

// series is the metric's values over the runs that reported it.
func series(runs []result, metric string) []float64 {
	var out []float64
	for _, r := range runs {
		if v, ok := r.metrics[metric]; ok {
			out = append(out, v)
		}
	}
	return out
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread is one value, or min–max (m=median) of several.
func spread(v []float64) string {
	switch len(v) {
	case 0:
		return "?"
	case 1:
		return num(v[0])
	}
	return fmt.Sprintf("%s–%s (m=%s)", num(slices.Min(v)), num(slices.Max(v)), num(median(v)))
}

func label(name string, v []float64, unit string) string {
	s := spread(v) + " " + unit
	if name != "" {
		s = name + " " + s
	}
	return s
}

// num prints v with about three significant digits.
func num(v float64) string {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

func printText(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "goal\twhat\tbaseline\tmeasured\tratio\ttarget\tresult")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.id, r.what, r.base, r.meas, dash(r.ratioText), r.targetText, r.result)
	}
	_ = tw.Flush()
}

func printMarkdown(w io.Writer, rows []row) {
	fmt.Fprintln(w, "| goal | what | baseline | measured | ratio | target | result |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, r := range rows {
		cells := []string{r.id, r.what, r.base, r.meas, dash(r.ratioText), r.targetText, r.result}
		for i, c := range cells {
			cells[i] = strings.ReplaceAll(c, "|", `\|`)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
}

func dash(s string) string { return cmp.Or(s, "—") }
