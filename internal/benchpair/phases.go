package benchpair

import (
	"sync"
	"sync/atomic"
	"testing"
)

// A Meter reads a cumulative cost that two operations cannot be told apart
// in when they run interleaved: a server's CPU time, its memory. Phases
// reads it before and after each phase and attributes the difference to
// the phase.
type Meter func() (float64, error)

// Phases runs the baseline and the subject as separate phases, b.N calls
// each, spread over the given number of goroutines, in the order baseline,
// subject, subject, baseline (b.N/2 calls a phase, so that a cost that
// drifts steadily during the run weighs on both alike). It reads meter
// around every phase and reports, unit being the meter's unit:
//
//	baseline-<unit>/op  the meter's increase per baseline call
//	<unit>/op           its increase per subject call
//	<unit>-ratio        <unit>/op ÷ baseline-<unit>/op (1.0 = the
//	                    subject costs what the baseline does)
//
// Use it where [Compare] cannot tell the two costs apart. The first error
// of a call or of the meter stops the benchmark.
func Phases(b *testing.B, goroutines int, unit string, meter Meter, baseline, subject func(i int) error) {
	b.Helper()
	first := b.N / 2
	second := b.N - first
	var base, subj float64
	b.ResetTimer()
	for _, ph := range []struct {
		f    func(int) error
		n    int
		sum  *float64
		from int
	}{
		{baseline, first, &base, 0},
		{subject, first, &subj, 0},
		{subject, second, &subj, first},
		{baseline, second, &base, first},
	} {
		before, err := meter()
		if err != nil {
			b.Fatalf("reading %s before a phase: %v", unit, err)
		}
		if !runPhase(b, goroutines, ph.from, ph.n, ph.f) {
			return
		}
		after, err := meter()
		if err != nil {
			b.Fatalf("reading %s after a phase: %v", unit, err)
		}
		*ph.sum += after - before
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(0, "ns/op") // four phases' wall time is not a goal; the ratio is
	b.ReportMetric(base/n, "baseline-"+unit+"/op")
	b.ReportMetric(subj/n, unit+"/op")
	if base > 0 {
		b.ReportMetric(subj/base, unit+"-ratio")
	}
}

// runPhase calls f(i) for i in [from, from+n) from the given number of
// goroutines; it reports false after the first error, which it reports
// with b.Errorf.
func runPhase(b *testing.B, goroutines, from, n int, f func(int) error) bool {
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(from + i); err != nil {
					if failed.CompareAndSwap(false, true) {
						b.Errorf("iteration %d: %v", from+i, err)
					}
					return
				}
			}
		})
	}
	wg.Wait()
	return !failed.Load()
}
