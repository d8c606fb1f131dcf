// Package benchpair measures an operation against a baseline in the same
// benchmark run, so a performance goal is a ratio that does not depend on
// how fast or loaded the machine is.
//
// [Compare] runs the baseline and the subject alternately from the same
// goroutines, b.N times each, so both see the same server, the same
// connection pool and the same background load. It reports:
//
//	baseline-ns/op   mean wall time of one baseline call
//	subject-ns/op    mean wall time of one subject call
//	throughput-ratio baseline-ns/op ÷ subject-ns/op (1.0 = as fast as the
//	                 baseline; 0.95 = 5% slower)
//
// Where a cost cannot be split between interleaved calls (a Redis server's
// CPU time), [Phases] runs the two as separate phases and reads a [Meter]
// around each, such as [ServerCPU]. [RoundTrips] is a go-redis hook that
// counts a client's round trips. bench/README.md lists the goals these
// measure.
package benchpair

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Compare calls baseline(i) then subject(i) for i in [0, b.N), spread over
// the given number of goroutines, and reports the metrics described in the
// package comment. The first error stops the benchmark.
func Compare(b *testing.B, goroutines int, baseline, subject func(i int) error) {
	b.Helper()
	var baseNs, subjNs, next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	b.ResetTimer()
	for range goroutines {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				t0 := time.Now()
				err := baseline(i)
				t1 := time.Now()
				if err == nil {
					err = subject(i)
				}
				t2 := time.Now()
				if err != nil {
					if failed.CompareAndSwap(false, true) {
						b.Errorf("iteration %d: %v", i, err)
					}
					return
				}
				baseNs.Add(int64(t1.Sub(t0)))
				subjNs.Add(int64(t2.Sub(t1)))
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(0, "ns/op") // the pair's wall time is not a goal; the ratio is
	b.ReportMetric(float64(baseNs.Load())/n, "baseline-ns/op")
	b.ReportMetric(float64(subjNs.Load())/n, "subject-ns/op")
	if s := subjNs.Load(); s > 0 {
		b.ReportMetric(float64(baseNs.Load())/float64(s), "throughput-ratio")
	}
}
