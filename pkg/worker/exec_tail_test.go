//go:build linux

package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/lockpool/lockpool/pkg/worker"
)

// TestExecErrorKeepsTheStderrTail: a failed exec run's error carries its
// exit status and its last stderr lines (StderrLines of them, each line
// and the whole cut to 4 KiB at rune boundaries), with or without Output;
// stdout never enters the tail, and StderrLines -1 keeps none.
func TestExecErrorKeepsTheStderrTail(t *testing.T) {
	t.Parallel()
	script := `for i in 1 2 3 4 5 6; do echo "err $i" >&2; echo "out $i"; done; exit 4`
	var lines []string
	for _, c := range []struct {
		name string
		task worker.ExecTask
		want string
	}{
		{"default 20 lines, no Output", worker.ExecTask{Command: sh(script)}, "err 1\nerr 2\nerr 3\nerr 4\nerr 5\nerr 6"},
		{"3 lines, with Output", worker.ExecTask{Command: sh(script), StderrLines: 3, Output: func(_ worker.Job, _, line string) { lines = append(lines, line) }}, "err 4\nerr 5\nerr 6"},
		{"none", worker.ExecTask{Command: sh(script), StderrLines: -1}, ""},
		{"a long line is cut to its end", worker.ExecTask{Command: sh(`head -c 10000 /dev/zero | tr '\0' 'é' >&2; printf 'ü-end' >&2; exit 1`)}, ""},
	} {
		err := c.task.Run(context.Background(), testJob)
		ee, ok := errors.AsType[*worker.ExecError](err)
		if !ok || !errors.Is(err, worker.ErrTaskFailed) {
			t.Fatalf("%s: Run = %v, want an ExecError wrapping ErrTaskFailed", c.name, err)
		}
		if c.name == "a long line is cut to its end" {
			if len(ee.Stderr) > 4096 || !strings.HasSuffix(ee.Stderr, "ü-end") || ee.Status != 1 {
				t.Fatalf("%s: Stderr %d bytes ending %q, status %d", c.name, len(ee.Stderr), ee.Stderr[max(0, len(ee.Stderr)-10):], ee.Status)
			}
			continue
		}
		if ee.Status != 4 || ee.Stderr != c.want {
			t.Fatalf("%s: ExecError status %d, Stderr %q; want 4, %q", c.name, ee.Status, ee.Stderr, c.want)
		}
	}
	if len(lines) != 12 {
		t.Fatalf("Output got %d lines, want all 12: the tail must not take lines from it", len(lines))
	}
	// A success carries no error.
	if err := (&worker.ExecTask{Command: sh(`echo noise >&2`)}).Run(context.Background(), testJob); err != nil {
		t.Fatalf("a run that exits 0 after writing to stderr: %v", err)
	}
}
