//go:build linux

package worker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/worker"
)

// fakeRunnerEnv makes the test binary a fake runner for TestExecRunnerDeath:
// "<wrapper 0|1>:<tasks>:<dir>".
const fakeRunnerEnv = "LOCKPOOL_TEST_FAKE_RUNNER"

// noServeEnv makes an exec supervisor started by a fake runner act as a
// program whose main does not call ServeExecWrapper: it says it was
// misused and exits 2.
const noServeEnv = "LOCKPOOL_TEST_NO_SERVE"

// init serves the fake runner before the testing package starts. It is not
// a Test function so that no test exists that only passes when run by hand.
func init() {
	if os.Getenv(noServeEnv) != "" && os.Getenv("LOCKPOOL_EXEC_SUPERVISOR") != "" {
		fmt.Fprintln(os.Stderr, "usage: a program that forgot ServeExecWrapper")
		os.Exit(2)
	}
	// A supervisor started by the fake runner inherits fakeRunnerEnv: it
	// must be served first.
	worker.ServeExecWrapper()
	closeInheritedOnExec()
	// Supervisors are this test binary: built with -race, each would
	// sleep a second before exiting 0.
	if _, ok := os.LookupEnv("GORACE"); !ok {
		_ = os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	spec, ok := os.LookupEnv(fakeRunnerEnv)
	if !ok {
		return
	}
	_ = os.Unsetenv(fakeRunnerEnv)
	os.Exit(fakeRunner(spec))
}

// closeInheritedOnExec marks the descriptors this test binary inherited
// (from whatever started go test) close-on-exec. Commands would inherit
// them, as they inherit a runner's; TestExecNoDescriptorLeak is to see
// only what the package passes.
func closeInheritedOnExec() {
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if n, err := strconv.Atoi(fd.Name()); err == nil && n > 2 {
			syscall.CloseOnExec(n)
		}
	}
}

// fakeRunner runs tasks at once, each of which starts a grandchild and
// writes both pids (child.<worker>.pid, grandchild.<worker>.pid), and
// waits to be killed.
func fakeRunner(spec string) int {
	parts := strings.SplitN(spec, ":", 3)
	if len(parts) != 3 {
		parts = []string{"", "", ""}
	}
	n, err := strconv.Atoi(parts[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake runner: bad spec %q\n", spec)
		return 2
	}
	task := &worker.ExecTask{
		Command: sh(`sleep 300 & echo $! > grandchild.$RUNNER_WORKER.pid; echo $$ > child.$RUNNER_WORKER.pid; wait`),
		Dir:     parts[2],
		Wrapper: parts[0] == "1",
	}
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- task.Run(context.Background(), worker.Job{Item: "runner-death", Worker: i}) }()
	}
	fmt.Fprintf(os.Stderr, "fake runner: Run returned (want it killed first): %v\n", <-errs)
	return 3
}

var testJob = worker.Job{
	Item:    "item-1",
	Token:   1<<40 + 7,
	Owner:   "test-runner/w3",
	Worker:  3,
	Attempt: 2,
}

// forModes runs f as parallel subtests, without and with the wrapper.
func forModes(t *testing.T, f func(t *testing.T, wrapper bool)) {
	t.Helper()
	for _, wrapper := range []bool{false, true} {
		t.Run(fmt.Sprintf("wrapper=%v", wrapper), func(t *testing.T) {
			t.Parallel()
			f(t, wrapper)
		})
	}
}

func sh(script string) []string { return []string{"sh", "-c", script} }

// outLine is one call of ExecTask.Output.
type outLine struct {
	job    worker.Job
	stream string
	text   string
}

// recorder collects output and notes overlapping Output calls.
type recorder struct {
	mu       sync.Mutex
	lines    []outLine
	inFlight atomic.Int32
	overlap  atomic.Bool
	ready    chan struct{}
	once     sync.Once
}

func newRecorder() *recorder { return &recorder{ready: make(chan struct{})} }

// output is an ExecTask.Output; the line "ready" closes r.ready.
func (r *recorder) output(job worker.Job, stream, text string) {
	if r.inFlight.Add(1) > 1 {
		r.overlap.Store(true)
	}
	defer r.inFlight.Add(-1)
	r.mu.Lock()
	r.lines = append(r.lines, outLine{job, stream, text})
	r.mu.Unlock()
	if text == "ready" {
		r.once.Do(func() { close(r.ready) })
	}
}

func (r *recorder) stream(name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range r.lines {
		if l.stream == name {
			out = append(out, l.text)
		}
	}
	return out
}

// runAsync runs task and returns a channel with its error.
func runAsync(ctx context.Context, task *worker.ExecTask, job worker.Job) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- task.Run(ctx, job) }()
	return errc
}

// awaitReady waits for the task to print "ready".
func awaitReady(t *testing.T, r *recorder, errc <-chan error) {
	t.Helper()
	select {
	case <-r.ready:
	case err := <-errc:
		t.Fatalf("task ended before printing ready: %v; stderr %q", err, r.stream("stderr"))
	case <-time.After(10 * time.Second):
		t.Fatalf("task did not print ready within 10s (%s)", redistest.SchedDelay())
	}
}

// proc is a process as /proc shows it: enough to tell it apart from a
// later process with the same pid.
type proc struct {
	pid   int
	start string // start time since boot, in clock ticks
}

// procStat returns the state, parent and start time of pid.
func procStat(pid int) (state byte, ppid int, start string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, "", err
	}
	// "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 {
		return 0, 0, "", fmt.Errorf("short /proc/%d/stat: %q", pid, s)
	}
	ppid, err = strconv.Atoi(fields[1])
	return fields[0][0], ppid, fields[19], err
}

// readPidFile waits for a pid file written by a task and returns the
// process it names, which must be alive.
func readPidFile(t *testing.T, path string) proc {
	t.Helper()
	var s string
	redistest.Eventually(t, "a pid in "+path, 10*time.Second, func() bool {
		b, _ := os.ReadFile(path)
		s = string(b)
		return strings.HasSuffix(s, "\n")
	})
	pid, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		t.Fatalf("pid file %s holds %q", path, s)
	}
	_, _, start, err := procStat(pid)
	if err != nil {
		t.Fatalf("process %d of %s is gone already: %v", pid, path, err)
	}
	return proc{pid, start}
}

// alive reports whether p still runs. A zombie counts as dead: its parent
// (perhaps an init that does not reap) has yet to collect it.
func (p proc) alive() bool {
	if err := syscall.Kill(p.pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	state, _, start, err := procStat(p.pid)
	return err == nil && start == p.start && state != 'Z' && state != 'X'
}

// assertDies fails the test unless p dies within d.
func assertDies(t *testing.T, what string, p proc, d time.Duration) {
	t.Helper()
	redistest.Eventually(t, fmt.Sprintf("%s (pid %d) to die", what, p.pid), d, func() bool { return !p.alive() })
}

// killIfAlive is a cleanup for processes a failing test may leave behind.
func killIfAlive(p proc) {
	if p.alive() {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
}

func TestExecEnv(t *testing.T) {
	t.Parallel()
	items := []string{
		"plain-item",
		"$(touch pwned)",
		"`touch pwned`",
		"; rm -rf victim; touch pwned",
		"' \" \\ $HOME * -n",
		"line one\nline two: ünïcødé ✓ 日本",
	}
	vars := []string{"RUNNER_ITEM", "RUNNER_TOKEN", "RUNNER_OWNER", "RUNNER_WORKER", "RUNNER_ATTEMPT", "EXTRA", "EMPTY", "PATH", "LOCKPOOL_EXEC_SUPERVISOR"}
	var script strings.Builder
	for _, v := range vars {
		fmt.Fprintf(&script, `printf '%%s' "${%s-<unset>}" > %s.out; `, v, v)
	}
	forModes(t, func(t *testing.T, wrapper bool) {
		for i, item := range items {
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, "victim"), 0o755); err != nil {
				t.Fatal(err)
			}
			task := &worker.ExecTask{
				Command: sh(script.String()),
				Env:     []string{"EXTRA=a=b c", "EMPTY=", "RUNNER_ITEM=spoofed"},
				Dir:     dir,
				Wrapper: wrapper,
			}
			job := testJob
			job.Item = item
			if err := task.Run(t.Context(), job); err != nil {
				t.Fatalf("item %d %q: Run: %v", i, item, err)
			}
			want := map[string]string{
				"RUNNER_ITEM":              item,
				"RUNNER_TOKEN":             "1099511627783",
				"RUNNER_OWNER":             "test-runner/w3",
				"RUNNER_WORKER":            "3",
				"RUNNER_ATTEMPT":           "2",
				"EXTRA":                    "a=b c",
				"EMPTY":                    "",
				"PATH":                     os.Getenv("PATH"),
				"LOCKPOOL_EXEC_SUPERVISOR": "<unset>",
			}
			for _, v := range vars {
				got, err := os.ReadFile(filepath.Join(dir, v+".out"))
				if err != nil {
					t.Fatalf("item %d: %v", i, err)
				}
				if string(got) != want[v] {
					t.Errorf("item %d: task saw %s=%q, want %q", i, v, got, want[v])
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "pwned")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("item %d %q: file pwned exists (stat: %v): the item name was run", i, item, err)
			}
			if _, err := os.Stat(filepath.Join(dir, "victim")); err != nil {
				t.Errorf("item %d %q: directory victim is gone: %v", i, item, err)
			}
		}
	})
}

func TestExecExitStatus(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, wrapper bool) {
		cases := []struct {
			script string
			want   string // "" for success
			code   int    // worker.ExitError's Code
		}{
			{"exit 0", "", 0},
			{"exit 3", "exit status 3", 3},
			{"exit 255", "exit status 255", 255},
			{"kill -KILL $$", "signal: killed", 128 + 9},
			{"kill -TERM $$", "signal: terminated", 128 + 15},
		}
		for _, c := range cases {
			task := &worker.ExecTask{Command: sh(c.script), Wrapper: wrapper}
			err := task.Run(t.Context(), testJob)
			var ee *worker.ExitError
			if c.want != "" && (!errors.As(err, &ee) || ee.Code() != c.code) {
				t.Errorf("%q: Run = %v, want a *worker.ExitError with Code %d", c.script, err, c.code)
			}
			switch {
			case c.want == "" && err != nil:
				t.Errorf("%q: Run = %v, want nil", c.script, err)
			case c.want == "":
			case !errors.Is(err, worker.ErrTaskFailed):
				t.Errorf("%q: Run = %v, want an error wrapping ErrTaskFailed", c.script, err)
			case !strings.Contains(err.Error(), c.want):
				t.Errorf("%q: Run = %q, want it to say %q", c.script, err, c.want)
			}
		}
	})
}

func TestExecStartFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	noExec := filepath.Join(dir, "not-executable.sh")
	if err := os.WriteFile(noExec, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	forModes(t, func(t *testing.T, wrapper bool) {
		cases := []struct {
			name    string
			command []string
			dir     string
			is      error
			says    string
		}{
			{"not in PATH", []string{"lockpool-test-no-such-command", "x"}, "", exec.ErrNotFound, "lockpool-test-no-such-command"},
			{"missing relative to Dir", []string{"./missing.sh"}, dir, fs.ErrNotExist, "missing.sh"},
			{"not executable", []string{noExec}, "", fs.ErrPermission, "not-executable.sh"},
			{"no such Dir", []string{"true"}, filepath.Join(dir, "no-such-dir"), fs.ErrNotExist, "no-such-dir"},
		}
		for _, c := range cases {
			out := newRecorder()
			task := &worker.ExecTask{Command: c.command, Dir: c.dir, Wrapper: wrapper, Output: out.output}
			err := task.Run(t.Context(), testJob)
			if !errors.Is(err, worker.ErrTaskFailed) || !errors.Is(err, c.is) {
				t.Errorf("%s: Run = %v, want an error wrapping ErrTaskFailed and %v", c.name, err, c.is)
				continue
			}
			if !strings.Contains(err.Error(), c.says) {
				t.Errorf("%s: Run = %q, want it to name %q", c.name, err, c.says)
			}
		}
	})
}

func TestExecValidate(t *testing.T) {
	t.Parallel()
	bad := []struct {
		name string
		task worker.ExecTask
	}{
		{"no Command", worker.ExecTask{}},
		{"empty Command[0]", worker.ExecTask{Command: []string{"", "x"}}},
		{"NUL in Command[0]", worker.ExecTask{Command: []string{"tr\x00ue"}}},
		{"NUL in an argument", worker.ExecTask{Command: []string{"echo", "a\x00b"}}},
		{"Env without =", worker.ExecTask{Command: []string{"true"}, Env: []string{"A=1", "NOVALUE"}}},
		{"Env without key", worker.ExecTask{Command: []string{"true"}, Env: []string{"=value"}}},
		{"NUL in Env", worker.ExecTask{Command: []string{"true"}, Env: []string{"K=v\x00w"}}},
		{"NUL in Dir", worker.ExecTask{Command: []string{"true"}, Dir: "/tmp\x00x"}},
		{"negative KillGrace", worker.ExecTask{Command: []string{"true"}, KillGrace: -time.Second}},
	}
	for _, c := range bad {
		if err := c.task.Validate(); !errors.Is(err, worker.ErrInvalidConfig) {
			t.Errorf("%s: Validate = %v, want an error wrapping ErrInvalidConfig", c.name, err)
		}
		if err := c.task.Run(t.Context(), testJob); !errors.Is(err, worker.ErrInvalidConfig) {
			t.Errorf("%s: Run = %v, want an error wrapping ErrInvalidConfig", c.name, err)
		}
	}
	good := worker.ExecTask{Command: []string{"true"}, Env: []string{"A=", "B=c=d"}, KillGrace: 0}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(%+v) = %v, want nil", good, err)
	}
}

func TestExecOutput(t *testing.T) {
	t.Parallel()
	const script = `
i=0
while [ $i -lt 50 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done
echo
printf 'cr\r\n'
head -c 150000 /dev/zero | tr '\0' a; echo
head -c 65536 /dev/zero | tr '\0' b; echo
printf 'tail without newline'
printf 'err tail' >&2
`
	var wantOut, wantErr []string
	for i := range 50 {
		wantOut = append(wantOut, fmt.Sprintf("out %d", i))
		wantErr = append(wantErr, fmt.Sprintf("err %d", i))
	}
	wantOut = append(wantOut, "", "cr\r",
		strings.Repeat("a", 65536), strings.Repeat("a", 65536), strings.Repeat("a", 150000-2*65536),
		strings.Repeat("b", 65536),
		"tail without newline")
	wantErr = append(wantErr, "err tail")

	forModes(t, func(t *testing.T, wrapper bool) {
		out := newRecorder()
		task := &worker.ExecTask{Command: sh(script), Output: out.output, Wrapper: wrapper}
		if err := task.Run(t.Context(), testJob); err != nil {
			t.Fatalf("Run: %v", err)
		}
		for _, s := range []struct {
			name string
			want []string
		}{{"stdout", wantOut}, {"stderr", wantErr}} {
			got := out.stream(s.name)
			if len(got) != len(s.want) {
				t.Errorf("%s: %d lines, want %d", s.name, len(got), len(s.want))
			}
			for i := range min(len(got), len(s.want)) {
				if got[i] != s.want[i] {
					t.Errorf("%s line %d: %q (%d bytes), want %q (%d bytes)",
						s.name, i, trim(got[i]), len(got[i]), trim(s.want[i]), len(s.want[i]))
				}
			}
		}
		for _, l := range out.lines {
			if l.job != testJob || (l.stream != "stdout" && l.stream != "stderr") {
				t.Fatalf("line %q tagged %+v %q, want job %+v", trim(l.text), l.job, l.stream, testJob)
			}
		}
		if out.overlap.Load() {
			t.Error("Output calls of one Run overlapped")
		}
	})
}

// trim shortens long lines in failure messages.
func trim(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func TestExecConcurrentJobs(t *testing.T) {
	t.Parallel()
	out := newRecorder()
	// One task value shared by every worker, as a pool does.
	task := &worker.ExecTask{Command: sh(`echo "$RUNNER_ITEM"; echo "$RUNNER_WORKER" >&2`), Output: out.output}
	const n = 16
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			job := worker.Job{Item: fmt.Sprintf("item-%d", i), Worker: i}
			if err := task.Run(t.Context(), job); err != nil {
				t.Errorf("job %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if len(out.lines) != 2*n {
		t.Fatalf("%d lines, want %d", len(out.lines), 2*n)
	}
	for _, l := range out.lines {
		want := map[string]string{"stdout": l.job.Item, "stderr": strconv.Itoa(l.job.Worker)}[l.stream]
		if l.text != want {
			t.Errorf("job %+v got %s line %q, want %q", l.job, l.stream, l.text, want)
		}
	}
}

func TestExecCancelNotStarted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithCancelCause(t.Context())
	cancel(worker.ErrLeaseLost)
	task := &worker.ExecTask{Command: []string{"touch", "ran"}, Dir: dir}
	err := task.Run(ctx, testJob)
	if !errors.Is(err, worker.ErrLeaseLost) {
		t.Errorf("Run = %v, want an error wrapping ErrLeaseLost", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the command ran with its context already cancelled (stat: %v)", err)
	}
}

func TestExecCancelTerm(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, wrapper bool) {
		cases := []struct {
			name   string
			script string
			cause  error
			failed bool   // ErrTaskFailed wanted
			says   string // in the error
		}{
			{"dies of SIGTERM", "echo ready; sleep 30", worker.ErrShutdown, true, "signal: terminated"},
			{"exits 0 on SIGTERM", "trap 'exit 0' TERM; echo ready; sleep 30 & wait", worker.ErrTaskTimeout, false, "exited 0"},
		}
		for _, c := range cases {
			out := newRecorder()
			// Far longer than the test waits: SIGTERM must be what ends it.
			task := &worker.ExecTask{Command: sh(c.script), Output: out.output, KillGrace: 30 * time.Second, Wrapper: wrapper}
			ctx, cancel := context.WithCancelCause(t.Context())
			errc := runAsync(ctx, task, testJob)
			awaitReady(t, out, errc)
			cancel(c.cause)
			err := waitErr(t, "task", errc, 10*time.Second)
			if !errors.Is(err, c.cause) || errors.Is(err, worker.ErrTaskFailed) != c.failed || !strings.Contains(fmt.Sprint(err), c.says) {
				t.Errorf("%s: Run = %v, want an error wrapping %v, wrapping ErrTaskFailed %v, saying %q",
					c.name, err, c.cause, c.failed, c.says)
			}
		}
	})
}

func TestExecCancelKillGrace(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, wrapper bool) {
		const grace = 300 * time.Millisecond
		out := newRecorder()
		// The ignored SIGTERM is inherited by sleep.
		task := &worker.ExecTask{Command: sh(`trap '' TERM; echo ready; sleep 30`), Output: out.output, KillGrace: grace, Wrapper: wrapper}
		ctx, cancel := context.WithCancelCause(t.Context())
		errc := runAsync(ctx, task, testJob)
		awaitReady(t, out, errc)
		cancelled := time.Now()
		cancel(worker.ErrLeaseLost)
		err := waitErr(t, "task", errc, grace+2*time.Second)
		if took := time.Since(cancelled); took < grace {
			t.Errorf("Run returned %v after the cancel, before KillGrace %v: SIGTERM should have been ignored", took, grace)
		}
		if !errors.Is(err, worker.ErrLeaseLost) || !errors.Is(err, worker.ErrTaskFailed) || !strings.Contains(fmt.Sprint(err), "signal: killed") {
			t.Errorf("Run = %v, want an error wrapping ErrLeaseLost and ErrTaskFailed, saying signal: killed", err)
		}
	})
}

func TestExecCancelKillsGrandchildren(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, wrapper bool) {
		dir := t.TempDir()
		out := newRecorder()
		// The grandchild ignores SIGTERM and holds stdout open; its
		// parent dies of SIGTERM.
		task := &worker.ExecTask{
			Command:   sh(`(trap '' TERM; exec sleep 300) & echo $! > grandchild.pid; echo ready; wait`),
			Dir:       dir,
			Output:    out.output,
			KillGrace: 30 * time.Second,
			Wrapper:   wrapper,
		}
		ctx, cancel := context.WithCancelCause(t.Context())
		errc := runAsync(ctx, task, testJob)
		awaitReady(t, out, errc)
		grandchild := readPidFile(t, filepath.Join(dir, "grandchild.pid"))
		t.Cleanup(func() { killIfAlive(grandchild) })
		cancel(worker.ErrShutdown)
		// Within KillGrace: the grandchild goes when its parent does.
		err := waitErr(t, "task", errc, 10*time.Second)
		if !errors.Is(err, worker.ErrShutdown) || !errors.Is(err, worker.ErrTaskFailed) {
			t.Errorf("Run = %v, want an error wrapping ErrShutdown and ErrTaskFailed", err)
		}
		assertDies(t, "grandchild sleep", grandchild, 2*time.Second)
	})
}

func TestExecExitKillsGrandchildren(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, wrapper bool) {
		dir := t.TempDir()
		out := newRecorder()
		// The grandchild inherits stdout: Run must not wait for it. The
		// command exits once the test has seen the grandchild alive.
		task := &worker.ExecTask{
			Command: sh(`sleep 300 & echo $! > grandchild.pid; while [ ! -e exit ]; do sleep 0.05; done; echo done`),
			Dir:     dir,
			Output:  out.output,
			Wrapper: wrapper,
		}
		errc := runAsync(t.Context(), task, testJob)
		grandchild := readPidFile(t, filepath.Join(dir, "grandchild.pid"))
		t.Cleanup(func() { killIfAlive(grandchild) })
		if err := os.WriteFile(filepath.Join(dir, "exit"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := waitErr(t, "task", errc, 10*time.Second); err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		assertDies(t, "grandchild sleep", grandchild, 2*time.Second)
		if wrapper {
			// Orphaned, it was reparented to the exec supervisor, its
			// subreaper, which must reap it rather than leave a zombie.
			redistest.Eventually(t, fmt.Sprintf("the grandchild sleep (pid %d) reaped", grandchild.pid), 5*time.Second, func() bool {
				_, _, start, err := procStat(grandchild.pid)
				return err != nil || start != grandchild.start
			})
		}
		if got := out.stream("stdout"); len(got) != 1 || got[0] != "done" {
			t.Errorf("stdout %q, want [done]", got)
		}
	})
}

// TestExecRunnerDeath kill -9s a runner process while its tasks run. With
// the wrapper (the exec supervisor) every task and its grandchild die;
// without it only the tasks themselves do (grandchildren are not covered).
func TestExecRunnerDeath(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, wrapper bool) {
		const tasks = 4
		dir := t.TempDir()
		var stderr bytes.Buffer
		runner := exec.Command(os.Args[0], "-test.run=^$")
		runner.Env = append(os.Environ(), fmt.Sprintf("%s=%d:%d:%s", fakeRunnerEnv, map[bool]int{false: 0, true: 1}[wrapper], tasks, dir))
		runner.Stderr = &stderr
		runner.WaitDelay = time.Second
		// Should this test die, the fake runner dies too.
		runner.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := runner.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = runner.Process.Kill()
			_ = runner.Wait()
		})
		var children, grandchildren []proc
		for i := range tasks {
			grandchild := readPidFile(t, filepath.Join(dir, fmt.Sprintf("grandchild.%d.pid", i)))
			t.Cleanup(func() { killIfAlive(grandchild) })
			child := readPidFile(t, filepath.Join(dir, fmt.Sprintf("child.%d.pid", i)))
			t.Cleanup(func() { killIfAlive(child) })
			children, grandchildren = append(children, child), append(grandchildren, grandchild)
		}

		_, parentPid, _, err := procStat(children[0].pid)
		if err != nil {
			t.Fatal(err)
		}
		_, _, parentStart, err := procStat(parentPid)
		if err != nil {
			t.Fatal(err)
		}
		parent := proc{parentPid, parentStart}
		if isRunner := parentPid == runner.Process.Pid; isRunner == wrapper {
			t.Fatalf("task's parent is %d, runner is %d: want the exec supervisor in between iff Wrapper (%v)", parentPid, runner.Process.Pid, wrapper)
		}

		if err := runner.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		mustDie := children
		if wrapper {
			mustDie = slices.Concat(children, grandchildren, []proc{parent})
		}
		// Tens of milliseconds on an idle machine; the bound is for a
		// loaded one.
		took := redistest.Eventually(t, fmt.Sprintf("the tasks%s to die after the runner's kill -9",
			map[bool]string{false: "", true: ", their grandchildren and the exec supervisor"}[wrapper]),
			5*time.Second, func() bool { return !slices.ContainsFunc(mustDie, proc.alive) })
		t.Logf("%d processes gone %v after the kill -9 of the runner", len(mustDie), took.Round(time.Millisecond))
		if err := runner.Wait(); !strings.Contains(fmt.Sprint(err), "signal: killed") {
			t.Fatalf("fake runner: %v, want signal: killed; its stderr:\n%s", err, stderr.String())
		}
	})
}

func TestExecOutputPanic(t *testing.T) {
	t.Parallel()
	task := &worker.ExecTask{
		Command:   sh(`echo boom; sleep 30`),
		KillGrace: time.Second,
		Output: func(_ worker.Job, _, line string) {
			if line == "boom" {
				panic("output exploded")
			}
		},
	}
	start := time.Now()
	got := func() (v any) {
		defer func() { v = recover() }()
		err := task.Run(t.Context(), testJob)
		t.Errorf("Run returned %v, want a panic", err)
		return nil
	}()
	if got != "output exploded" {
		t.Errorf("Run panicked with %v, want %q", got, "output exploded")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Run took %v: the panic should have stopped the command (%s)", took, redistest.SchedDelay())
	}
}

// TestExecNoGoroutineLeak runs tasks every way they can end and checks that
// no goroutine is left behind. It is not parallel, so that other tests do
// not change the count.
func TestExecNoGoroutineLeak(t *testing.T) {
	out := newRecorder()
	run := func(task *worker.ExecTask, cancelAfter time.Duration) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		if cancelAfter > 0 {
			time.AfterFunc(cancelAfter, cancel)
		}
		_ = task.Run(ctx, testJob)
	}
	// The first tasks start the package's long-lived process spawner and
	// the exec supervisor's reader.
	run(&worker.ExecTask{Command: []string{"true"}}, 0)
	run(&worker.ExecTask{Command: []string{"true"}, Wrapper: true}, 0)
	before := runtime.NumGoroutine()
	for _, wrapper := range []bool{false, true} {
		run(&worker.ExecTask{Command: sh("echo a; echo b >&2"), Output: out.output, Wrapper: wrapper}, 0)
		run(&worker.ExecTask{Command: sh("exit 3"), Output: out.output, Wrapper: wrapper}, 0)
		run(&worker.ExecTask{Command: []string{"lockpool-test-no-such-command"}, Output: out.output, Wrapper: wrapper}, 0)
		run(&worker.ExecTask{Command: sh("sleep 30"), Output: out.output, Wrapper: wrapper}, 100*time.Millisecond)
	}
	// On failure, the goroutines left over.
	defer func() {
		if t.Failed() {
			buf := make([]byte, 1<<20)
			t.Logf("%d goroutines, %d before the runs:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
	}()
	redistest.Eventually(t, fmt.Sprintf("the goroutines back to the %d before the runs", before), 2*time.Second, func() bool {
		return runtime.NumGoroutine() <= before
	})
}
