package worker

import (
	"errors"
	"fmt"
	"math/bits"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The exec supervisor's side: the process a runner starts as the parent of
// its wrapped tasks (see exec.go for why, supervisor_linux.go for the
// runner's side).

const (
	// supervisorEnv marks a process as an exec supervisor; its value is
	// the runner's pid, the parent the supervisor must not outlive.
	supervisorEnv = "LOCKPOOL_EXEC_SUPERVISOR"
	// supervisorArg0 is the supervisor's argv[0], as ps shows it.
	supervisorArg0 = "lockpool-exec-supervisor"
	// supervisorFd is the supervisor's end of the socket, as inherited.
	supervisorFd = 3
	// supervisorPoll is how often the supervisor checks that its parent
	// lives, should neither end of file nor the parent-death signal come.
	supervisorPoll = time.Second
	// exitBadInvocation is the supervisor's exit status when it was not
	// started by a runner, or its runner spoke nonsense.
	exitBadInvocation = 2
)

// serveSupervisor serves as the exec supervisor if this process was
// started as one, and then exits; otherwise it returns.
func serveSupervisor() {
	runner, ok := os.LookupEnv(supervisorEnv)
	if !ok {
		return
	}
	os.Exit(superviseFor(runner))
}

// supervision is the supervisor's state. Only the main goroutine, locked
// to its thread, touches it.
type supervision struct {
	runner  int // the runner's pid
	conn    *net.UnixConn
	devNull *os.File
	attr    syscall.SysProcAttr
	// leaders maps the pid of each group leader not yet reaped to its
	// command's id, and ids to pids.
	leaders map[int]uint64
	pids    map[uint64]int
	out     wire // the reply being encoded
}

// request is a whole message from the runner: a start (with the
// command's descriptors) or a signal, or the reason the connection ended.
type request struct {
	start *startRequest
	fds   []int
	id    uint64
	sig   syscall.Signal
	err   error // the runner is gone (or spoke nonsense)
}

// superviseFor runs the supervisor for the runner of pid runnerPid and
// returns the exit status.
func superviseFor(runnerPid string) int {
	// Every command gets the parent-death signal of the thread that
	// started it: start them all from this one, which never exits.
	runtime.LockOSThread()
	runner, err := strconv.Atoi(runnerPid)
	if err != nil || runner <= 0 || len(os.Args) != 1 || os.Args[0] != supervisorArg0 {
		fmt.Fprintf(os.Stderr, "%s: bad invocation (%s=%q, args %q); only worker.ExecTask starts the supervisor\n",
			supervisorArg0, supervisorEnv, runnerPid, os.Args)
		return exitBadInvocation
	}
	_ = os.Unsetenv(supervisorEnv)

	// SIGTERM is the parent-death signal; catch it before the first look
	// at the parent, so that a runner dying in between is seen either
	// way. The others a terminal or a broad kill may send are swallowed:
	// the supervisor lives exactly as long as its runner. Caught, not
	// ignored, so that commands start with the default action; a signal
	// the runner ignored stays ignored for the commands, as it would be
	// had the runner started them.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGCHLD)
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT} {
		if !signal.Ignored(sig) {
			signal.Notify(sigs, sig)
		}
	}
	if os.Getppid() != runner {
		return 0 // the runner is gone, and nothing was started
	}
	// What the commands orphan is reparented here, not to init: in its
	// group still (and killed with it), and reaped here.
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

	f := os.NewFile(supervisorFd, "exec-supervisor-socket")
	c, err := net.FileConn(f) // a close-on-exec duplicate
	_ = f.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: socket: %v\n", supervisorArg0, err)
		return exitBadInvocation
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		fmt.Fprintf(os.Stderr, "%s: fd %d is not a unix socket\n", supervisorArg0, supervisorFd)
		return exitBadInvocation
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", supervisorArg0, err)
		return exitBadInvocation
	}
	s := &supervision{
		runner:  runner,
		conn:    conn,
		devNull: null,
		// Each command leads a group of its own and dies with this
		// process.
		attr:    syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
		leaders: map[int]uint64{},
		pids:    map[uint64]int{},
	}
	s.out.u8(repHello)
	s.out.u32(wireVersion)
	if !s.flush() {
		return 0
	}

	releaseStartupMemory()
	reqs := make(chan request, 16)
	go readRequests(conn, reqs)
	tick := time.NewTicker(supervisorPoll)
	defer tick.Stop()
	for {
		select {
		case r := <-reqs:
			switch {
			case r.err != nil:
				return s.shutdown(r.err)
			case r.start != nil:
				if !s.start(r.start, r.fds) {
					return s.shutdown(nil)
				}
			default:
				if pid, ok := s.pids[r.id]; ok {
					// Unreaped: the group id is still the command's.
					_ = syscall.Kill(-pid, r.sig)
				}
			}
		case sig := <-sigs:
			switch sig {
			case syscall.SIGCHLD:
				if !s.reap() {
					return s.shutdown(nil)
				}
			case syscall.SIGTERM:
				// From the runner while it lives, or from someone else:
				// ignored. After its death: the parent-death signal.
				if os.Getppid() != s.runner {
					return s.shutdown(nil)
				}
			}
		case <-tick.C:
			if os.Getppid() != s.runner {
				return s.shutdown(nil)
			}
		}
	}
}

// start starts a command, closes the descriptors it came with and replies.
// It reports whether the reply could be sent.
func (s *supervision) start(r *startRequest, fds []int) bool {
	null := s.devNull.Fd()
	files := [3]uintptr{null, null, null}
	var pid int
	var err error
	if bits.OnesCount8(r.files) != len(fds) || r.files>>len(files) != 0 || len(r.argv) == 0 {
		err = syscall.EINVAL // descriptors and the files mask disagree
	} else {
		next := fds
		for i := range files {
			if r.files&(1<<i) != 0 {
				files[i], next = uintptr(next[0]), next[1:]
			}
		}
		pid, err = syscall.ForkExec(r.path, r.argv, &syscall.ProcAttr{Dir: r.dir, Env: r.env, Files: files[:], Sys: &s.attr})
	}
	for _, fd := range fds {
		_ = syscall.Close(fd)
	}
	if err != nil {
		reply{kind: repFailed, id: r.id, val: errnoOf(err)}.encode(&s.out)
		return s.flush()
	}
	s.leaders[pid] = r.id
	s.pids[r.id] = pid
	reply{kind: repStarted, id: r.id, val: uint32(pid)}.encode(&s.out)
	return s.flush()
}

// reap reaps every child that has exited. A command's leader is first
// looked at without reaping it; its group gets SIGKILL while the zombie
// still holds the group id, and only then is it reaped and reported.
// Other children (orphans of commands, reparented here) are just reaped.
// It reports whether the replies could be sent.
func (s *supervision) reap() bool {
	for {
		pid, err := waitAnyExited()
		if err != nil || pid <= 0 {
			return true // ECHILD: no children; 0: none has exited
		}
		id, leader := s.leaders[pid]
		if leader {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
		var ws syscall.WaitStatus
		for {
			_, err := syscall.Wait4(pid, &ws, 0, nil)
			if err != syscall.EINTR {
				break
			}
		}
		if !leader {
			continue
		}
		delete(s.leaders, pid)
		delete(s.pids, id)
		reply{kind: repExited, id: id, val: uint32(ws)}.encode(&s.out)
		if !s.flush() {
			return false
		}
	}
}

// siPidOffset is where si_pid sits in a siginfo_t: after three ints, at
// the pointer alignment of the union that holds it.
const siPidOffset = 12 + 4*(unsafe.Sizeof(uintptr(0))/8)

// waitAnyExited returns the pid of a child that has exited, without
// reaping it; 0 when none has.
func waitAnyExited() (int, error) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		return int(*(*int32)(unsafe.Add(unsafe.Pointer(&info), siPidOffset))), nil
	}
}

// flush sends the encoded reply. It reports false when the runner is
// gone (or the socket broke).
func (s *supervision) flush() bool {
	_, err := s.conn.Write(s.out.b)
	s.out.b = s.out.b[:0]
	return err == nil
}

// shutdown SIGKILLs the group of every command whose leader has not been
// reaped (so its group id is still its own), and returns the exit status.
// err is set when the runner sent something malformed.
func (s *supervision) shutdown(err error) int {
	for pid := range s.leaders {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	if err != nil && err != errRunnerGone {
		fmt.Fprintf(os.Stderr, "%s: %v\n", supervisorArg0, err)
		return exitBadInvocation
	}
	return 0
}

// readRequests reads the runner's messages into reqs until the connection
// ends, which it reports as a request with err set, then stops.
func readRequests(conn *net.UnixConn, reqs chan<- request) {
	pkt := make([]byte, maxPacket)
	oob := make([]byte, syscall.CmsgSpace(maxFiles*4))
	var a assembler
	for {
		r, err := readRequest(conn, &a, pkt, oob)
		if err != nil {
			reqs <- request{err: err}
			return
		}
		if r != nil {
			reqs <- *r
		}
	}
}

// errRunnerGone ends the supervisor without a complaint: end of file or
// an error reading the socket mean the runner is gone.
var errRunnerGone = errors.New("runner gone")

// readRequest reads one packet; it returns the request once a message is
// whole, nil before.
func readRequest(conn *net.UnixConn, a *assembler, pkt, oob []byte) (*request, error) {
	n, oobn, flags, _, err := conn.ReadMsgUnix(pkt, oob)
	if err != nil || n == 0 && oobn == 0 {
		return nil, errRunnerGone
	}
	fds, err := parseRights(oob[:oobn])
	whole, aerr := a.add(pkt[:n], fds)
	switch {
	case err == nil && flags&(syscall.MSG_TRUNC|syscall.MSG_CTRUNC) != 0:
		err = errWire
	case err == nil:
		err = aerr
	}
	if err != nil || !whole {
		if err != nil {
			closeAll(a.fds)
		}
		return nil, err
	}
	switch a.kind {
	case reqStart:
		r := &startRequest{}
		if err := r.decode(a.body); err != nil {
			closeAll(a.fds)
			return nil, err
		}
		return &request{start: r, fds: slices.Clone(a.fds)}, nil
	case reqSignal:
		u := unwire{b: a.body}
		id, sig := u.u64(), syscall.Signal(u.u8())
		if err := u.done(); err != nil {
			return nil, err
		}
		return &request{id: id, sig: sig}, nil
	}
	closeAll(a.fds)
	return nil, errWire
}

// parseRights returns the descriptors an SCM_RIGHTS message carries.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, errWire
	}
	var fds []int
	for i := range msgs {
		got, err := syscall.ParseUnixRights(&msgs[i])
		if err != nil {
			return fds, errWire
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		_ = syscall.Close(fd)
	}
}

// releaseStartupMemory lets go of memory the program's start-up used and
// the supervisor will not: the heap that the package inits of the whole
// program left behind, and the page-table entries of read-only file pages
// (the executable's code and constants, shared libraries) that the inits
// ran through. Those pages stay in the page cache, shared with the runner,
// and map back in when used; dropping them is what keeps the supervisor's
// resident set small. Only mappings without a private copy of any page
// (no "Anonymous" memory, e.g. relocations) are dropped: theirs are the
// file's bytes, read back the same.
func releaseStartupMemory() {
	debug.FreeOSMemory()
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return
	}
	var start, end uint64 // the read-only file mapping being looked at
	for line := range strings.Lines(string(smaps)) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-"):
			// A mapping's first line: start-end perms offset dev inode [path].
			start, end = 0, 0
			lo, hi, _ := strings.Cut(f[0], "-")
			if (f[1] == "r--p" || f[1] == "r-xp") && f[4] != "0" {
				start, _ = strconv.ParseUint(lo, 16, 64)
				end, _ = strconv.ParseUint(hi, 16, 64)
			}
		case len(f) >= 2 && f[0] == "Anonymous:" && f[1] == "0" && start < end:
			_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED)
		}
	}
}
