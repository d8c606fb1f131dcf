package worker

import (
	"strings"

	"github.com/lockpool/lockpool/internal/history"
)

// defaultStderrLines is ExecTask.StderrLines's default.
const defaultStderrLines = 20

// ExecError is the error of an exec task's run that failed (it wraps
// ErrTaskFailed): how the command ended and what it last wrote to stderr,
// which the pool keeps in the item's history (RunHistory). Find it with
// errors.As.
type ExecError struct {
	err error
	// Status is the exit status of a command that exited, -1 when it was
	// killed by a signal or its end is unknown.
	Status int
	// Stderr is the last lines the command wrote to stderr, joined by
	// newlines (ExecTask.StderrLines of them, 4 KiB at most), "" when none.
	Stderr string
}

func (e *ExecError) Error() string { return e.err.Error() }

// Unwrap returns the error that says how the command ended.
func (e *ExecError) Unwrap() error { return e.err }

// tailRing keeps the last lines of a stream, each cut to its last 4 KiB.
type tailRing struct {
	lines []string
	next  int // where the next line goes once lines is full
}

func newTailRing(n int) *tailRing { return &tailRing{lines: make([]string, 0, n)} }

func (r *tailRing) add(line string) {
	line = history.Tail(line, history.MaxStderr)
	if len(r.lines) < cap(r.lines) {
		r.lines = append(r.lines, line)
		return
	}
	r.lines[r.next] = line
	r.next = (r.next + 1) % len(r.lines)
}

// String is the lines kept, oldest first, joined by newlines and cut to
// their last 4 KiB.
func (r *tailRing) String() string {
	if r == nil {
		return ""
	}
	ordered := append(append([]string(nil), r.lines[r.next:]...), r.lines[:r.next]...)
	return history.Tail(strings.Join(ordered, "\n"), history.MaxStderr)
}
