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
	// late holds the lateness of the samples of the last 10 seconds.
	late []schedSample
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
				sched.late = append(sched.late, schedSample{now, now.Sub(start) - schedTick})
				for len(sched.late) > 0 && now.Sub(sched.late[0].at) > schedWindow {
					sched.late = sched.late[1:]
				}
				sched.mu.Unlock()
			}
		}()
	})
}

// SchedDelay describes the scheduling delay this test process saw in the
// last 10 seconds (the worst lateness of a 20ms timer) and the load
// average, for the message of a failed timing bound. Packages that use
// Main measure from their start; others from their first call.
func SchedDelay() string {
	startSched()
	sched.mu.Lock()
	var worst time.Duration
	for _, s := range sched.late {
		worst = max(worst, s.late)
	}
	n := len(sched.late)
	sched.mu.Unlock()
	load, _ := os.ReadFile("/proc/loadavg")
	return fmt.Sprintf("scheduling delay: worst 20ms timer %v late over the last %d samples; load average %s",
		worst.Round(time.Millisecond), n, strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "))
}
