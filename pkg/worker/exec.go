package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// How an exec task's processes are kept on a leash.
//
// Every task runs in a process group of its own, whose id is the pid of the
// process the runner started (the group leader). Stopping a task means
// signalling the whole group: SIGTERM when the task's context ends, SIGKILL
// KillGrace later if the leader is still alive. When the leader exits, the
// runner first waits for it without reaping it (waitid WNOWAIT on Linux),
// then SIGKILLs the group, then reaps the leader. While the leader is an
// unreaped zombie its pid, and so the group id, cannot be reused, so the
// SIGKILL can only reach the task's own leftovers: background grandchildren
// die with the task, and the output pipes they held close.
//
// If the runner itself dies (kill -9, OOM), nobody is left to signal the
// group. On Linux the kernel's parent-death signal (Pdeathsig) covers the
// direct child only:
//
//   - Without ExecTask.Wrapper the command is the group leader with
//     Pdeathsig SIGKILL. It dies with the runner; processes it started do
//     not, and may outlive the lease.
//   - With ExecTask.Wrapper the runner starts a re-execution of its own
//     executable as the group leader (Pdeathsig SIGTERM), and that wrapper
//     (ServeExecWrapper) starts the command in the same group. The wrapper
//     ignores SIGTERM while the runner lives (a graceful stop reaches the
//     command directly, as a group signal), and SIGKILLs the whole group as
//     soon as it sees its parent gone: on the parent-death signal, or at
//     the latest one second later by polling getppid, since the signal is
//     tied to the thread that started it rather than to the runner.
//
// Processes that leave the group (setsid, setpgid, daemons that double
// fork) escape both mechanisms; use a cgroup or container for those.

// defaultKillGrace is ExecTask.KillGrace's default.
const defaultKillGrace = 5 * time.Second

// maxLineLen is the longest piece of output delivered as one line; longer
// lines are split into pieces of this length.
const maxLineLen = 64 << 10

// drainTimeout bounds how long Run waits for the output pipes to close after
// the task's process group was killed and reaped: only processes that left
// the group can still hold them open.
const drainTimeout = 2 * time.Second

// ExecTask runs a command for each job. It is a Task, safe for concurrent
// use by several workers as long as its fields are not changed meanwhile.
//
// The command gets the runner's environment, then Env, then these
// variables, which describe the job and override any of the same name:
//
//	RUNNER_ITEM     Job.Item
//	RUNNER_TOKEN    Job.Token (the fencing token, decimal)
//	RUNNER_OWNER    Job.Owner
//	RUNNER_WORKER   Job.Worker
//	RUNNER_ATTEMPT  Job.Attempt
//
// Job values travel only as environment variables, never through a shell
// string or argv, so an item name cannot inject commands.
//
// The command runs in a process group of its own. When Run's context ends
// the group gets SIGTERM, then SIGKILL after KillGrace; when the command
// exits, whatever it left running in its group is killed. See Wrapper for
// what happens when the runner itself dies.
type ExecTask struct {
	// Command is the argv to run. Command[0] is looked up in PATH unless
	// it contains a slash; a relative path is taken relative to Dir. No
	// shell is involved unless the command is one, e.g.
	// []string{"sh", "-c", "..."}. Required.
	Command []string
	// Env holds extra "KEY=VALUE" entries, added after the runner's own
	// environment (a later entry wins). The RUNNER_* variables cannot be
	// overridden.
	Env []string
	// Dir is the working directory. Default: the runner's.
	Dir string
	// KillGrace is how long the process group has between SIGTERM and
	// SIGKILL once the context ends. Default 5s. A Pool requires it to be
	// below its SafetyMargin.
	KillGrace time.Duration
	// Output receives each line the command writes, stream "stdout" or
	// "stderr", without its trailing newline. A line longer than 64 KiB
	// arrives in 64 KiB pieces; a last line without a newline arrives too.
	// Lines of one stream arrive in order, and the calls of one Run never
	// overlap, but calls of different jobs may. Output must not block for
	// long: the command stalls when its pipe fills. If Output panics, the
	// command is stopped as if the context ended and Run panics with the
	// same value once it has been reaped. Nil discards output (the command
	// gets /dev/null).
	Output func(job Job, stream string, line string)
	// Wrapper starts the command through a re-execution of this
	// executable (see ServeExecWrapper), so that on Linux the command and
	// everything it started in its group are killed when the runner dies,
	// even by kill -9. Without it only the command itself is killed then
	// (Linux; elsewhere nothing is). The program must call
	// ServeExecWrapper first thing in main.
	Wrapper bool
}

// Validate reports a bad setting as an error wrapping ErrInvalidConfig:
// an empty Command or Command[0], a NUL byte in Command, Env or Dir, an Env
// entry that is not KEY=VALUE, or a negative KillGrace.
func (t *ExecTask) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: ExecTask.%s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case len(t.Command) == 0:
		return bad("Command is empty")
	case t.Command[0] == "":
		return bad("Command[0] is empty")
	case t.KillGrace < 0:
		return bad("KillGrace %v (want >= 0)", t.KillGrace)
	case strings.IndexByte(t.Dir, 0) >= 0:
		return bad("Dir contains a NUL byte")
	}
	for i, arg := range t.Command {
		if strings.IndexByte(arg, 0) >= 0 {
			return bad("Command[%d] contains a NUL byte", i)
		}
	}
	for i, kv := range t.Env {
		// Values are not quoted in the error: they may be secrets.
		key, _, ok := strings.Cut(kv, "=")
		switch {
		case strings.IndexByte(kv, 0) >= 0:
			return bad("Env[%d] (key %q) contains a NUL byte", i, key)
		case !ok || key == "":
			return bad("Env[%d] is not KEY=VALUE", i)
		}
	}
	return nil
}

// Run runs the command for job. It returns once the command has exited,
// the rest of its process group has been sent SIGKILL, and every line of
// its output has been delivered (output still written by processes that
// left the group is cut off after 2s).
//
// It returns nil when the command exits with status 0. Otherwise the error
// wraps ErrTaskFailed and names the exit status ("exit status 3") or the
// signal ("signal: killed"); a command that cannot be started (not found,
// not executable, bad Dir) fails the same way, wrapping the reason. If ctx
// ended before the command exited, the error also wraps context.Cause(ctx)
// (ErrLeaseLost, ErrShutdown, ...), even when the command then exited 0; if
// ctx has ended before Run starts anything, the command is not run.
//
// With Wrapper, a command killed by a signal shows as the wrapper's exit
// status 128+signal (e.g. "exit status 143" for SIGTERM).
func (t *ExecTask) Run(ctx context.Context, job Job) error {
	if err := t.Validate(); err != nil {
		return err
	}
	name := t.Command[0]
	if ctx.Err() != nil {
		return fmt.Errorf("worker: exec %q not started: %w", name, context.Cause(ctx))
	}
	cmd, err := t.command(job)
	if err != nil {
		return fmt.Errorf("%w: start %q: %w", ErrTaskFailed, name, err)
	}

	// Output panics stop the command through this context.
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	out, err := startOutput(cmd, job, t.Output, cancel)
	if err != nil {
		return fmt.Errorf("%w: start %q: %w", ErrTaskFailed, name, err)
	}
	if err := startProcess(cmd); err != nil {
		out.abort()
		return fmt.Errorf("%w: start %q: %w", ErrTaskFailed, name, err)
	}
	out.started()

	pgid := cmd.Process.Pid
	exited := make(chan struct{})
	stoppedc := make(chan bool, 1)
	go func() { stoppedc <- stopOnDone(runCtx, pgid, t.killGrace(), exited) }()

	reaped, waitErr := waitExit(cmd)
	close(exited)
	stopped := <-stoppedc
	// Kill what the command left behind. Unless reaped, the leader is a
	// zombie still holding the group id, so no other group can have it.
	_ = signalGroup(pgid, syscall.SIGKILL)
	if !reaped {
		waitErr = cmd.Wait()
	}
	out.wait()
	if p, ok := out.panicValue(); ok {
		panic(p)
	}
	return t.result(ctx, stopped, waitErr)
}

func (t *ExecTask) killGrace() time.Duration {
	if t.KillGrace == 0 {
		return defaultKillGrace
	}
	return t.KillGrace
}

// command builds the exec.Cmd for job, wrapped if t.Wrapper.
func (t *ExecTask) command(job Job) (*exec.Cmd, error) {
	env := append(os.Environ(), t.Env...)
	env = append(env,
		"RUNNER_ITEM="+job.Item,
		"RUNNER_TOKEN="+strconv.FormatInt(job.Token, 10),
		"RUNNER_OWNER="+job.Owner,
		"RUNNER_WORKER="+strconv.Itoa(job.Worker),
		"RUNNER_ATTEMPT="+strconv.Itoa(job.Attempt),
	)
	// exec.Command looks Command[0] up in PATH (when it has no slash) and
	// records a failure in Err.
	cmd := exec.Command(t.Command[0], t.Command[1:]...)
	if cmd.Err != nil {
		return nil, cmd.Err
	}
	if t.Dir != "" {
		// A failed chdir in the child is reported as a failed exec of the
		// command: name the directory instead.
		if info, err := os.Stat(t.Dir); err != nil {
			return nil, fmt.Errorf("Dir: %w", err)
		} else if !info.IsDir() {
			return nil, fmt.Errorf("Dir %q is not a directory", t.Dir)
		}
	}
	if t.Wrapper {
		// The wrapper execs the command without checking it first, so
		// check here: a missing file is then a start failure, as without
		// the wrapper, rather than an exit status from the wrapper.
		path := cmd.Path
		if !filepath.IsAbs(path) && t.Dir != "" {
			path = filepath.Join(t.Dir, path)
		}
		if _, err := exec.LookPath(path); err != nil {
			return nil, err
		}
		self, err := selfExecutable()
		if err != nil {
			return nil, fmt.Errorf("exec wrapper: %w", err)
		}
		args := append([]string{wrapperArg0, cmd.Path}, t.Command...)
		cmd = exec.Command(self)
		cmd.Args = args
		env = append(env, wrapperEnv+"="+strconv.Itoa(os.Getpid()))
	}
	cmd.Env = env
	cmd.Dir = t.Dir
	cmd.SysProcAttr = sysProcAttr(t.Wrapper)
	return cmd, nil
}

// result turns how the command ended into Run's error.
func (t *ExecTask) result(ctx context.Context, stopped bool, waitErr error) error {
	name := t.Command[0]
	var err error
	if waitErr != nil {
		var exitErr *exec.ExitError
		if errors.As(waitErr, &exitErr) {
			// ProcessState says "exit status 3" or "signal: killed".
			err = fmt.Errorf("%w: %q: %s", ErrTaskFailed, name, exitErr.ProcessState)
		} else {
			err = fmt.Errorf("%w: %q: %w", ErrTaskFailed, name, waitErr)
		}
	}
	if !stopped {
		return err
	}
	cause := context.Cause(ctx)
	if err == nil {
		return fmt.Errorf("worker: exec %q stopped, then exited 0: %w", name, cause)
	}
	return fmt.Errorf("%w (stopped: %w)", err, cause)
}

// stopOnDone signals the process group when ctx ends before exited closes:
// SIGTERM, then SIGKILL after grace. It reports whether it signalled.
func stopOnDone(ctx context.Context, pgid int, grace time.Duration, exited <-chan struct{}) bool {
	select {
	case <-exited:
		return false
	case <-ctx.Done():
	}
	select {
	case <-exited:
		return false
	default:
	}
	_ = signalGroup(pgid, syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-exited:
	case <-timer.C:
		_ = signalGroup(pgid, syscall.SIGKILL)
	}
	return true
}

// output reads a command's stdout and stderr into an Output function.
type output struct {
	job      Job
	fn       func(Job, string, string)
	onPanic  context.CancelCauseFunc
	readers  []*os.File // read ends, ours
	writers  []*os.File // write ends, the command's
	done     sync.WaitGroup
	mu       sync.Mutex // serializes fn; guards the fields below
	panicked bool
	panicVal any
}

// startOutput gives cmd pipes for stdout and stderr when fn is not nil.
func startOutput(cmd *exec.Cmd, job Job, fn func(Job, string, string), onPanic context.CancelCauseFunc) (*output, error) {
	o := &output{job: job, fn: fn, onPanic: onPanic}
	if fn == nil {
		return o, nil
	}
	for range 2 {
		r, w, err := os.Pipe()
		if err != nil {
			o.abort()
			return nil, err
		}
		o.readers = append(o.readers, r)
		o.writers = append(o.writers, w)
	}
	cmd.Stdout, cmd.Stderr = o.writers[0], o.writers[1]
	return o, nil
}

// abort closes the pipes of a command that did not start.
func (o *output) abort() {
	for _, f := range slices.Concat(o.readers, o.writers) {
		_ = f.Close()
	}
}

// started closes our copy of the write ends, so that the readers see EOF
// once the command's processes are gone, and starts the readers.
func (o *output) started() {
	for _, w := range o.writers {
		_ = w.Close()
	}
	for i, r := range o.readers {
		stream := [...]string{"stdout", "stderr"}[i]
		o.done.Add(1)
		go func() {
			defer o.done.Done()
			o.read(r, stream)
		}()
	}
}

// wait waits for the readers to reach EOF, for at most drainTimeout, and
// closes the pipes.
func (o *output) wait() {
	finished := make(chan struct{})
	go func() {
		o.done.Wait()
		close(finished)
	}()
	timer := time.NewTimer(drainTimeout)
	defer timer.Stop()
	select {
	case <-finished:
	case <-timer.C:
		// Some process outside the group still holds a pipe: stop
		// reading, delivering what was read.
		for _, r := range o.readers {
			_ = r.SetReadDeadline(time.Now())
		}
		<-finished
	}
	for _, r := range o.readers {
		_ = r.Close()
	}
}

// read delivers the lines of one stream until EOF or a read error.
func (o *output) read(r io.Reader, stream string) {
	br := bufio.NewReaderSize(r, maxLineLen)
	split := false // the last piece delivered was a full buffer
	for {
		chunk, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			if split && len(chunk) == 1 {
				// The newline ending a line that filled the buffer
				// exactly: the line was delivered already.
				split = false
				continue
			}
			o.deliver(stream, string(chunk[:len(chunk)-1]))
			split = false
		case errors.Is(err, bufio.ErrBufferFull):
			o.deliver(stream, string(chunk))
			split = true
		default:
			if len(chunk) > 0 {
				o.deliver(stream, string(chunk))
			}
			return
		}
	}
}

// deliver calls fn, turning a panic into a stop of the command.
func (o *output) deliver(stream, line string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.panicked {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			o.panicked, o.panicVal = true, v
			o.onPanic(fmt.Errorf("%w: Output: %v", ErrTaskPanic, v))
		}
	}()
	o.fn(o.job, stream, line)
}

// panicValue returns what Output panicked with, if it did.
func (o *output) panicValue() (any, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.panicVal, o.panicked
}
