package worker_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/benchpair"
	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
	"github.com/lockpool/lockpool/pkg/worker"
)

// Run with:
//
//	go test -run '^$' -bench 'BenchmarkFleetCost|BenchmarkHistoryMemory' -benchtime 10000x ./pkg/worker
//
//	BenchmarkFleetCost      what the item history and the runner registry
//	                        cost a loop-mode pool (Go func task,
//	                        concurrency 8, 64 items, Redis): runs/s with
//	                        both (the defaults) against the same pool with
//	                        both off (Heartbeat and HistoryRetain -1) in the
//	                        same run, in alternating rounds of b.N/20 runs
//	                        (ratio); and round trips per run of each
//	                        (round-trips/run), and Redis commands per run
//	                        counting those scripts run (redis-calls/run),
//	                        and the Redis server's CPU time per run
//	                        (redis-cpu-us/run), over whole rounds (start
//	                        and drain included).
//	BenchmarkHistoryMemory  Redis memory per item of the history: b.N
//	                        items with one outcome each (MEMORY USAGE of
//	                        hist:last and hist:expiry, SAMPLES 0, ÷ b.N:
//	                        bytes/item), and of one failure's 4 KiB stderr
//	                        tail (tail-bytes).

func BenchmarkFleetCost(b *testing.B) {
	a, st, trips := benchFuncBackend(b, "redis", 64)
	off := worker.Config{Heartbeat: -1, HistoryRetain: -1}
	on := worker.Config{}
	task := func(context.Context, worker.Job) error { return nil }
	const rounds = 10
	per := max(b.N/(2*rounds), 1)
	// Redis commands run (scripts' own calls included: INFO
	// commandstats) on the server, which serves only this benchmark.
	info := redis.NewClient(&redis.Options{Addr: redistest.Addr(b)})
	b.Cleanup(func() { _ = info.Close() })
	cpu := benchpair.ServerCPU(context.Background(), info)
	var secs, tripsN, calls, cpuUs [2]float64
	b.ResetTimer()
	for range rounds {
		for i, cfg := range []worker.Config{off, on} {
			t0, c0 := trips.N(), serverCalls(b, info)
			u0, err := cpu()
			must(b, err)
			secs[i] += float64(per) / runsPerSecondWith(b, a, st, per, cfg, task)
			tripsN[i] += float64(trips.N() - t0)
			u1, err := cpu()
			must(b, err)
			calls[i] += float64(serverCalls(b, info) - c0 - 2) // the INFOs
			cpuUs[i] += u1 - u0
		}
	}
	n := float64(rounds * per)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(n/secs[1], "runs/s")
	b.ReportMetric(n/secs[0], "baseline-runs/s")
	b.ReportMetric(secs[0]/secs[1], "ratio")
	b.ReportMetric(tripsN[1]/n, "round-trips/run")
	b.ReportMetric(tripsN[0]/n, "baseline-round-trips/run")
	b.ReportMetric(calls[1]/n, "redis-calls/run")
	b.ReportMetric(calls[0]/n, "baseline-redis-calls/run")
	b.ReportMetric(cpuUs[1]/n, "redis-cpu-us/run")
	b.ReportMetric(cpuUs[0]/n, "baseline-redis-cpu-us/run")
}

// serverCalls is how many commands the server has run: the calls of INFO
// commandstats, summed (a script's own calls count, as does the EVALSHA).
func serverCalls(b *testing.B, c *redis.Client) int64 {
	stats, err := c.Info(context.Background(), "commandstats").Result()
	must(b, err)
	var n int64
	for line := range strings.Lines(stats) {
		if _, rest, ok := strings.Cut(line, ":calls="); ok {
			v, _, _ := strings.Cut(rest, ",")
			c, err := strconv.ParseInt(v, 10, 64)
			must(b, err)
			n += c
		}
	}
	return n
}

func BenchmarkHistoryMemory(b *testing.B) {
	f := backendNamed(b, "redis").new(b, nil)
	ctx := context.Background()
	base := f.prefix + "|" + lock.DefaultPoolSuffix
	// A typical record: a success by a runner named as the runner names
	// itself, kept 7 days.
	rec := allocator.RunRecord{Outcome: string(worker.OutcomeSuccess), Attempts: 1, Runner: "worker-host-01:123456", ExitStatus: -1, Retain: 7 * 24 * time.Hour}
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				if err := f.store.RecordRun(ctx, fmt.Sprintf("item-%07d", i), i, rec); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	var used int64
	var each []string
	for _, k := range []string{base + "|hist:last", base + "|hist:expiry"} {
		n, err := f.redis.MemoryUsage(ctx, k, 0).Result()
		must(b, err)
		used += n
		each = append(each, fmt.Sprintf("%s %.1f bytes/item", k[len(base)+1:], float64(n)/float64(b.N)))
	}
	tail := rec
	tail.Outcome, tail.Error, tail.ExitStatus = string(worker.OutcomeFailure), "worker: task failed: \"./task.sh\": exit status 1", 1
	for i := range 20 {
		tail.Stderr += fmt.Sprintf("%03d %s\n", i, strings.Repeat("x", 200))
	}
	must(b, f.store.RecordRun(ctx, "item-0000001", int64(b.N+1), tail))
	tailBytes, err := f.redis.MemoryUsage(ctx, base+"|hist:tail:item-0000001", 0).Result()
	must(b, err)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(used)/float64(b.N), "bytes/item")
	b.ReportMetric(float64(tailBytes), "tail-bytes")
	b.Logf("%d items: hist:last + hist:expiry use %d bytes: %s", b.N, used, strings.Join(each, ", "))
}
