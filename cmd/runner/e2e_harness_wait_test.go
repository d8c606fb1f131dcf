package main

// The harness's waits, background polling, and the admin endpoint's
// client (see e2e_harness_test.go).

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
)

// pollEvery is how often poll looks at its condition.
const pollEvery = 10 * time.Millisecond

// poll calls cond every 10ms until it reports done or within has passed
// (cond runs at least once), and reports whether it was done. If not, why
// says what was awaited, what cond saw last and how late this process's
// timers have been (redistest.Poll), for the failure message.
func poll(what string, within time.Duration, cond func() (done bool, seen string)) (ok bool, why string) {
	if _, err := redistest.Poll(what, within, pollEvery, cond); err != nil {
		return false, err.Error()
	}
	return true, ""
}

// waitFor is poll failing the test (t.Fatal) when within passes first.
func waitFor(t *testing.T, what string, within time.Duration, cond func() (done bool, seen string)) {
	t.Helper()
	if ok, why := poll(what, within, cond); !ok {
		t.Fatal(why)
	}
}

// startPolling calls f every interval in the background (the first time at
// once) until the returned stop is called, which waits for the last call
// to end; the test's end calls it too.
func startPolling(t *testing.T, interval time.Duration, f func()) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			f()
			select {
			case <-quit:
				return
			case <-time.After(interval):
			}
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() { close(quit) })
		<-done
	}
	t.Cleanup(stop)
	return stop
}

// httpGet GETs url, waiting 5s at most.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// metricValue finds the value of one series (name with its labels, as
// exposed) in Prometheus text.
func metricValue(text, series string) (float64, bool) {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}
