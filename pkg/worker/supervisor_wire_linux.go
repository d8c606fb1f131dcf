package worker

import (
	"encoding/binary"
	"errors"
	"syscall"
)

// The exec supervisor's wire format (see supervisor_linux.go).
//
// Runner and supervisor talk over a SOCK_SEQPACKET socketpair: each packet
// is one whole message, or one fragment of a message too long for a packet
// (a start request with a large environment). Byte 0 is the message kind,
// with fragMore set on every fragment but the last; the rest is the body,
// fixed-size integers in the machine's byte order (both ends are the same
// executable on the same machine) and strings as a uint32 length and the
// bytes. File descriptors travel as SCM_RIGHTS with a message's first
// fragment.
//
// Runner to supervisor:
//
//	reqStart   id u64, files u8 (bit i: the fd for the command's fd i
//	           comes with the message, in order; others are /dev/null),
//	           path, dir, argc u32, argv..., envc u32, env...
//	reqSignal  id u64, signal u8: signal the command's process group,
//	           unless its leader was reaped already
//
// Supervisor to runner:
//
//	repHello    version u32, once, first
//	repStarted  id u64, pid u32
//	repFailed   id u64, errno u32: the command could not be started
//	repExited   id u64, wait status u32: the leader exited; its group got
//	            SIGKILL and it was reaped (the last message about id)
const (
	reqStart  = 1
	reqSignal = 2

	repHello   = 1
	repStarted = 2
	repFailed  = 3
	repExited  = 4

	// fragMore marks a fragment that the next packet continues.
	fragMore = 0x80

	// wireVersion is repHello's version: both ends are one executable, so
	// a mismatch means the supervisor is some other program.
	wireVersion = 1

	// maxPacket is the largest packet either end sends or can receive.
	// A seqpacket message must fit the socket's send buffer (208 KiB by
	// default, net.core.wmem_default), so longer messages are fragmented.
	maxPacket = 32 << 10

	// maxFiles is how many descriptors a start request carries at most:
	// the command's stdin, stdout and stderr.
	maxFiles = 3
)

// errWire is a malformed message: the peer is not this program's runner
// or supervisor.
var errWire = errors.New("worker: exec supervisor: malformed message")

// wire encodes a message body.
type wire struct{ b []byte }

func (w *wire) u8(v uint8)   { w.b = append(w.b, v) }
func (w *wire) u32(v uint32) { w.b = binary.NativeEndian.AppendUint32(w.b, v) }
func (w *wire) u64(v uint64) { w.b = binary.NativeEndian.AppendUint64(w.b, v) }
func (w *wire) str(s string) { w.u32(uint32(len(s))); w.b = append(w.b, s...) }

func (w *wire) strs(ss []string) {
	w.u32(uint32(len(ss)))
	for _, s := range ss {
		w.str(s)
	}
}

// unwire decodes a message body; the first short read sets err and makes
// every later read return zero values.
type unwire struct {
	b   []byte
	err error
}

func (u *unwire) take(n int) []byte {
	if u.err != nil || n < 0 || n > len(u.b) {
		u.err = errWire
		return nil
	}
	v := u.b[:n]
	u.b = u.b[n:]
	return v
}

func (u *unwire) u8() uint8 {
	if b := u.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (u *unwire) u32() uint32 {
	if b := u.take(4); b != nil {
		return binary.NativeEndian.Uint32(b)
	}
	return 0
}

func (u *unwire) u64() uint64 {
	if b := u.take(8); b != nil {
		return binary.NativeEndian.Uint64(b)
	}
	return 0
}

func (u *unwire) str() string { return string(u.take(int(u.u32()))) }

func (u *unwire) strs() []string {
	n := u.u32()
	// Each string takes at least its 4-byte length: a count beyond that is
	// a bad message, not an allocation to make.
	if u.err != nil || uint64(n)*4 > uint64(len(u.b)) {
		u.err = errWire
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = u.str()
	}
	return ss
}

// done is the decoding error: a short message, or bytes left over.
func (u *unwire) done() error {
	if u.err == nil && len(u.b) != 0 {
		u.err = errWire
	}
	return u.err
}

// startRequest is a reqStart message.
type startRequest struct {
	id    uint64
	files uint8 // which of the command's fds 0-2 come with the message
	path  string
	dir   string
	argv  []string
	env   []string
}

func (r *startRequest) encode(w *wire) {
	w.u8(reqStart)
	w.u64(r.id)
	w.u8(r.files)
	w.str(r.path)
	w.str(r.dir)
	w.strs(r.argv)
	w.strs(r.env)
}

func (r *startRequest) decode(body []byte) error {
	u := unwire{b: body}
	r.id = u.u64()
	r.files = u.u8()
	r.path = u.str()
	r.dir = u.str()
	r.argv = u.strs()
	r.env = u.strs()
	return u.done()
}

// reply is a message from the supervisor about a command: repStarted
// (val is the pid), repFailed (the errno) or repExited (the wait status).
type reply struct {
	kind uint8
	id   uint64
	val  uint32
}

func (r reply) encode(w *wire) {
	w.u8(r.kind)
	w.u64(r.id)
	w.u32(r.val)
}

func (r *reply) decode(kind uint8, body []byte) error {
	u := unwire{b: body}
	r.kind = kind
	r.id = u.u64()
	r.val = u.u32()
	return u.done()
}

// fragments splits an encoded message into packets of at most maxPacket
// bytes, each starting with the kind byte (fragMore on all but the last).
// It reuses msg's storage for the first packet when the message fits.
func fragments(msg []byte) [][]byte {
	if len(msg) <= maxPacket {
		return [][]byte{msg}
	}
	kind, body := msg[0], msg[1:]
	var out [][]byte
	for len(body) > 0 {
		n := min(len(body), maxPacket-1)
		k := kind
		if n < len(body) {
			k |= fragMore
		}
		out = append(out, append([]byte{k}, body[:n]...))
		body = body[n:]
	}
	return out
}

// assembler joins fragments back into messages.
type assembler struct {
	kind uint8
	body []byte
	fds  []int
	open bool // a fragment with fragMore was seen
}

// add takes one packet and its descriptors. It returns true when a whole
// message is ready in a.kind, a.body and a.fds, valid until the next add.
// Descriptors of a message that turns out to be malformed are the
// caller's to close: they are in a.fds whatever add returns.
func (a *assembler) add(pkt []byte, fds []int) (bool, error) {
	if !a.open {
		a.body, a.fds = a.body[:0], a.fds[:0]
	}
	a.fds = append(a.fds, fds...)
	if len(pkt) == 0 {
		return false, errWire
	}
	kind := pkt[0] &^ fragMore
	switch {
	case a.open && (kind != a.kind || len(fds) > 0), // fds come first
		len(fds) > 0 && kind != reqStart,
		len(fds) > maxFiles:
		return false, errWire
	}
	a.kind = kind
	a.body = append(a.body, pkt[1:]...)
	a.open = pkt[0]&fragMore != 0
	return !a.open, nil
}

// errnoOf is the errno to report for a start failure.
func errnoOf(err error) uint32 {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return uint32(errno)
	}
	return uint32(syscall.EINVAL)
}
