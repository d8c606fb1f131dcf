package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
)

// TestRedisStoreBatchRollback: Redis crashes (kill -9) and comes back from
// an RDB snapshot taken before the last item was recorded done. The
// batch's state went back: that item is pending again, and the batch says
// so (Progress.Rollbacks) instead of passing the rolled-back counts off as
// the truth. A crash that loses nothing (a replica attaching) is no
// rollback.
func TestRedisStoreBatchRollback(t *testing.T) {
	t.Parallel()
	const ttl = 300 * time.Millisecond
	srv := redistest.StartServer(t)
	c := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := newRedisFixture(t, c, redistest.Prefix(t), allocator.Config{LeaseTTL: ttl}, []string{"a", "b", "c"})
	a, st := f.alloc, f.store
	_, err := st.StartBatch(ctx, "b1")
	must(t, err)
	finish := func(item string) {
		t.Helper()
		l, err := a.Acquire(ctx, "w", allocator.AcquireOptions{Prefer: item, Exact: true})
		must(t, err)
		ok, err := st.Finish(ctx, "b1", l, true, time.Hour, nil)
		must(t, err)
		if !ok {
			t.Fatalf("Finish(%s) not recorded", item)
		}
		must(t, l.Release(ctx))
	}
	finish("a")
	must(t, c.BgSave(ctx).Err())
	redistest.Eventually(t, "the BGSAVE done (rdb_bgsave_in_progress:0, rdb_last_bgsave_status:ok)", 10*time.Second, func() bool {
		info, err := c.Info(ctx, "persistence").Result()
		must(t, err)
		return strings.Contains(info, "rdb_bgsave_in_progress:0") && strings.Contains(info, "rdb_last_bgsave_status:ok")
	})
	finish("b")
	before, _, err := st.Progress(ctx, "b1")
	must(t, err)
	if before.Done != 2 || before.Rollbacks != 0 {
		t.Fatalf("progress before the crash = %+v; want 2 done, no rollback", before)
	}

	srv.Kill()
	srv.Restart()
	// The restarted server holds the snapshot: a done, b pending again.
	p, found, err := st.Progress(ctx, "b1")
	must(t, err)
	if !found || p.Done != 1 {
		t.Fatalf("progress read raw after the restart = %+v, %v; want the snapshot's 1 done", p, found)
	}
	// The first script that writes the batch notices, and says so.
	p, err = st.StartBatch(ctx, "b1")
	must(t, err)
	if p.Rollbacks != 1 || p.RolledBack.IsZero() || p.Done != 1 || p.Pending() != 2 {
		t.Fatalf("progress after the rollback = %+v; want 1 rollback, 1 done, 2 pending", p)
	}
	// Nothing is granted until earlier leases have expired, then b runs
	// again.
	if _, err := a.TryAcquire(ctx, "w", allocator.AcquireOptions{}); !errors.Is(err, allocator.ErrQuietPeriod) {
		t.Fatalf("TryAcquire right after the rollback = %v; want the quiet period", err)
	}
	finish("b")
	finish("c")
	p, _, err = st.Progress(ctx, "b1")
	must(t, err)
	if !p.Complete() || p.Rollbacks != 1 {
		t.Fatalf("final progress = %+v; want complete, 1 rollback", p)
	}
}
