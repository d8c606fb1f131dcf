package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"
)

// output reads a command's stdout and stderr into an Output function,
// keeping the last lines of stderr.
type output struct {
	job      Job
	fn       func(Job, string, string)
	tail     *tailRing // nil: no tail kept
	onPanic  context.CancelCauseFunc
	readers  []*os.File // read ends, ours
	writers  []*os.File // write ends, the command's
	streams  []string   // "stdout" or "stderr", of each pipe
	done     sync.WaitGroup
	mu       sync.Mutex // serializes fn; guards the fields below
	panicked bool
	panicVal any
}

// startOutput makes pipes for a command's stdout and stderr when fn is not
// nil or the last tailLines lines of stderr are to be kept.
func startOutput(job Job, fn func(Job, string, string), tailLines int, onPanic context.CancelCauseFunc) (*output, error) {
	o := &output{job: job, fn: fn, onPanic: onPanic}
	if tailLines > 0 {
		o.tail = newTailRing(tailLines)
	}
	streams := []string{"stdout", "stderr"}
	switch {
	case fn == nil && o.tail == nil:
		return o, nil
	case fn == nil: // only the tail: stdout stays /dev/null
		streams = streams[1:]
	}
	for _, stream := range streams {
		r, w, err := os.Pipe()
		if err != nil {
			o.abort()
			return nil, err
		}
		o.readers = append(o.readers, r)
		o.writers = append(o.writers, w)
		o.streams = append(o.streams, stream)
	}
	return o, nil
}

// files are the write ends for the command's stdout and stderr, nil (for
// /dev/null) when nothing reads them.
func (o *output) files() (stdout, stderr *os.File) {
	for i, w := range o.writers {
		if o.streams[i] == "stdout" {
			stdout = w
		} else {
			stderr = w
		}
	}
	return stdout, stderr
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
		stream := o.streams[i]
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

// lineReaders recycles the readers of output streams: each holds a
// maxLineLen buffer, 128 KiB of garbage per task otherwise (most of what a
// runner of short tasks allocated, and of its GC work).
var lineReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, maxLineLen) }}

// read delivers the lines of one stream until EOF or a read error.
func (o *output) read(r io.Reader, stream string) {
	br := lineReaders.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		br.Reset(nil)
		lineReaders.Put(br)
	}()
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

// deliver keeps a stderr line in the tail and calls fn, turning a panic
// into a stop of the command.
func (o *output) deliver(stream, line string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.tail != nil && stream == "stderr" {
		o.tail.add(line)
	}
	if o.panicked || o.fn == nil {
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

// stderrTail is the last lines of stderr, once the readers are done.
func (o *output) stderrTail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.tail.String()
}

// panicValue returns what Output panicked with, if it did.
func (o *output) panicValue() (any, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.panicVal, o.panicked
}
