package main

// The harness's processes: runner processes and their output, what /proc
// says of processes, and freezing a runner with its tasks (see
// e2e_harness_test.go).

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// runnerProc is one runner process.
type runnerProc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	// out is stdout and stderr as they came; stdout and stderr apart (a
	// stdout given in procOpts replaces both out's and stdout's share).
	out, stdout, stderr *lineBuffer
	done                chan struct{}
	err                 error

	hwmMu sync.Mutex
	hwmKB int64 // highest VmHWM sampled while it ran (procOpts.sampleRSS)
}

// procOpts are the less common ways of starting a runner.
type procOpts struct {
	bin       string // runnerBin when ""
	dir       string // working directory; the test's when ""
	env       []string
	stdin     io.Reader
	stdout    io.Writer // stdout goes there instead of the buffers
	sampleRSS bool      // sample VmHWM every 10ms for peakRSSKB
	// within bounds runnerCmd's wait (a minute when 0).
	within time.Duration
}

// startRunner starts the runner binary with args and env; its output is
// kept, and shown if the test fails.
func startRunner(t *testing.T, name string, env []string, args ...string) *runnerProc {
	t.Helper()
	return startProc(t, name, procOpts{env: env}, args...)
}

// startProc is startRunner with options.
func startProc(t *testing.T, name string, o procOpts, args ...string) *runnerProc {
	t.Helper()
	bin := o.bin
	if bin == "" {
		bin = runnerBin
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = o.dir
	cmd.Env = append(cleanEnv(), o.env...)
	cmd.Stdin = o.stdin
	p := &runnerProc{t: t, name: name, cmd: cmd, out: &lineBuffer{}, stdout: &lineBuffer{}, stderr: &lineBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = io.MultiWriter(p.out, p.stdout), io.MultiWriter(p.out, p.stderr)
	if o.stdout != nil {
		cmd.Stdout = o.stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if o.sampleRSS {
		stop := startPolling(t, 10*time.Millisecond, func() {
			if kb := vmHWM(cmd.Process.Pid); kb > 0 {
				p.hwmMu.Lock()
				p.hwmKB = max(p.hwmKB, kb)
				p.hwmMu.Unlock()
			}
		})
		go func() { <-p.done; stop() }()
	}
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- output of %s (pid %d):\n%s", name, cmd.Process.Pid, p.out.String())
		}
	})
	return p
}

// cleanEnv is this process's environment without RUNNER_ and E2E_
// variables, so a developer's settings cannot leak into the runners under
// test.
func cleanEnv() []string {
	// A -race binary sleeps 1s at exit by default; the runner and its
	// exec supervisor are -race builds here.
	out := []string{"GORACE=atexit_sleep_ms=0"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RUNNER_") && !strings.HasPrefix(kv, "E2E_") && !strings.HasPrefix(kv, "GORACE=") {
			out = append(out, kv)
		}
	}
	return out
}

func (p *runnerProc) pid() int { return p.cmd.Process.Pid }

func (p *runnerProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// wait waits for the runner to exit and returns its exit code.
func (p *runnerProc) wait(within time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		p.t.Fatalf("%s still running after %v; output:\n%s", p.name, within, clip(p.out.String()))
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	p.t.Fatalf("%s: %v", p.name, p.err)
	return -1
}

// stopRunners sends SIGTERM to every runner of rs, then wants each to exit
// 0 within the given time.
func stopRunners(t *testing.T, within time.Duration, rs ...*runnerProc) {
	t.Helper()
	for _, r := range rs {
		r.signal(syscall.SIGTERM)
	}
	for _, r := range rs {
		if code := r.wait(within); code != 0 {
			t.Errorf("%s exited %d after SIGTERM, want 0", r.name, code)
		}
	}
}

// peakRSSKB is the highest VmHWM (the kernel's high-water mark of the
// resident set) read from /proc while the process ran: it bounds the
// process's peak up to the last sample, at most 10ms before it exited.
// (wait4's ru_maxrss is no use here: at exec, Linux keeps the high-water
// mark of the memory the child shared with this test process.)
func (p *runnerProc) peakRSSKB() int64 {
	p.hwmMu.Lock()
	defer p.hwmMu.Unlock()
	return p.hwmKB
}

// cmdResult is how a runner command ended.
type cmdResult struct {
	code                int
	out, stdout, stderr string
}

// split is the exit code, stdout and stderr.
func (r cmdResult) split() (int, string, string) { return r.code, r.stdout, r.stderr }

// runnerCmd runs a short runner command to its end (o.within, or a minute,
// at most).
func runnerCmd(t *testing.T, o procOpts, args ...string) cmdResult {
	t.Helper()
	p := startProc(t, "runner "+clip(strings.Join(args, " ")), o, args...)
	code := p.wait(cmp.Or(o.within, time.Minute))
	return cmdResult{code: code, out: p.out.String(), stdout: p.stdout.String(), stderr: p.stderr.String()}
}

// adminBase waits for the runner to log its admin endpoint's address and
// returns its base URL.
func (p *runnerProc) adminBase() string {
	p.t.Helper()
	var base string
	waitFor(p.t, p.name+" logging its admin address", 20*time.Second, func() (bool, string) {
		if m := adminAddrRE.FindStringSubmatch(p.out.String()); m != nil {
			base = "http://" + m[1]
		}
		return base != "", "not logged"
	})
	return base
}

var adminAddrRE = regexp.MustCompile(`admin endpoint listening: addr=(\S+)`)

// untilLogged is a waitFor condition: the runner logged s.
func (p *runnerProc) untilLogged(s string) func() (bool, string) {
	return func() (bool, string) {
		return strings.Contains(p.out.String(), s), fmt.Sprintf("%s has not logged %q", p.name, s)
	}
}

// untilSucceeded is a waitFor condition: the runner logged n successful
// task runs.
func (p *runnerProc) untilSucceeded(n int) func() (bool, string) {
	return func() (bool, string) {
		got := strings.Count(p.out.String(), "task succeeded")
		return got >= n, fmt.Sprintf("%d task runs succeeded", got)
	}
}

// ---- output ----

// lineBuffer collects output safely from two streams.
type lineBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lineBuffer) lines() []string { return lines(b.String()) }

// grep returns the lines holding every one of parts.
func (b *lineBuffer) grep(parts ...string) []string {
	var out []string
	for _, line := range b.lines() {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			out = append(out, line)
		}
	}
	return out
}

// first is the first line holding every one of parts, or "".
func (b *lineBuffer) first(parts ...string) string {
	if l := b.grep(parts...); len(l) > 0 {
		return l[0]
	}
	return ""
}

// lines splits s into its lines, without empty ones at the end.
func lines(s string) []string {
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20) // lines up to 1 MiB
	var out []string
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// clip shortens s for a failure message.
func clip(s string) string {
	if len(s) > 4000 {
		return s[:2000] + fmt.Sprintf("\n... (%d bytes) ...\n", len(s)-4000) + s[len(s)-2000:]
	}
	return s
}

// oneErrorLine returns the single "runner: ..." line of stderr, failing
// the test when there is not exactly one. Other lines (logs) start with a
// timestamp.
func oneErrorLine(t *testing.T, stderr string) string {
	t.Helper()
	var found []string
	for line := range strings.Lines(stderr) {
		if strings.HasPrefix(line, "runner: ") {
			found = append(found, strings.TrimSuffix(line, "\n"))
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one \"runner: \" error line on stderr, got %d:\n%s", len(found), clip(stderr))
	}
	return found[0]
}

// assertNoSecret wants none of secrets in text.
func assertNoSecret(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("a password appears in %s:\n%s", what, text)
		}
	}
}

// hclogLine is a line of the runner's text log.
var hclogLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d) \[(TRACE|DEBUG|INFO|WARN|ERROR)\]\s`)

// logTime is the time at the head of a runner's log line, and whether
// there is one.
func logTime(line string) (time.Time, bool) {
	ts, _, _ := strings.Cut(line, " ")
	t, err := time.Parse(time.RFC3339Nano, ts)
	return t, err == nil
}

// logTimeField is the time of a key="<time.Time>" field of a log line
// (zero if there is none that parses).
func logTimeField(line, key string) time.Time {
	_, rest, ok := strings.Cut(line, " "+key+"=\"")
	if !ok {
		return time.Time{}
	}
	v, _, _ := strings.Cut(rest, "\"")
	t, _ := time.Parse("2006-01-02 15:04:05.999999999 -0700 MST", v)
	return t
}

var (
	logItemRE  = regexp.MustCompile(`\bitem=(\S+)`)
	logTokenRE = regexp.MustCompile(`\btoken=(\d+)`)
)

// logItemToken are the item= and token= fields of a log line ("", 0 when
// absent).
func logItemToken(line string) (item string, token int64) {
	if m := logItemRE.FindStringSubmatch(line); m != nil {
		item = m[1]
	}
	if m := logTokenRE.FindStringSubmatch(line); m != nil {
		token, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return item, token
}

// leaseLostLines are the runner's "lease lost" lines for item and token.
func (p *runnerProc) leaseLostLines(item string, token int64) []string {
	return p.out.grep("lease lost", "item="+item+" ", "token="+strconv.FormatInt(token, 10))
}

// ---- /proc ----

// procInfo is what /proc/<pid>/stat says about a process.
type procInfo struct {
	pid, ppid, pgrp int
	state           byte // R, S, T (stopped), Z (zombie), ...
}

func procStat(pid int) (procInfo, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	// The fields after the parenthesised command name (which may hold
	// spaces and parentheses): state ppid pgrp ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 || f[0] == "" {
		return procInfo{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	pgrp, _ := strconv.Atoi(f[2])
	return procInfo{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0][0]}, true
}

// procs lists every process of the machine.
func procs() []procInfo {
	ents, _ := os.ReadDir("/proc")
	out := make([]procInfo, 0, len(ents))
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if p, ok := procStat(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

func (p procInfo) alive() bool { return p.state != 'Z' && p.state != 'X' }

// pidAlive reports whether pid exists and is not a zombie.
func pidAlive(pid int) bool {
	p, ok := procStat(pid)
	return ok && p.alive()
}

// untilGone is a waitFor condition: pid is gone.
func untilGone(pid int) func() (bool, string) {
	return func() (bool, string) { return !pidAlive(pid), fmt.Sprintf("pid %d alive", pid) }
}

// processTree is root and every process descending from it.
func processTree(root int) []int {
	children := map[int][]int{}
	for _, p := range procs() {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	tree := []int{root}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree
}

// procStatus is the value of one line of /proc/<pid>/status ("" when
// there is none).
func procStatus(pid int, key string) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// vmHWM is the VmHWM of pid in KiB, 0 when it cannot be read.
func vmHWM(pid int) int64 {
	kb, _ := strconv.ParseInt(strings.TrimSuffix(procStatus(pid, "VmHWM"), " kB"), 10, 64)
	return kb
}

// stopPending reports whether a SIGSTOP is pending for pid: it stops
// before it runs another instruction of its own. A process can stay so
// for as long as it is frozen: one waiting in the kernel for a vforked
// child to exec (os/exec starts commands so) shows as 'D', with the stop
// pending, until that child, stopped with it, runs on.
func stopPending(pid int) bool {
	for _, key := range []string{"SigPnd", "ShdPnd"} {
		mask, err := strconv.ParseUint(procStatus(pid, key), 16, 64)
		if err == nil && mask&(1<<(syscall.SIGSTOP-1)) != 0 {
			return true
		}
	}
	return false
}

// groupsAlive lists the processes in groups that are neither zombies nor
// gone.
func groupsAlive(groups []int) []procInfo {
	var out []procInfo
	for _, p := range procs() {
		if slices.Contains(groups, p.pgrp) && p.alive() {
			out = append(out, p)
		}
	}
	return out
}

// untilGroupsGone is a waitFor condition: no process of groups is alive.
func untilGroupsGone(groups []int) func() (bool, string) {
	return func() (bool, string) {
		alive := groupsAlive(groups)
		return len(alive) == 0, fmt.Sprintf("alive: %+v", alive)
	}
}

// ledgerProcs lists the live processes whose environment names ledger:
// a test's recorders (its tasks), whoever their parent is now. Pids
// are reused (pid_max may be 32768), so a pid alone proves nothing; the
// unique ledger name in the environment does.
func ledgerProcs(ledger string) []procInfo {
	var out []procInfo
	for _, p := range procs() {
		if p.alive() && ofLedger(p.pid, ledger) {
			out = append(out, p)
		}
	}
	return out
}

// untilNoTasks is a waitFor condition: no task process of the test's
// ledger is alive.
func (e *e2eEnv) untilNoTasks() func() (bool, string) {
	return func() (bool, string) {
		left := ledgerProcs(e.ledger)
		return len(left) == 0, fmt.Sprintf("task processes %+v", left)
	}
}

// ofLedger reports whether pid's environment names ledger.
func ofLedger(pid int, ledger string) bool {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	return err == nil && bytes.Contains(append([]byte{0}, env...), []byte("\x00E2E_LEDGER="+ledger+"\x00"))
}

// ---- a runner's tasks, and freezing a runner ----

// execSupervisor is the pid of the runner's exec supervisor, the child that
// starts its tasks (0 while it has none: it starts with the first task).
func execSupervisor(runner int) int {
	for _, p := range procs() {
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/cmdline")
		if p.ppid == runner && p.alive() && bytes.HasPrefix(cmdline, []byte("lockpool-exec-supervisor\x00")) {
			return p.pid
		}
	}
	return 0
}

// taskGroups lists the process groups of the runner's tasks: those of its
// exec supervisor's children, which lead them (or were orphaned in them).
func taskGroups(runner int) []int {
	sup := execSupervisor(runner)
	if sup == 0 {
		return nil
	}
	var groups []int
	for _, p := range procs() {
		// A child still in the supervisor's group has yet to make one.
		if p.ppid == sup && p.alive() && p.pgrp != sup && !slices.Contains(groups, p.pgrp) {
			groups = append(groups, p.pgrp)
		}
	}
	return groups
}

// stopRunner stops a runner with SIGSTOP (its own process group), so that
// it starts nothing new, and returns its task groups. Its exec supervisor
// runs on: it must be free to kill the tasks should the runner die. (It
// may start a task the runner asked for just before it stopped, whose
// group is not among those returned.)
func stopRunner(t *testing.T, pid int) []int {
	t.Helper()
	stopGroup(t, "runner", pid)
	return taskGroups(pid)
}

// stopGroup sends SIGSTOP to the process group pgid and waits until its
// leader is stopped.
func stopGroup(t *testing.T, what string, pgid int) {
	t.Helper()
	if err := syscall.Kill(-pgid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %s %d: %v", what, pgid, err)
	}
	waitFor(t, fmt.Sprintf("%s %d stopped", what, pgid), 5*time.Second, func() (bool, string) {
		p, ok := procStat(pgid)
		return !ok || p.state == 'T' || stopPending(pgid), fmt.Sprintf("state %c", p.state)
	})
}

// frozen is a runner and its tasks, stopped by freeze.
type frozen struct {
	runner, supervisor int   // the supervisor 0 if the runner had none
	groups             []int // the tasks' process groups
}

// freeze stops a runner and every task it started with SIGSTOP, as a VM
// freeze would: the runner first, then its exec supervisor (its own
// process group: a task forked but not yet in a group of its own is
// stopped with it), then the task groups. It returns once all of them are
// stopped.
func freeze(t *testing.T, pid int) frozen {
	t.Helper()
	f := frozen{runner: pid}
	stopGroup(t, "runner", pid)
	if f.supervisor = execSupervisor(pid); f.supervisor != 0 {
		stopGroup(t, "exec supervisor", f.supervisor)
	}
	f.groups = taskGroups(pid)
	for _, g := range f.groups {
		_ = syscall.Kill(-g, syscall.SIGSTOP)
	}
	// Should the test fail before it thaws them, the tasks must not stay
	// stopped, nor the supervisor that kills them when the runner dies.
	t.Cleanup(func() {
		if t.Failed() {
			f.thaw(false)
		}
	})
	waitFor(t, fmt.Sprintf("tasks of runner %d stopped", pid), 5*time.Second, func() (bool, string) {
		var running []procInfo
		for _, p := range groupsAlive(f.groups) {
			if p.state != 'T' && !stopPending(p.pid) {
				running = append(running, p)
			}
		}
		return len(running) == 0, fmt.Sprintf("running: %+v", running)
	})
	return f
}

// resume resumes the runner and its exec supervisor, not the tasks.
func (f frozen) resume() {
	_ = syscall.Kill(-f.runner, syscall.SIGCONT)
	if f.supervisor != 0 {
		_ = syscall.Kill(-f.supervisor, syscall.SIGCONT)
	}
}

// thaw resumes what freeze stopped.
func (f frozen) thaw(runnerFirst bool) {
	if runnerFirst {
		f.resume()
	}
	for _, g := range f.groups {
		_ = syscall.Kill(-g, syscall.SIGCONT)
	}
	if !runnerFirst {
		f.resume()
	}
}
