//go:build linux

package worker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/worker"
)

// parentOf is the parent of p, which must be alive.
func parentOf(t *testing.T, p proc) proc {
	t.Helper()
	_, ppid, _, err := procStat(p.pid)
	if err != nil {
		t.Fatalf("process %d: %v", p.pid, err)
	}
	_, _, start, err := procStat(ppid)
	if err != nil {
		t.Fatalf("parent %d of %d: %v", ppid, p.pid, err)
	}
	return proc{ppid, start}
}

// TestExecSupervisorKilled kill -9s the exec supervisor while wrapped tasks
// run: each of their Run calls fails with ErrSupervisorDied, their leaders
// die with it, and the next task starts under a new supervisor. Signals a
// broad kill would send (SIGTERM, SIGINT, SIGHUP, SIGQUIT) do not end it.
//
// Not parallel: the supervisor is the test binary's one, shared by every
// wrapped task, and parallel tests run only once this one is over.
func TestExecSupervisorKilled(t *testing.T) {
	const tasks = 3
	dir := t.TempDir()
	task := &worker.ExecTask{
		Command: sh(`sleep 300 & echo $! > grandchild.$RUNNER_WORKER.pid; echo $$ > child.$RUNNER_WORKER.pid; wait`),
		Dir:     dir,
		Wrapper: true,
	}
	var errcs []<-chan error
	var children []proc
	for i := range tasks {
		errcs = append(errcs, runAsync(t.Context(), task, worker.Job{Item: "supervisor-death", Worker: i}))
	}
	for i := range tasks {
		child := readPidFile(t, filepath.Join(dir, fmt.Sprintf("child.%d.pid", i)))
		t.Cleanup(func() { killIfAlive(child) })
		// Not covered: processes the tasks started outlive the supervisor.
		grandchild := readPidFile(t, filepath.Join(dir, fmt.Sprintf("grandchild.%d.pid", i)))
		t.Cleanup(func() { killIfAlive(grandchild) })
		children = append(children, child)
	}
	supervisor := parentOf(t, children[0])
	for _, c := range children[1:] {
		if p := parentOf(t, c); p != supervisor {
			t.Fatalf("tasks have parents %d and %d, want one exec supervisor", supervisor.pid, p.pid)
		}
	}

	// It lives on through signals it ignores while its runner lives, and
	// still serves.
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT} {
		if err := syscall.Kill(supervisor.pid, sig); err != nil {
			t.Fatal(err)
		}
	}
	out := newRecorder()
	probe := &worker.ExecTask{Command: sh(`echo $PPID`), Output: out.output, Wrapper: true}
	if err := probe.Run(t.Context(), testJob); err != nil {
		t.Fatalf("a task after SIGTERM, SIGINT, SIGHUP and SIGQUIT to the supervisor: %v", err)
	}
	if got := out.stream("stdout"); !slices.Equal(got, []string{strconv.Itoa(supervisor.pid)}) || !supervisor.alive() {
		t.Fatalf("after SIGTERM, SIGINT, SIGHUP and SIGQUIT a task's parent is %q, want the supervisor %d alive (alive: %v)",
			got, supervisor.pid, supervisor.alive())
	}
	for _, c := range children {
		if !c.alive() {
			t.Fatalf("task %d died of the signals to its supervisor", c.pid)
		}
	}

	if err := syscall.Kill(supervisor.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i, errc := range errcs {
		err := waitErr(t, fmt.Sprintf("task %d", i), errc, 10*time.Second)
		if !errors.Is(err, worker.ErrTaskFailed) || !errors.Is(err, worker.ErrSupervisorDied) || !strings.Contains(fmt.Sprint(err), "signal: killed") {
			t.Errorf("task %d: Run = %v, want an error wrapping ErrTaskFailed and ErrSupervisorDied, saying signal: killed", i, err)
		}
	}
	took := redistest.Eventually(t, "the tasks to die with their supervisor", 5*time.Second, func() bool {
		return !slices.ContainsFunc(children, proc.alive)
	})
	t.Logf("tasks gone %v after their supervisor's Run returned", took.Round(time.Millisecond))

	// Later tasks get a new supervisor, one for all of them.
	out = newRecorder()
	probe.Output = out.output
	for range 2 {
		if err := probe.Run(t.Context(), testJob); err != nil {
			t.Fatalf("a task after the supervisor died: %v", err)
		}
	}
	got := out.stream("stdout")
	if len(got) != 2 || got[0] != got[1] || got[0] == strconv.Itoa(supervisor.pid) {
		t.Fatalf("tasks after the supervisor %d died had parents %q, want one new supervisor", supervisor.pid, got)
	}
}

// TestExecManyConcurrent runs 200 short wrapped tasks, 16 at a time,
// through the one supervisor: each gets its own exit status and its own
// output.
func TestExecManyConcurrent(t *testing.T) {
	t.Parallel()
	const tasks, concurrency = 200, 16
	out := newRecorder()
	task := &worker.ExecTask{
		Command: sh(`echo "$RUNNER_ITEM"; exit $((RUNNER_ATTEMPT % 4))`),
		Output:  out.output,
		Wrapper: true,
	}
	jobs := make(chan int, tasks)
	for i := range tasks {
		jobs <- i
	}
	close(jobs)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for i := range jobs {
				job := worker.Job{Item: fmt.Sprintf("item-%d", i), Attempt: i}
				err := task.Run(t.Context(), job)
				switch want := i % 4; {
				case want == 0 && err != nil:
					t.Errorf("job %d: Run = %v, want nil", i, err)
				case want != 0 && (!errors.Is(err, worker.ErrTaskFailed) || !strings.Contains(fmt.Sprint(err), fmt.Sprintf("exit status %d", want))):
					t.Errorf("job %d: Run = %v, want exit status %d", i, err, want)
				}
			}
		})
	}
	wg.Wait()
	out.mu.Lock()
	defer out.mu.Unlock()
	if len(out.lines) != tasks {
		t.Errorf("%d lines of output, want %d", len(out.lines), tasks)
	}
	for _, l := range out.lines {
		if l.stream != "stdout" || l.text != l.job.Item {
			t.Errorf("job %s wrote %s line %q, want its item on stdout", l.job.Item, l.stream, l.text)
		}
	}
}

// TestExecNoDescriptorLeak looks at the descriptors of a running command:
// 0, 1 and 2 only (stdin /dev/null; stdout and stderr pipes with Output;
// without it stdout /dev/null and stderr a pipe for the stderr tail, or
// /dev/null with StderrLines -1), nothing of the runner's or the
// supervisor's.
func TestExecNoDescriptorLeak(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, wrapper bool) {
		for _, c := range []struct {
			withOutput  bool
			lines       int
			out, errOut string
		}{{true, 0, "pipe:", "pipe:"}, {false, 0, "/dev/null", "pipe:"}, {false, -1, "/dev/null", "/dev/null"}} {
			dir := t.TempDir()
			task := &worker.ExecTask{Command: sh(`echo $$ > pid; exec sleep 30`), Dir: dir, Wrapper: wrapper, KillGrace: time.Second, StderrLines: c.lines}
			if c.withOutput {
				task.Output = newRecorder().output
			}
			ctx, cancel := context.WithCancel(t.Context())
			errc := runAsync(ctx, task, testJob)
			p := readPidFile(t, filepath.Join(dir, "pid"))
			// While the shell execs sleep and the loader maps its
			// libraries, other descriptors come and go; a leaked one
			// stays.
			var got []string
			_, err := redistest.Poll("the command to hold only descriptors 0, 1 and 2", 5*time.Second, 10*time.Millisecond, func() (bool, string) {
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.pid))
				fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid))
				got = got[:0]
				for _, fd := range fds {
					link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p.pid, fd.Name()))
					got = append(got, fd.Name()+" "+link)
				}
				return string(comm) == "sleep\n" && len(got) == 3 && got[0] == "0 /dev/null" &&
					strings.HasPrefix(got[1], "1 "+c.out) && strings.HasPrefix(got[2], "2 "+c.errOut), fmt.Sprintf("%q", got)
			})
			if err != nil {
				t.Errorf("Output %v, StderrLines %d: stdout %s and stderr %s wanted: %v", c.withOutput, c.lines, c.out, c.errOut, err)
			}
			cancel()
			_ = waitErr(t, "task", errc, 10*time.Second)
		}
	})
}

// TestExecLargeRequest passes an environment far larger than one packet to
// the supervisor: one long value and many entries arrive whole.
func TestExecLargeRequest(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 100<<10) // a value may be up to 128 KiB
	env := []string{"BIG=" + big}
	for i := range 2000 {
		env = append(env, fmt.Sprintf("V%d=%d", i, i))
	}
	forModes(t, func(t *testing.T, wrapper bool) {
		out := newRecorder()
		task := &worker.ExecTask{Command: sh(`echo "${#BIG} $V0 $V1999"`), Env: env, Output: out.output, Wrapper: wrapper}
		if err := task.Run(t.Context(), testJob); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if got, want := out.stream("stdout"), []string{fmt.Sprintf("%d 0 1999", len(big))}; !slices.Equal(got, want) {
			t.Errorf("the command saw %q, want %q", got, want)
		}
	})
}

// TestExecSupervisorNotServed runs a wrapped task in a program whose main
// does not call ServeExecWrapper: the task fails at once, saying so.
func TestExecSupervisorNotServed(t *testing.T) {
	t.Parallel()
	runner := exec.Command(os.Args[0], "-test.run=^$")
	runner.Env = append(os.Environ(), fakeRunnerEnv+"=1:1:"+t.TempDir(), noServeEnv+"=1")
	runner.WaitDelay = time.Second
	out, err := runner.CombinedOutput()
	if code := runner.ProcessState.ExitCode(); code != 3 || !strings.Contains(string(out), "does main call worker.ServeExecWrapper") {
		t.Errorf("fake runner exited %d (%v), want 3 after its task failed naming ServeExecWrapper; its output:\n%s", code, err, out)
	}
}

// TestExecDirFollowsChdir changes the working directory after the exec
// supervisor started: a command without Dir, or with a relative one, runs
// relative to the new one, with or without the wrapper. (Not parallel:
// the working directory is the process's.)
func TestExecDirFollowsChdir(t *testing.T) {
	// The supervisor starts with the first wrapped task, in the old
	// working directory.
	if err := (&worker.ExecTask{Command: []string{"true"}, Wrapper: true}).Run(t.Context(), testJob); err != nil {
		t.Fatal(err)
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	for _, wrapper := range []bool{false, true} {
		for _, c := range []struct{ dir, want string }{{"", dir}, {"sub", filepath.Join(dir, "sub")}} {
			out := newRecorder()
			task := &worker.ExecTask{Command: sh("pwd -P"), Dir: c.dir, Output: out.output, Wrapper: wrapper}
			if err := task.Run(t.Context(), testJob); err != nil {
				t.Fatalf("wrapper %v, Dir %q: %v", wrapper, c.dir, err)
			}
			if got := out.stream("stdout"); !slices.Equal(got, []string{c.want}) {
				t.Errorf("wrapper %v, Dir %q: the command ran in %q, want %q", wrapper, c.dir, got, c.want)
			}
		}
	}
}
