package benchpair

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// RoundTrips is a go-redis hook (Client.AddHook) that counts round trips:
// each command and each pipeline (a MULTI/EXEC transaction included) is
// one. Add it before the client is first used.
type RoundTrips struct {
	// Counted, when set, picks the calls to count by their context (e.g.
	// one carrying a marker value, to leave a background loop's traffic
	// out). Nil counts every call.
	Counted func(ctx context.Context) bool

	n atomic.Int64
}

// N is how many round trips were counted so far.
func (h *RoundTrips) N() int64 { return h.n.Load() }

func (h *RoundTrips) count(ctx context.Context) {
	if h.Counted == nil || h.Counted(ctx) {
		h.n.Add(1)
	}
}

// DialHook implements redis.Hook; dials are not round trips of a call.
func (h *RoundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (h *RoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count(ctx)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (h *RoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.count(ctx)
		return next(ctx, cmds)
	}
}

// ServerCPU is a [Meter] of the CPU time a Redis server has used, in
// microseconds: used_cpu_user + used_cpu_sys of INFO cpu, the server
// process's getrusage, all its threads. Give it a client of a server that
// serves nothing else.
func ServerCPU(ctx context.Context, c redis.UniversalClient) Meter {
	return func() (float64, error) {
		info, err := c.Info(ctx, "cpu").Result()
		if err != nil {
			return 0, fmt.Errorf("INFO cpu: %w", err)
		}
		var sum float64
		var seen int
		for line := range strings.Lines(info) {
			k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
			if !ok || (k != "used_cpu_user" && k != "used_cpu_sys") {
				continue
			}
			s, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("INFO cpu: %s: %w", k, err)
			}
			sum += s
			seen++
		}
		if seen != 2 {
			return 0, fmt.Errorf("INFO cpu: no used_cpu_user and used_cpu_sys in %q", info)
		}
		return sum * 1e6, nil
	}
}
