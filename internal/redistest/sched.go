package redistest

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// sched measures how late this process's timers fire, every 20ms, from
// Main on: the scheduling delay of a loaded machine, which a timing
// failure should report beside the bound it missed.
var sched struct {
	once sync.Once
	mu   sync.Mutex
	// late holds the lateness of the samples of the last 10 seconds;
	// worst is the worst since the start, and when.
	late    []schedSample
	worst   schedSample
	samples int
}

type schedSample struct {
	at   time.Time
	late time.Duration
}

const schedTick, schedWindow = 20 * time.Millisecond, 10 * time.Second

func startSched() {
	sched.once.Do(func() {
		go func() {
			for {
				start := time.Now()
				time.Sleep(schedTick)
				now := time.Now()
				sched.mu.Lock()
				sample := schedSample{now, now.Sub(start) - schedTick}
				sched.late = append(sched.late, sample)
				sched.samples++
				if sample.late > sched.worst.late {
					sched.worst = sample
				}
				for len(sched.late) > 0 && now.Sub(sched.late[0].at) > schedWindow {
					sched.late = sched.late[1:]
				}
				sched.mu.Unlock()
			}
		}()
	})
}

// SchedDelay describes the scheduling delay this test process saw (the
// lateness of a 20ms timer: the worst of the last 10 seconds, and the
// worst since the start, with when) and the load average, for the message
// of a failed timing bound. Packages that use Main measure from their
// start; others from their first call.
func SchedDelay() string {
	startSched()
	sched.mu.Lock()
	var recent time.Duration
	for _, s := range sched.late {
		recent = max(recent, s.late)
	}
	worst, n := sched.worst, sched.samples
	sched.mu.Unlock()
	fields := strings.Fields(readLoad())
	return fmt.Sprintf("scheduling delay seen by the test process: a 20ms timer up to %v late in the last 10s, %v at worst (%s) over %d samples; load average %s",
		recent.Round(time.Millisecond), worst.late.Round(time.Millisecond), worst.at.Format("15:04:05.000"), n, strings.Join(fields[:min(3, len(fields))], " "))
}

// Slack is the worst lateness of this process's 20ms timer over the last
// 10 seconds: how much later than asked a loaded machine let the test run.
// A bound on how soon something happens adds it, so that it holds the
// promise to its margin on an idle machine and does not fail only because
// the machine stalled the test itself; a failure still reports
// SchedDelay.
func Slack() time.Duration {
	startSched()
	sched.mu.Lock()
	defer sched.mu.Unlock()
	var recent time.Duration
	for _, s := range sched.late {
		recent = max(recent, s.late)
	}
	return recent
}

// Sched is SchedDelay as a fmt.Stringer, to pass to a failure message.
var Sched fmt.Stringer = schedStringer{}

type schedStringer struct{}

func (schedStringer) String() string { return SchedDelay() }

func readLoad() string {
	load, _ := os.ReadFile("/proc/loadavg")
	return string(load)
}
