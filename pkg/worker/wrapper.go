package worker

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

const (
	// wrapperEnv marks a process as an exec-task wrapper; its value is
	// the runner's pid, the parent the wrapper must not outlive.
	wrapperEnv = "LOCKPOOL_EXEC_WRAPPER"
	// wrapperArg0 is the wrapper's argv[0], as ps shows it. Its argv is
	// then the command's path, then the command's argv.
	wrapperArg0 = "lockpool-exec-wrapper"
	// wrapperPoll is how often the wrapper checks that its parent lives,
	// in case the parent-death signal did not come.
	wrapperPoll = time.Second
	// wrapperUsage is the wrapper's exit status when it cannot start the
	// command, as a shell's for a command it cannot run.
	wrapperUsage = 127
)

// ServeExecWrapper makes this program usable as the wrapper of
// ExecTask.Wrapper. If the process was started as a wrapper, it runs the
// wrapped command and exits (os.Exit) with the command's exit status, or
// 128+signal if a signal killed it; otherwise it returns at once and does
// nothing. Call it first thing in main, before flags are parsed or any
// work is done (test binaries: first thing in TestMain).
//
// While it runs, the wrapper leads the command's process group, passes its
// stdin, stdout and stderr to the command, and ignores SIGTERM as long as
// the runner that started it is alive. Once the runner is gone it SIGKILLs
// the whole group, itself included, within about a second.
func ServeExecWrapper() {
	runner, ok := os.LookupEnv(wrapperEnv)
	if !ok {
		return
	}
	os.Exit(serveWrapper(runner, os.Args))
}

// serveWrapper runs the command args[2:] (executable args[1]) for the
// runner of pid runnerPid, and returns the exit status to exit with.
func serveWrapper(runnerPid string, args []string) int {
	// The command's parent-death signal is tied to the thread that starts
	// it: keep that thread until the process exits.
	runtime.LockOSThread()
	runner, err := strconv.Atoi(runnerPid)
	if err != nil || runner <= 0 || len(args) < 3 {
		fmt.Fprintf(os.Stderr, "%s: bad invocation (%s=%q, %d arguments); only worker.ExecTask starts the wrapper\n",
			wrapperArg0, wrapperEnv, runnerPid, len(args))
		return wrapperUsage
	}
	_ = os.Unsetenv(wrapperEnv)

	// Catch SIGTERM before the first look at the parent: a runner dying
	// in between is then seen by that look, and later by the signal.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	orphaned := func() bool { return os.Getppid() != runner }
	if orphaned() {
		killGroup(nil)
	}

	cmd := &exec.Cmd{
		Path:        args[1],
		Args:        args[2:],
		Stdin:       os.Stdin,
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		SysProcAttr: wrappedSysProcAttr(),
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", wrapperArg0, err)
		return wrapperUsage
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the status is in cmd.ProcessState
		close(done)
	}()

	tick := time.NewTicker(wrapperPoll)
	defer tick.Stop()
	for {
		// SIGTERM while the runner lives is its graceful stop of the
		// group: the command got it too, and the wrapper waits for it.
		if orphaned() {
			killGroup(cmd)
		}
		select {
		case <-done:
			if orphaned() {
				// Nobody is left to kill what the command left behind.
				killGroup(cmd)
			}
			return exitStatus(cmd.ProcessState)
		case <-sigs:
		case <-tick.C:
		}
	}
}

// killGroup SIGKILLs the wrapper's process group, the wrapper included.
func killGroup(cmd *exec.Cmd) {
	_ = signalGroup(os.Getpid(), syscall.SIGKILL)
	// Still alive: this process leads no group (it was not started by
	// ExecTask). Kill what can be reached.
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
	os.Exit(128 + int(syscall.SIGKILL))
}

// exitStatus is a shell's view of how a process ended: its exit status,
// or 128+signal.
func exitStatus(ps *os.ProcessState) int {
	if ps == nil {
		return wrapperUsage
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
