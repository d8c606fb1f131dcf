package allocator

import (
	"context"
	"errors"
	"testing"
	"time"
)

// lateCtx is a context whose deadline has passed before its timer fired:
// what a loaded machine shows an Acquire whose read timed out at the
// deadline.
type lateCtx struct{ context.Context }

func (lateCtx) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

func TestEndedSeesAPassedDeadlineBeforeItsTimer(t *testing.T) {
	if err := ended(context.Background()); err != nil {
		t.Fatalf("ended(Background) = %v; want nil", err)
	}
	if err := ended(lateCtx{context.Background()}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ended(deadline passed, Err nil) = %v; want DeadlineExceeded", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ended(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("ended(cancelled) = %v; want Canceled", err)
	}
}
