//go:build linux

package worker

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// sysProcAttr is for a command the runner starts itself: a group leader
// that the kernel kills when the runner dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// spawner starts processes from one goroutine locked to its OS thread for
// the life of the program. The kernel sends Pdeathsig when the thread that
// started a child exits, not the process; a Go thread can exit while the
// runner lives (a goroutine that ends while locked to it), which would kill
// tasks for nothing. The spawner's thread never exits. It starts the exec
// supervisor too, whose parent-death signal tells it the runner died.
var spawner struct {
	once sync.Once
	reqs chan func()
}

// startProcess starts cmd from the spawner's thread.
func startProcess(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan func())
		go func() {
			runtime.LockOSThread()
			for f := range spawner.reqs {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	spawner.reqs <- func() { errc <- cmd.Start() }
	return <-errc
}

// waitExit waits for cmd's process to exit without reaping it, so its pid
// and process group id stay taken (reaped false). Should waitid fail, it
// falls back to cmd.Wait (reaped true, with its error).
func waitExit(cmd *exec.Cmd) (reaped bool, err error) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err == nil {
			return false, nil
		}
		if err != unix.EINTR {
			break
		}
	}
	return true, cmd.Wait()
}

// signalGroup sends sig to process group pgid.
func signalGroup(pgid int, sig syscall.Signal) error {
	return syscall.Kill(-pgid, sig)
}
