package main

import (
	"bytes"
	"cmp"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockpool/lockpool/internal/redistest"
)

// Benchmarks of the runner binary (built by TestMain; without -race when
// benchmarking) against the standard tools, measured in the same run. Run
// them with make bench (bench/README.md has the goals), or
//
//	go test -run '^$' -bench 'Runner(Throughput|Memory)' -benchtime 1x -count 3 ./cmd/runner
//
// Each b.Loop iteration is one round of the scenario; -count 3 gives three
// rounds, each its own result line, which bench/report summarises as
// min–max. A smaller batch for a quick look: append -args -bench.tasks 200.

// benchTasks is the batch size of BenchmarkRunnerThroughput.
var benchTasks = flag.Int("bench.tasks", 2000, "tasks in BenchmarkRunnerThroughput's batch")

// execConcurrency is how many tasks every tool runs at once.
const execConcurrency = 8

// throughputRounds counts BenchmarkRunnerThroughput's rounds, so that
// their order alternates: the runner first in one, last in the next.
var throughputRounds int

// execTool is one way of running the batch: the runner, or a baseline.
type execTool struct {
	name string // metric prefix: "" for the runner
	// missing says why the tool cannot run ("" when it can).
	missing string
	cmd     func() *exec.Cmd
	// wall and cpu sum the tool's rounds; cpu is user+sys of the tool's
	// process and of every descendant it waited for (wait4's rusage).
	wall, cpu time.Duration
	rounds    int
}

// BenchmarkRunnerThroughput runs a batch of 2,000 × `true` at concurrency 8
// with the runner binary on its embedded in-memory pool (tasks started as
// the runner always starts them, through its exec supervisor), and the same
// batch with the baselines, in one round:
//
//	xargs     seq 2000 | xargs -P8 -n1 true (the numbers on its stdin)
//	parallel  parallel -j8 --will-cite true ::: $(seq 2000) (GNU parallel)
//
// Each tool's start-up and shutdown count. Reported: runs/s and
// cpu-us/run (user+sys of the process and all its descendants ÷ tasks)
// of each (xargs-runs/s, ...); xargs-ratio and parallel-ratio, the
// runner's runs/s ÷ the tool's (goals >= 0.8 and >= 1.2); cpu-ratio, the
// runner's CPU per run ÷ xargs's (goal <= 1.3). A tool that is not on
// PATH (or a parallel that is not GNU's) is reported as
// <tool>-missing = 1, and logged, instead of its figures.
func BenchmarkRunnerThroughput(b *testing.B) {
	n := *benchTasks
	items := make([]string, n)
	nums := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf("i%d", i)
		nums[i] = strconv.Itoa(i + 1)
	}
	cfg := writeBenchConfig(b, fmt.Sprintf("mode: batch\npool:\n  items: [%s]\nworker:\n  concurrency: %d\ntask:\n  command: [\"true\"]\nlog:\n  level: warn\n",
		strings.Join(items, ", "), execConcurrency))

	runner := &execTool{cmd: func() *exec.Cmd { return exec.Command(runnerBin, "run", "-c", cfg) }}
	xargs := &execTool{name: "xargs"}
	if path, err := exec.LookPath("xargs"); err != nil {
		xargs.missing = "not on PATH"
	} else {
		xargs.cmd = func() *exec.Cmd {
			c := exec.Command(path, "-P"+strconv.Itoa(execConcurrency), "-n1", "true")
			c.Stdin = strings.NewReader(strings.Join(nums, "\n") + "\n")
			return c
		}
	}
	parallel := &execTool{name: "parallel"}
	if path, why := gnuParallel(); why != "" {
		parallel.missing = why
	} else {
		parallel.cmd = func() *exec.Cmd {
			args := append([]string{"-j" + strconv.Itoa(execConcurrency), "--will-cite", "true", ":::"}, nums...)
			return exec.Command(path, args...)
		}
	}
	baselines := []*execTool{xargs, parallel}
	for _, t := range baselines {
		if t.missing != "" {
			b.Logf("%s: missing (%s); its goals are reported as missing", t.name, t.missing)
		}
	}

	for b.Loop() {
		order := append([]*execTool{runner}, baselines...)
		if throughputRounds%2 == 1 {
			slices.Reverse(order)
		}
		throughputRounds++
		for _, t := range order {
			if t.missing == "" {
				t.run(b)
			}
		}
	}

	b.ReportMetric(0, "ns/op") // a round runs every tool; the rates are the result
	nf := float64(n)
	rate := func(t *execTool) float64 { return nf * float64(t.rounds) / t.wall.Seconds() }
	cpu := func(t *execTool) float64 { return float64(t.cpu.Microseconds()) / (nf * float64(t.rounds)) }
	b.ReportMetric(rate(runner), "runs/s")
	b.ReportMetric(cpu(runner), "cpu-us/run")
	for _, t := range baselines {
		if t.missing != "" {
			b.ReportMetric(1, t.name+"-missing")
			continue
		}
		b.ReportMetric(rate(t), t.name+"-runs/s")
		b.ReportMetric(cpu(t), t.name+"-cpu-us/run")
		b.ReportMetric(rate(runner)/rate(t), t.name+"-ratio")
	}
	if xargs.missing == "" {
		b.ReportMetric(cpu(runner)/cpu(xargs), "cpu-ratio")
	}
}

// run runs the tool's batch once and adds its times.
func (t *execTool) run(b *testing.B) {
	b.Helper()
	c := t.cmd()
	c.Env = cleanEnv()
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	// The runner's exec supervisor outlives it by a moment and is not
	// its to wait for: as the benchmark's child subreaper, this process
	// inherits it, reaps it, and counts its CPU (and its tasks') from
	// RUSAGE_CHILDREN, which sums every descendant reaped.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		b.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	before := childrenCPU(b)
	start := time.Now()
	err := c.Run()
	wall := time.Since(start)
	name := cmp.Or(t.name, "runner")
	if err != nil {
		b.Fatalf("%s: %v\n%s", name, err, clip(out.String()))
	}
	reapOrphans()
	t.wall += wall
	t.cpu += childrenCPU(b) - before
	t.rounds++
}

// childrenCPU is user+sys of every descendant this process has reaped.
func childrenCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_CHILDREN, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reapOrphans reaps the descendants reparented to this process (a
// runner's exec supervisor, which exits once its runner is gone), until
// none has exited for 100ms, for at most 2s.
func reapOrphans() {
	quiet := time.Now()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && time.Since(quiet) < 100*time.Millisecond; {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err != nil { // ECHILD: none left
			return
		}
		if pid > 0 {
			quiet = time.Now()
			continue
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gnuParallel finds GNU parallel on PATH, or says why there is none (moreutils
// has a parallel of its own, with other arguments).
func gnuParallel() (path, missing string) {
	path, err := exec.LookPath("parallel")
	if err != nil {
		return "", "not on PATH (make bench installs it with apt-get when root)"
	}
	out, _ := exec.Command(path, "--version").Output()
	if !bytes.Contains(out, []byte("GNU parallel")) {
		return "", path + " is not GNU parallel"
	}
	return path, ""
}

// writeBenchConfig writes a runner config file for the benchmark.
func writeBenchConfig(b *testing.B, body string) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "bench.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// memoryTasks is how many tasks BenchmarkRunnerMemory keeps running.
const memoryTasks = 64

// BenchmarkRunnerMemory starts the runner binary (in-memory pool) on a
// batch of 64 items at concurrency 64 with the task `sleep 30`, waits
// until 64 sleep processes run under it, and reads /proc: the resident
// set (VmRSS) of the runner, and of its helpers, every descendant that is
// not a task (not comm "sleep"): the exec supervisor (a per-task wrapper
// before it), whatever the runner starts to look after its tasks. Goal: rss-ratio =
// (runner + helpers) ÷ runner <= 1.5. Reported too: each sum in MiB, the
// helper count, and the same sums as PSS (shared pages divided among the
// processes sharing them: the memory the helpers really add). The
// helpers are logged by argv[0]. The runner is stopped with SIGTERM
// (shutdown_grace 1ms) once measured.
func BenchmarkRunnerMemory(b *testing.B) {
	items := make([]string, memoryTasks)
	for i := range items {
		items[i] = fmt.Sprintf("m%d", i)
	}
	cfg := writeBenchConfig(b, fmt.Sprintf("mode: batch\npool:\n  items: [%s]\nworker:\n  concurrency: %d\n  shutdown_grace: 1ms\ntask:\n  command: [\"sleep\", \"30\"]\n  kill_grace: 100ms\nlog:\n  level: warn\n",
		strings.Join(items, ", "), memoryTasks))
	var sum runnerMemory
	rounds := 0
	for b.Loop() {
		m := measureRunnerMemory(b, cfg)
		if rounds == 0 {
			b.Logf("runner %.1f MiB RSS; %d helpers %.1f MiB RSS (%s); %d tasks", mib(m.runnerRSS), m.helpers, mib(m.helperRSS), m.helperNames, m.tasks)
		}
		sum.add(m)
		rounds++
	}
	r := float64(rounds)
	b.ReportMetric(0, "ns/op") // the iteration waits for 64 tasks to start; the sizes are the result
	b.ReportMetric(mib(sum.runnerRSS)/r, "runner-rss-MiB")
	b.ReportMetric(mib(sum.runnerRSS+sum.helperRSS)/r, "total-rss-MiB")
	b.ReportMetric(float64(sum.runnerRSS+sum.helperRSS)/float64(sum.runnerRSS), "rss-ratio")
	b.ReportMetric(float64(sum.helpers)/r, "helpers")
	b.ReportMetric(mib(sum.runnerPSS)/r, "runner-pss-MiB")
	b.ReportMetric(mib(sum.runnerPSS+sum.helperPSS)/r, "total-pss-MiB")
	if sum.runnerPSS > 0 {
		b.ReportMetric(float64(sum.runnerPSS+sum.helperPSS)/float64(sum.runnerPSS), "pss-ratio")
	}
}

// runnerMemory is what /proc says of a runner and its descendants, in KiB.
type runnerMemory struct {
	runnerRSS, helperRSS, runnerPSS, helperPSS int64
	helpers, tasks                             int
	helperNames                                string // argv[0] × count
}

func (m *runnerMemory) add(o runnerMemory) {
	m.runnerRSS += o.runnerRSS
	m.helperRSS += o.helperRSS
	m.runnerPSS += o.runnerPSS
	m.helperPSS += o.helperPSS
	m.helpers += o.helpers
	m.tasks += o.tasks
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

// measureRunnerMemory runs the runner on cfg until memoryTasks tasks run,
// reads its memory and its descendants', and stops it.
func measureRunnerMemory(b *testing.B, cfg string) runnerMemory {
	b.Helper()
	c := exec.Command(runnerBin, "run", "-c", cfg)
	c.Env = cleanEnv()
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	pid := c.Process.Pid
	var seen []int // the tasks, killed if they outlive the runner
	defer func() {
		_ = c.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-done
			b.Errorf("the runner still ran 30s after SIGTERM; killed. Output:\n%s", clip(out.String()))
		}
		for _, p := range seen {
			if procStatus(p, "Name") == "sleep" {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
	}()

	var m runnerMemory
	sample := func() (bool, string) {
		select {
		case err := <-done:
			done <- err
			b.Fatalf("the runner exited (%v) before its tasks all ran. Output:\n%s", err, clip(out.String()))
		default:
		}
		m = readRunnerMemory(pid)
		return m.tasks == memoryTasks, fmt.Sprintf("%d tasks, %d helpers", m.tasks, m.helpers)
	}
	if _, err := redistest.Poll(fmt.Sprintf("%d sleep tasks under the runner", memoryTasks), 2*time.Minute, 50*time.Millisecond, sample); err != nil {
		b.Fatalf("%v. Output:\n%s", err, clip(out.String()))
	}
	time.Sleep(time.Second) // past the start-up burst
	if ok, seenNow := sample(); !ok {
		b.Fatalf("after a second, %s; want %d tasks", seenNow, memoryTasks)
	}
	for _, p := range processTree(pid)[1:] {
		seen = append(seen, p)
	}
	return m
}

// readRunnerMemory reads the memory of the runner pid and of its live
// descendants, tasks (comm "sleep") apart from helpers.
func readRunnerMemory(pid int) runnerMemory {
	m := runnerMemory{runnerRSS: statusKB(pid, "VmRSS"), runnerPSS: pssKB(pid)}
	names := map[string]int{}
	for _, p := range processTree(pid)[1:] {
		if !pidAlive(p) {
			continue
		}
		if procStatus(p, "Name") == "sleep" {
			m.tasks++
			continue
		}
		m.helpers++
		m.helperRSS += statusKB(p, "VmRSS")
		m.helperPSS += pssKB(p)
		names[argv0(p)]++
	}
	var parts []string
	for name, k := range names {
		parts = append(parts, fmt.Sprintf("%d × %s", k, name))
	}
	slices.Sort(parts)
	m.helperNames = strings.Join(parts, ", ")
	if m.helperNames == "" {
		m.helperNames = "none"
	}
	return m
}

// statusKB is a "<n> kB" line of /proc/<pid>/status, 0 when unreadable.
func statusKB(pid int, key string) int64 {
	kb, _ := strconv.ParseInt(strings.TrimSuffix(procStatus(pid, key), " kB"), 10, 64)
	return kb
}

// pssKB is the Pss line of /proc/<pid>/smaps_rollup, 0 when unreadable.
func pssKB(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// argv0 is the first word of /proc/<pid>/cmdline ("?" when unreadable).
func argv0(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(data) == 0 {
		return "?"
	}
	first, _, _ := bytes.Cut(data, []byte{0})
	return filepath.Base(string(first))
}
