// Command report runs lockpool's goal benchmarks and summarises them: each
// performance goal of bench/README.md as a ratio against its baseline
// measured in the same run, with pass or FAIL. `make bench` uses it:
//
//	report run RESULTS [--] GO-TEST-ARGS...
//	    runs `go test -json GO-TEST-ARGS...`, shows its output as go test
//	    would, appends its JSON events to the file RESULTS, and exits with
//	    go test's status (a benchmark that fails fails the run).
//	report summary [-markdown] RESULTS
//	    prints the goal table from the events in RESULTS. A goal whose
//	    benchmark ran several times (-count) shows min–max, and is judged
//	    on the median. It exits 1 when a goal's benchmark has no result or
//	    a benchmark failed; a missed goal is reported, not an error.
//
// The go command is $GO, or go on PATH.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "run":
		args := os.Args[2:]
		if len(args) < 1 {
			usage()
		}
		results, goArgs := args[0], args[1:]
		if len(goArgs) > 0 && goArgs[0] == "--" {
			goArgs = goArgs[1:]
		}
		os.Exit(run(results, goArgs))
	case "summary":
		fs := flag.NewFlagSet("summary", flag.ExitOnError)
		markdown := fs.Bool("markdown", false, "print a Markdown table (for bench/README.md)")
		_ = fs.Parse(os.Args[2:])
		if fs.NArg() != 1 {
			usage()
		}
		os.Exit(summary(fs.Arg(0), *markdown, os.Stdout))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: report run RESULTS [--] GO-TEST-ARGS...\n       report summary [-markdown] RESULTS")
	os.Exit(2)
}

// event is one line of `go test -json` (test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// run runs go test -json with args, echoes its output, appends its events
// to the file results and returns go test's exit status.
func run(results string, args []string) int {
	f, err := os.OpenFile(results, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		return 1
	}
	defer f.Close()
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("# load average before this run: %s", load)
	}
	goCmd := cmp.Or(os.Getenv("GO"), "go")
	cmd := exec.Command(goCmd, append([]string{"test", "-json"}, args...)...)
	fmt.Printf("# %s\n", strings.Join(cmd.Args, " "))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		return 1
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		return 1
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if _, err := fmt.Fprintf(f, "%s\n", line); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
		}
		var ev event
		if json.Unmarshal(line, &ev) != nil {
			fmt.Printf("%s\n", line) // not an event: show it as it is
			continue
		}
		if ev.Action == "output" || ev.Action == "build-output" {
			fmt.Print(ev.Output)
		}
	}
	err = cmd.Wait()
	fmt.Printf("# took %v\n", time.Since(start).Round(time.Second))
	if sc.Err() != nil {
		fmt.Fprintln(os.Stderr, "report: reading go test's output:", sc.Err())
		return 1
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		return 1
	}
	return 0
}

// summary prints the goal table for the events in the file results.
func summary(results string, markdown bool, w io.Writer) int {
	f, err := os.Open(results)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		return 1
	}
	defer f.Close()
	res, failed, err := parseEvents(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		return 1
	}
	rows := judge(goals, res)
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(w, "\n== lockpool performance goals (%s, %s, %d CPUs, load average now %s)\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.Version(), runtime.NumCPU(), strings.TrimSpace(string(load)))
	fmt.Fprintln(w, "   several rounds: min–max, judged on the median (m=...)")
	if markdown {
		printMarkdown(w, rows)
	} else {
		printText(w, rows)
	}
	code := 0
	for _, r := range rows {
		if r.result == resultNone {
			code = 1
		}
	}
	for _, name := range failed {
		fmt.Fprintf(w, "benchmark failed: %s\n", name)
		code = 1
	}
	if code != 0 {
		fmt.Fprintln(w, "report: some benchmarks failed or have no result (see above)")
	}
	return code
}
