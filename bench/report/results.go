package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// result is one benchmark result line: its metrics by unit.
type result struct {
	name    string // without the -GOMAXPROCS suffix
	metrics map[string]float64
}

// benchLine is a result line of go test -bench: name, iterations, then
// "value unit" pairs apart by tabs.
var benchLine = regexp.MustCompile(`^(Benchmark\S+)\s+(\d+)\s+(.*)$`)

// procsSuffix is the -GOMAXPROCS go test appends to a benchmark's name
// (when GOMAXPROCS > 1).
var procsSuffix = regexp.MustCompile(`^-\d+$`)

// parseEvents reads go test -json events and returns the benchmark results
// in order, and the benchmarks (or packages) that failed. The output of a
// package is joined before it is split into lines: go test writes a
// benchmark's name and its figures in two events.
func parseEvents(r io.Reader) ([]result, []string, error) {
	var order []string
	text := map[string]*strings.Builder{}
	var failed []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			continue // not an event (e.g. a build error line)
		}
		switch ev.Action {
		case "output":
			sb := text[ev.Package]
			if sb == nil {
				sb = &strings.Builder{}
				text[ev.Package] = sb
				order = append(order, ev.Package)
			}
			sb.WriteString(ev.Output)
		case "fail":
			failed = append(failed, strings.TrimSpace(ev.Package+" "+ev.Test))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	var out []result
	for _, pkg := range order {
		for line := range strings.Lines(text[pkg].String()) {
			if r, ok := parseLine(strings.TrimRight(line, "\n")); ok {
				out = append(out, r)
			}
		}
	}
	return out, failed, nil
}

// parseLine parses one result line.
func parseLine(line string) (result, bool) {
	m := benchLine.FindStringSubmatch(line)
	if m == nil {
		return result{}, false
	}
	r := result{name: m[1], metrics: map[string]float64{}}
	for _, pair := range strings.Split(m[3], "\t") {
		f := strings.Fields(pair)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		r.metrics[f[1]] = v
	}
	return r, len(r.metrics) > 0
}

// matches reports whether the result is of the benchmark name (given
// without the -GOMAXPROCS suffix).
func (r result) matches(name string) bool {
	rest, ok := strings.CutPrefix(r.name, name)
	return ok && (rest == "" || procsSuffix.MatchString(rest))
}

// String is the result as go test prints it, for messages.
func (r result) String() string { return fmt.Sprintf("%s %v", r.name, r.metrics) }
