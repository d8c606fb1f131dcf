//go:build unix && !linux

package worker

import (
	"os/exec"
	"syscall"
)

// This fallback has no parent-death signal and no exec supervisor: a task
// still runs in its own process group and is stopped with it, but it
// outlives a runner that dies. ExecTask.Wrapper has no effect.

// sysProcAttr is for a command the runner starts itself: a group leader.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// startSupervised starts c directly: there is no supervisor here.
func startSupervised(c *command) (process, error) { return startDirect(c) }

// serveSupervisor is not called here: there is no supervisor to serve.
func serveSupervisor() {}

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
