package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The runner's side of the exec supervisor (see exec.go for what it
// guarantees, supervisor_serve_linux.go for the supervisor, and
// supervisor_wire_linux.go for what they say to each other).
//
// Why one supervisor per runner. A wrapper process per task (what came
// before) cost a Go runtime start and every package init of the program
// per task, most of the CPU of a short task, and one process per running
// task. One long-lived supervisor pays that once, and each task costs one
// spawn, by a small process (vfork-style: no page tables to copy).
// A separate helper binary (a few hundred bytes of C, or a Go program
// without the runner's packages) would start faster and weigh less, but it
// would have to be built, shipped and found beside every program that uses
// ExecTask, in the same version; re-executing /proc/self/exe needs only
// ServeExecWrapper in main, and survives an upgrade that replaced the file.

// selfExe names this program's executable for re-execution. The /proc
// link keeps working when the file was replaced or deleted since the
// runner started (an upgrade), unlike os.Executable's path.
const selfExe = "/proc/self/exe"

// helloTimeout bounds how long a new supervisor may take to say hello. A
// program that does not call ServeExecWrapper first thing runs its own
// main instead, maybe for ever; it is killed then. (A -race build can take
// seconds to start on a loaded machine.)
const helloTimeout = 30 * time.Second

// supervisor is a running supervisor process and the runner's end of the
// socket to it.
type supervisor struct {
	cmd  *exec.Cmd
	conn *net.UnixConn

	sendMu sync.Mutex // a message's packets go out back to back
	out    wire       // guarded by sendMu

	mu      sync.Mutex
	nextID  uint64
	waiting map[uint64]chan reply // per command not reported exited yet
	dead    bool                  // no new commands: it is gone or going
	err     error                 // why it is gone; set before the waiting hear
	ready   bool                  // it said hello
	noHello *time.Timer           // kills it unless it says hello in time
}

// repGone is the reply a waiting command gets when the supervisor is gone.
const repGone = 0

// supervisors holds this process's current supervisor.
var supervisors struct {
	mu      sync.Mutex
	current *supervisor
}

// errNotSent: the supervisor was gone before it got the start request, so
// the command can go to a new one.
var errNotSent = errors.New("worker: exec supervisor gone before the request")

// startSupervised starts c through this process's supervisor, starting
// one first if there is none or it died.
func startSupervised(c *command) (process, error) {
	// The supervisor's working directory is this process's when it
	// started: a relative Dir (or none) is relative to ours now.
	if !strings.HasPrefix(c.dir, "/") {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		if c.dir != "" {
			wd += "/" + c.dir
		}
		c.dir = wd
	}
	for attempt := 0; ; attempt++ {
		s, err := currentSupervisor()
		if err != nil {
			return nil, err
		}
		p, err := s.start(c)
		if err == errNotSent && attempt == 0 {
			continue
		}
		return p, err
	}
}

// currentSupervisor returns the live supervisor, starting one if needed.
func currentSupervisor() (*supervisor, error) {
	supervisors.mu.Lock()
	defer supervisors.mu.Unlock()
	if s := supervisors.current; s != nil {
		s.mu.Lock()
		dead := s.dead
		s.mu.Unlock()
		if !dead {
			return s, nil
		}
	}
	s, err := newSupervisor()
	if err != nil {
		return nil, fmt.Errorf("exec supervisor: %w", err)
	}
	supervisors.current = s
	return s, nil
}

// newSupervisor starts a supervisor process: this executable, told by its
// environment to serve (ServeExecWrapper), with its end of a socketpair
// as fd 3, in a process group of its own, with a parent-death signal.
func newSupervisor() (*supervisor, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "exec-supervisor-socket")
	theirs := os.NewFile(uintptr(fds[1]), "exec-supervisor-socket")
	defer theirs.Close()
	c, err := net.FileConn(ours) // a close-on-exec duplicate
	_ = ours.Close()
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path: selfExe,
		Args: []string{supervisorArg0},
		Env:  append(os.Environ(), supervisorEnv+"="+strconv.Itoa(os.Getpid())),
		// Its stderr is ours, for what it has to say should it fail.
		Stderr:     os.Stderr,
		ExtraFiles: []*os.File{theirs},
		// SIGTERM, not SIGKILL: it must live to kill the tasks' groups.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM},
	}
	if err := startProcess(cmd); err != nil {
		_ = c.Close()
		return nil, err
	}
	s := &supervisor{cmd: cmd, conn: c.(*net.UnixConn), waiting: map[uint64]chan reply{}}
	s.noHello = time.AfterFunc(helloTimeout, s.abort)
	go s.read()
	return s, nil
}

// start sends a start request for c and waits for the answer.
func (s *supervisor) start(c *command) (process, error) {
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		return nil, errNotSent
	}
	s.nextID++
	id := s.nextID
	replies := make(chan reply, 2) // started or failed, then exited
	s.waiting[id] = replies
	s.mu.Unlock()

	req := startRequest{id: id, path: c.path, dir: c.dir, argv: c.argv, env: c.env}
	var fds []int
	for i, f := range []*os.File{c.stdout, c.stderr} {
		if f != nil {
			req.files |= 1 << (i + 1)
			fds = append(fds, int(f.Fd()))
		}
	}
	sent, err := s.send(req.encode, fds)
	if err != nil {
		if !sent {
			s.mu.Lock()
			delete(s.waiting, id)
			s.dead = true
			s.mu.Unlock()
			s.abort()
			return nil, errNotSent
		}
		// Part of it went out: the supervisor may start the command.
		// Closing the socket makes it kill whatever it started, and the
		// reader then reports it gone.
		s.abort()
	}
	r := <-replies
	switch r.kind {
	case repStarted:
		return &supervisedProcess{s: s, id: id, replies: replies}, nil
	case repFailed:
		return nil, &os.PathError{Op: "fork/exec", Path: c.path, Err: syscall.Errno(r.val)}
	}
	return nil, s.goneErr()
}

// send encodes a message with enc and sends it, with fds attached to its
// first packet. sent reports whether any packet went out.
func (s *supervisor) send(enc func(*wire), fds []int) (sent bool, err error) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.out.b = s.out.b[:0]
	enc(&s.out)
	for i, pkt := range fragments(s.out.b) {
		var oob []byte
		if i == 0 && len(fds) > 0 {
			oob = syscall.UnixRights(fds...)
		}
		if _, _, err := s.conn.WriteMsgUnix(pkt, oob, nil); err != nil {
			return i > 0, err
		}
	}
	return true, nil
}

// signal asks the supervisor to signal command id's group. Should the
// supervisor be gone, the command is too.
func (s *supervisor) signal(id uint64, sig syscall.Signal) {
	_, _ = s.send(func(w *wire) {
		w.u8(reqSignal)
		w.u64(id)
		w.u8(uint8(sig))
	}, nil)
}

// abort closes the socket: the supervisor kills every group it started
// and exits, and read reports it gone.
func (s *supervisor) abort() { _ = s.conn.Close() }

// read delivers the supervisor's replies until the socket ends, then
// reports the supervisor gone.
func (s *supervisor) read() {
	pkt := make([]byte, maxPacket)
	var err error
	for err == nil {
		var n, flags int
		n, _, flags, _, err = s.conn.ReadMsgUnix(pkt, nil)
		switch {
		case err != nil:
		case n == 0:
			err = io.EOF
		case flags&syscall.MSG_TRUNC != 0 || pkt[0]&fragMore != 0:
			err = errWire
		case pkt[0] == repHello:
			u := unwire{b: pkt[1:n]}
			if v := u.u32(); u.done() != nil || v != wireVersion {
				err = fmt.Errorf("%w: hello version %d, want %d", errWire, v, wireVersion)
			}
			s.noHello.Stop()
			s.mu.Lock()
			s.ready = true
			s.mu.Unlock()
		default:
			var r reply
			if err = r.decode(pkt[0], pkt[1:n]); err == nil {
				err = s.deliver(r)
			}
		}
	}
	s.gone(err)
}

// deliver passes r to the command it is about.
func (s *supervisor) deliver(r reply) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	replies, ok := s.waiting[r.id]
	if !ok || r.kind != repStarted && r.kind != repFailed && r.kind != repExited {
		return fmt.Errorf("%w: reply kind %d about command %d", errWire, r.kind, r.id)
	}
	if r.kind != repStarted {
		delete(s.waiting, r.id)
	}
	replies <- r // never blocks: at most two replies per command
	return nil
}

// gone ends the supervisor: it is killed should it still run (after a
// malformed message), reaped, and every command still waiting is told.
func (s *supervisor) gone(readErr error) {
	s.mu.Lock()
	s.dead = true
	s.mu.Unlock()
	s.noHello.Stop()
	s.abort()
	// It is our child and not reaped yet: its pid is still its own.
	_ = s.cmd.Process.Kill()
	waitErr := s.cmd.Wait()
	how := "exited"
	if ee, ok := waitErr.(*exec.ExitError); ok {
		how = ee.ProcessState.String()
	} else if waitErr != nil {
		how = waitErr.Error()
	}

	s.mu.Lock()
	switch {
	case !s.ready:
		s.err = fmt.Errorf("%w before it was ready (pid %d, %s; it has %v to get ready): does main call worker.ServeExecWrapper first thing?",
			ErrSupervisorDied, s.cmd.Process.Pid, how, helloTimeout)
	case errors.Is(readErr, errWire):
		s.err = fmt.Errorf("%w: killed after %w", ErrSupervisorDied, readErr)
	default:
		s.err = fmt.Errorf("%w (pid %d, %s); the command was killed with it, processes it started may live on",
			ErrSupervisorDied, s.cmd.Process.Pid, how)
	}
	waiting := s.waiting
	s.waiting = nil
	s.mu.Unlock()
	for _, replies := range waiting {
		replies <- reply{kind: repGone}
	}
}

func (s *supervisor) goneErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// supervisedProcess is a command the supervisor started.
type supervisedProcess struct {
	s       *supervisor
	id      uint64
	replies chan reply
}

func (p *supervisedProcess) wait(ctx context.Context, grace time.Duration) (syscall.WaitStatus, bool, error) {
	done := ctx.Done()
	var kill <-chan time.Time
	stopped := false
	for {
		select {
		case r := <-p.replies:
			if r.kind == repExited {
				return syscall.WaitStatus(r.val), stopped, nil
			}
			return 0, stopped, p.s.goneErr()
		case <-done:
			done, stopped = nil, true
			p.s.signal(p.id, syscall.SIGTERM)
			timer := time.NewTimer(grace)
			defer timer.Stop()
			kill = timer.C
		case <-kill:
			kill = nil
			p.s.signal(p.id, syscall.SIGKILL)
		}
	}
}
