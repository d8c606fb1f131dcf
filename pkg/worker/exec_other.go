//go:build unix && !linux

package worker

import (
	"os"
	"os/exec"
	"syscall"
)

// This fallback uses no parent-death signal: a task still runs in its own
// process group and is stopped with it, but if the runner dies only the
// wrapper's getppid poll (ExecTask.Wrapper) kills the group, within about
// a second. Without the wrapper the task outlives the runner.

// sysProcAttr is for the process the runner starts: a group leader.
func sysProcAttr(bool) *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// wrappedSysProcAttr is for the command the wrapper starts: in the
// wrapper's group.
func wrappedSysProcAttr() *syscall.SysProcAttr { return nil }

// selfExecutable names this program's executable for re-execution.
func selfExecutable() (string, error) { return os.Executable() }

// startProcess starts cmd.
func startProcess(cmd *exec.Cmd) error { return cmd.Start() }

// waitExit reaps cmd's process: the syscall package has no portable wait
// that leaves it unreaped, so the group is killed after the reap, when its
// id could in theory have been reused.
func waitExit(cmd *exec.Cmd) (reaped bool, err error) { return true, cmd.Wait() }

// signalGroup sends sig to process group pgid.
func signalGroup(pgid int, sig syscall.Signal) error {
	return syscall.Kill(-pgid, sig)
}
