package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// How an exec task's processes are kept on a leash.
//
// Every task runs in a process group of its own, whose id is the pid of the
// command's process (the group leader). Stopping a task means signalling
// the whole group: SIGTERM when the task's context ends, SIGKILL KillGrace
// later if the leader is still alive. When the leader exits, its parent
// first waits for it without reaping it (waitid WNOWAIT), then SIGKILLs
// the group, then reaps the leader. While the leader is an unreaped zombie
// its pid, and so the group id, cannot be reused, so the SIGKILL can only
// reach the task's own leftovers: background grandchildren die with the
// task, and the output pipes they held close.
//
// If the runner itself dies (kill -9, OOM), nobody in it is left to signal
// the group. On Linux the kernel's parent-death signal (Pdeathsig) covers
// a process's direct children only:
//
//   - Without ExecTask.Wrapper the runner starts the command itself, as
//     the group leader with Pdeathsig SIGKILL. It dies with the runner;
//     processes it started do not, and may outlive the lease.
//   - With ExecTask.Wrapper the command is started by the runner's exec
//     supervisor (supervisor_linux.go): one re-execution of the runner's
//     own executable per runner process, started with the first such task
//     and serving all of them. The supervisor is the parent of every task's
//     group leader and does the wait, kill and reap above; the runner asks
//     it, over a socket, to start commands and to signal their groups. It
//     watches the runner three ways: end of file on that socket (at once:
//     the kernel closes a dead process's descriptors), its own parent-death
//     signal, and polling getppid every second. When the runner is gone it
//     SIGKILLs every group it started whose leader it has not reaped, then
//     exits. It is also the child subreaper of the tasks: what they orphan
//     is reparented to it (and still in the task's group, killed with it),
//     and it reaps those.
//
// If the supervisor itself dies (killed on its own), the leaders it
// started die with it (their Pdeathsig SIGKILL), their Run fails with
// ErrSupervisorDied, and the next task starts a new supervisor; processes
// those leaders started in their groups are not killed then. Processes that
// leave the group (setsid, setpgid, daemons that double fork) escape all of
// this; use a cgroup or container for those.

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
// The command runs in a process group of its own, with stdin from
// /dev/null. When Run's context ends the group gets SIGTERM, then SIGKILL
// after KillGrace; when the command exits, whatever it left running in its
// group is killed. See Wrapper for what happens when the runner itself
// dies.
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
	// StderrLines is how many of the last lines the command wrote to
	// stderr the error of a failed run keeps (ExecError.Stderr, 4 KiB at
	// most), for the item's history. Default 20; -1 (any negative value)
	// keeps none. Without Output the command's stdout is /dev/null, and
	// its stderr a pipe read for the tail alone (/dev/null with -1).
	StderrLines int
	// Wrapper starts the command through this process's exec supervisor
	// (see ServeExecWrapper), so that on Linux the command and everything
	// it started in its group are killed when the runner dies, even by
	// kill -9 or the OOM killer. The supervisor is one process per runner
	// process, a re-execution of this executable started with the first
	// such task; the program must call ServeExecWrapper first thing in
	// main. Without Wrapper only the command itself is killed then
	// (Linux). On other systems Wrapper has no effect and nothing is
	// killed when the runner dies.
	Wrapper bool
}

// Validate reports every bad setting as a *FieldError wrapping
// ErrInvalidConfig (joined with errors.Join; field "ExecTask.<Name>"): an
// empty Command or Command[0], a NUL byte in Command, Env or Dir, an Env
// entry that is not KEY=VALUE, or a negative KillGrace. Env values are
// never quoted: they may be secrets.
func (t *ExecTask) Validate() error {
	var p fieldProblems
	switch {
	case len(t.Command) == 0:
		p.add("ExecTask.Command", "must be set to the argv")
	case t.Command[0] == "":
		p.add("ExecTask.Command", "element 0 (the program) is empty")
	}
	for i, arg := range t.Command {
		if strings.IndexByte(arg, 0) >= 0 {
			p.add("ExecTask.Command", "element %d contains a NUL byte", i)
		}
	}
	if t.KillGrace < 0 {
		p.add("ExecTask.KillGrace", "must not be negative, got %q", t.KillGrace.String())
	}
	if strings.IndexByte(t.Dir, 0) >= 0 {
		p.add("ExecTask.Dir", "contains a NUL byte")
	}
	for i, kv := range t.Env {
		key, _, ok := strings.Cut(kv, "=")
		switch {
		case !ok || key == "":
			p.add("ExecTask.Env", "element %d is not NAME=value", i)
		case strings.IndexByte(kv, 0) >= 0:
			p.add("ExecTask.Env", "element %d (%q) contains a NUL byte", i, key)
		}
	}
	return p.err()
}

// Run runs the command for job. It returns once the command has exited,
// the rest of its process group has been sent SIGKILL, and every line of
// its output has been delivered (output still written by processes that
// left the group is cut off after 2s).
//
// It returns nil when the command exits with status 0. Otherwise the error
// wraps ErrTaskFailed and names the exit status ("exit status 3") or the
// signal ("signal: killed"); a command that cannot be started (not found,
// not executable, bad Dir) fails the same way, wrapping the reason, and so
// does one whose exec supervisor died (wrapping ErrSupervisorDied). If ctx
// ended before the command exited, the error also wraps context.Cause(ctx)
// (ErrLeaseLost, ErrShutdown, ...), even when the command then exited 0;
// if ctx has ended before Run starts anything, the command is not run.
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
	out, err := startOutput(job, t.Output, t.stderrLines(), cancel)
	if err != nil {
		return fmt.Errorf("%w: start %q: %w", ErrTaskFailed, name, err)
	}
	cmd.stdout, cmd.stderr = out.files()
	var p process
	if t.Wrapper {
		p, err = startSupervised(cmd)
	} else {
		p, err = startDirect(cmd)
	}
	if err != nil {
		out.abort()
		return fmt.Errorf("%w: start %q: %w", ErrTaskFailed, name, err)
	}
	out.started()

	status, stopped, waitErr := p.wait(runCtx, t.killGrace())
	out.wait()
	if v, ok := out.panicValue(); ok {
		panic(v)
	}
	return t.result(ctx, stopped, status, waitErr, out.stderrTail())
}

func (t *ExecTask) stderrLines() int {
	if t.StderrLines == 0 {
		return defaultStderrLines
	}
	return max(t.StderrLines, 0)
}

func (t *ExecTask) killGrace() time.Duration {
	if t.KillGrace == 0 {
		return defaultKillGrace
	}
	return t.KillGrace
}

// command is what Run starts: the executable found, the environment built.
type command struct {
	path string // Command[0], looked up in PATH
	argv []string
	env  []string
	dir  string
	// stdout and stderr are the write ends of the output pipes; nil means
	// /dev/null (stdout without Output, both without a stderr tail either).
	stdout, stderr *os.File
}

// process is a started command, the leader of its process group.
type process interface {
	// wait returns once the leader has exited, the group has been sent
	// SIGKILL and the leader has been reaped, with the leader's status.
	// Meanwhile, when ctx ends, it sends the group SIGTERM, and SIGKILL
	// grace later; stopped reports whether it did. err is set when the
	// status is unknown.
	wait(ctx context.Context, grace time.Duration) (status syscall.WaitStatus, stopped bool, err error)
}

// command resolves t's command for job.
func (t *ExecTask) command(job Job) (*command, error) {
	path := t.Command[0]
	if !strings.Contains(path, "/") {
		var err error
		if path, err = exec.LookPath(path); err != nil {
			return nil, err
		}
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
	return &command{path: path, argv: t.Command, env: t.environ(job), dir: t.Dir}, nil
}

// environ is the command's environment: the runner's, then t.Env, then
// the job's variables; of entries with the same name only the last is
// kept (as os/exec does).
func (t *ExecTask) environ(job Job) []string {
	env := os.Environ()
	env = append(env, t.Env...)
	env = append(env,
		"RUNNER_ITEM="+job.Item,
		"RUNNER_TOKEN="+strconv.FormatInt(job.Token, 10),
		"RUNNER_OWNER="+job.Owner,
		"RUNNER_WORKER="+strconv.Itoa(job.Worker),
		"RUNNER_ATTEMPT="+strconv.Itoa(job.Attempt),
	)
	return dedupEnv(env)
}

// dedupEnv drops each entry that a later entry of the same name replaces.
// Entries without "=" are kept as they are.
func dedupEnv(env []string) []string {
	last := make(map[string]int, len(env))
	for i, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); ok {
			last[k] = i
		}
	}
	if len(last) == len(env) {
		return env // no duplicates, no malformed entries
	}
	out := env[:0:0]
	for i, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); !ok || last[k] == i {
			out = append(out, kv)
		}
	}
	return out
}

// result turns how the command ended into Run's error.
func (t *ExecTask) result(ctx context.Context, stopped bool, status syscall.WaitStatus, waitErr error, stderr string) error {
	name := t.Command[0]
	var err error
	switch {
	case waitErr != nil:
		err = &ExecError{err: fmt.Errorf("%w: %q: %w", ErrTaskFailed, name, waitErr), Status: -1, Stderr: stderr}
	case !status.Exited() || status.ExitStatus() != 0:
		code := -1
		if status.Exited() {
			code = status.ExitStatus()
		}
		err = &ExecError{err: fmt.Errorf("%w: %q: %w", ErrTaskFailed, name, &ExitError{Status: status}), Status: code, Stderr: stderr}
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

// ExitError is how an ExecTask's command ended when that was not exit
// status 0; Run's error wraps it (find it with errors.As).
type ExitError struct {
	Status syscall.WaitStatus
}

// Error says how the process ended, as os.ProcessState does: "exit status
// 3", "signal: killed".
func (e *ExitError) Error() string { return statusText(e.Status) }

// Code is the exit status, or 128 plus the signal number for a command
// killed by a signal (as a shell reports it).
func (e *ExitError) Code() int {
	if e.Status.Signaled() {
		return 128 + int(e.Status.Signal())
	}
	return e.Status.ExitStatus()
}

// statusText says how a process ended, as os.ProcessState does: "exit
// status 3", "signal: killed".
func statusText(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		s := "signal: " + ws.Signal().String()
		if ws.CoreDump() {
			s += " (core dumped)"
		}
		return s
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// directProcess is a command the runner started itself.
type directProcess struct{ cmd *exec.Cmd }

// startDirect starts c as a child of this process, leading a process group
// of its own (sysProcAttr says what else).
func startDirect(c *command) (process, error) {
	null, err := devNull()
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:        c.path,
		Args:        c.argv,
		Env:         c.env,
		Dir:         c.dir,
		Stdin:       null,
		Stdout:      null,
		Stderr:      null,
		SysProcAttr: sysProcAttr(),
	}
	if c.stdout != nil {
		cmd.Stdout = c.stdout
	}
	if c.stderr != nil {
		cmd.Stderr = c.stderr
	}
	if err := startProcess(cmd); err != nil {
		return nil, err
	}
	return &directProcess{cmd}, nil
}

func (p *directProcess) wait(ctx context.Context, grace time.Duration) (syscall.WaitStatus, bool, error) {
	pgid := p.cmd.Process.Pid
	exited := make(chan struct{})
	stoppedc := make(chan bool, 1)
	go func() { stoppedc <- stopOnDone(ctx, pgid, grace, exited) }()

	reaped, waitErr := waitExit(p.cmd)
	close(exited)
	stopped := <-stoppedc
	// Kill what the command left behind. Unless reaped, the leader is a
	// zombie still holding the group id, so no other group can have it.
	_ = signalGroup(pgid, syscall.SIGKILL)
	if !reaped {
		waitErr = p.cmd.Wait()
	}
	if ps := p.cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			return ws, stopped, nil
		}
	}
	if waitErr == nil {
		waitErr = errors.New("no wait status")
	}
	return 0, stopped, waitErr
}

// devNull is /dev/null opened for reading and writing, once: the stdin of
// every command, and its stdout and stderr without ExecTask.Output.
var devNull = sync.OnceValues(func() (*os.File, error) { return os.OpenFile(os.DevNull, os.O_RDWR, 0) })

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
