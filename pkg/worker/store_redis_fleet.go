package worker

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lockpool/lockpool/internal/history"
	"github.com/lockpool/lockpool/internal/luascript"
	"github.com/lockpool/lockpool/pkg/allocator"
)

var (
	//go:embed scripts/registry.lua
	registryLua string
	// fleetPieces are what the history and registry scripts may use.
	fleetPieces = luascript.Pieces(history.Piece, luascript.NewPiece("registry", registryLua))

	//go:embed scripts/record.lua
	recordLua    string
	recordScript = fleetPieces.New("worker/record.lua", recordLua)

	//go:embed scripts/lastrun.lua
	lastrunLua    string
	lastrunScript = fleetPieces.New("worker/lastrun.lua", lastrunLua)

	//go:embed scripts/lastruns.lua
	lastrunsLua    string
	lastrunsScript = fleetPieces.New("worker/lastruns.lua", lastrunsLua)

	//go:embed scripts/failed.lua
	failedLua    string
	failedScript = fleetPieces.New("worker/failed.lua", failedLua)

	//go:embed scripts/heartbeat.lua
	heartbeatLua    string
	heartbeatScript = fleetPieces.New("worker/heartbeat.lua", heartbeatLua)

	//go:embed scripts/throughput.lua
	throughputLua    string
	throughputScript = fleetPieces.New("worker/throughput.lua", throughputLua)

	//go:embed scripts/leave.lua
	leaveLua    string
	leaveScript = fleetPieces.New("worker/leave.lua", leaveLua)

	//go:embed scripts/runners.lua
	runnersLua    string
	runnersScript = fleetPieces.New("worker/runners.lua", runnersLua)
)

// historyKeys are the history keys of item: the records, their times,
// and item's tail.
func (s *RedisStore) historyKeys(item string) []string {
	return []string{s.keys.History(), s.keys.HistoryExpiry(), s.keys.Tail(item)}
}

// RecordRun implements [RunHistory].
func (s *RedisStore) RecordRun(ctx context.Context, item string, token int64, rec allocator.RunRecord) error {
	const op = "RecordRun"
	if err := checkItem(op, item); err != nil {
		return err
	}
	r, tail, retain := history.Entry(rec).Args()
	if err := recordScript.Run(ctx, s.client, s.historyKeys(item), item, token, r, tail, retain).Err(); err != nil {
		return redisErr(op, strconv.Quote(item), "", err)
	}
	return nil
}

// LastRun implements [RunHistory].
func (s *RedisStore) LastRun(ctx context.Context, item string) (ItemHistory, bool, error) {
	const op = "LastRun"
	if err := checkItem(op, item); err != nil {
		return ItemHistory{}, false, err
	}
	res, err := lastrunScript.Run(ctx, s.client, []string{s.keys.History(), s.keys.Tail(item)}, item).Slice()
	if err != nil {
		return ItemHistory{}, false, redisErr(op, strconv.Quote(item), "", err)
	}
	now, _ := res[0].(int64)
	last, _ := res[1].(string)
	tailv, _ := res[2].(string)
	if last == "" {
		return ItemHistory{}, false, nil
	}
	rec, err := history.Decode(last)
	if err != nil {
		return ItemHistory{}, false, fmt.Errorf("worker: %s %q: %w", op, item, err)
	}
	// The key's TTL is the tail's retention: a tail read is visible.
	var tail history.Record
	if tailv != "" {
		if tail.At, tail.Token, tail.Stderr, err = history.DecodeTail(tailv); err != nil {
			return ItemHistory{}, false, fmt.Errorf("worker: %s %q: %w", op, item, err)
		}
	}
	h, found := itemHistory(item, rec, true, tail, time.UnixMilli(now))
	return h, found, nil
}

// LastRuns implements [RunHistory].
func (s *RedisStore) LastRuns(ctx context.Context, items []string) (map[string]ItemHistory, error) {
	const op = "LastRuns"
	if err := checkItems(op, items); err != nil {
		return nil, err
	}
	out := make(map[string]ItemHistory, len(items))
	if len(items) == 0 {
		return out, nil
	}
	args := make([]any, len(items))
	for i, it := range items {
		args[i] = it
	}
	res, err := lastrunsScript.Run(ctx, s.client, []string{s.keys.History()}, args...).Slice()
	if err != nil {
		return nil, redisErr(op, fmt.Sprintf("%d items", len(items)), "", err)
	}
	if len(res) != len(items)+1 {
		return nil, fmt.Errorf("worker: %s: lastruns.lua answered %d values for %d items", op, len(res), len(items))
	}
	now, _ := res[0].(int64)
	for i, it := range items {
		v, _ := res[i+1].(string)
		if v == "" {
			continue
		}
		rec, err := history.Decode(v)
		if err != nil {
			return nil, fmt.Errorf("worker: %s %q: %w", op, it, err)
		}
		if h, ok := itemHistory(it, rec, true, history.Record{}, time.UnixMilli(now)); ok {
			out[it] = h
		}
	}
	return out, nil
}

// FailedItems implements [RunHistory]. The cursor is SSCAN's.
func (s *RedisStore) FailedItems(ctx context.Context, id, cursor string, n int) ([]FailedItem, string, error) {
	const op = "FailedItems"
	if err := checkBatch(op, id); err != nil {
		return nil, "", err
	}
	if cursor == "" {
		cursor = "0"
	}
	if _, err := strconv.ParseUint(cursor, 10, 64); err != nil {
		return nil, "", fmt.Errorf("worker: %s %s: %w: cursor %q is not one FailedItems returned", op, batchSubject(id), ErrInvalidConfig, cursor)
	}
	k := s.keys.Batch(id)
	res, err := failedScript.Run(ctx, s.client, []string{k.Failed, k.Errors}, cursor, clampPending(n)).Slice()
	if err != nil {
		return nil, "", redisErr(op, batchSubject(id), "", err)
	}
	next, _ := res[0].(string)
	if next == "0" {
		next = ""
	}
	page := make([]FailedItem, 0, (len(res)-1)/2)
	for i := 1; i+1 < len(res); i += 2 {
		item, _ := res[i].(string)
		e, _ := res[i+1].(string)
		page = append(page, FailedItem{Item: item, Error: e})
	}
	return page, next, nil
}

// Heartbeat implements [Registry].
func (s *RedisStore) Heartbeat(ctx context.Context, r Runner, ttl time.Duration) (string, error) {
	const op = "Heartbeat"
	if err := checkRunner(op, r, ttl); err != nil {
		return "", err
	}
	report, err := encodeRunner(r)
	if err != nil {
		return "", fmt.Errorf("worker: %s %q: %w", op, r.ID, err)
	}
	res, err := heartbeatScript.Run(ctx, s.client, []string{s.keys.Runners(), s.keys.RunnerInfo(), s.keys.Throughput()},
		r.ID, r.Instance, report, ttl.Milliseconds(), r.Grants, r.Runs, map[bool]string{true: "1", false: "0"}[r.First],
		ThroughputBucket.Milliseconds(), throughputSlots).Slice()
	if err != nil {
		return "", redisErr(op, "runner "+strconv.Quote(r.ID), "", err)
	}
	other, _ := res[1].(string)
	return other, nil
}

// Leave implements [Registry].
func (s *RedisStore) Leave(ctx context.Context, id, instance string) error {
	const op = "Leave"
	if err := checkRunnerID(op, id); err != nil {
		return err
	}
	if err := leaveScript.Run(ctx, s.client, []string{s.keys.Runners(), s.keys.RunnerInfo()}, id, instance).Err(); err != nil {
		return redisErr(op, "runner "+strconv.Quote(id), "", err)
	}
	return nil
}

// Runners implements [Registry].
func (s *RedisStore) Runners(ctx context.Context) ([]Runner, error) {
	const op = "Runners"
	res, err := runnersScript.Run(ctx, s.client, []string{s.keys.Runners(), s.keys.RunnerInfo()}).Slice()
	if err != nil {
		return nil, redisErr(op, "of pool "+strconv.Quote(s.keys.Base()), "", err)
	}
	out := make([]Runner, 0, (len(res)-1)/3)
	for i := 1; i+2 < len(res); i += 3 {
		id, _ := res[i].(string)
		exp, _ := res[i+1].(int64)
		v, _ := res[i+2].(string)
		r, err := decodeRunner(id, v)
		if err != nil {
			return nil, fmt.Errorf("worker: %s: %w", op, err)
		}
		r.Expires = time.UnixMilli(exp)
		out = append(out, r)
	}
	sortRunners(out)
	return out, nil
}

// Throughput implements [Registry].
func (s *RedisStore) Throughput(ctx context.Context) ([]ThroughputPoint, error) {
	const op = "Throughput"
	res, err := throughputScript.Run(ctx, s.client, []string{s.keys.Throughput()}).Slice()
	if err != nil {
		return nil, redisErr(op, "of pool "+strconv.Quote(s.keys.Base()), "", err)
	}
	now, _ := res[0].(int64)
	var ring []string
	for _, v := range res[1:] {
		sv, _ := v.(string)
		ring = append(ring, sv)
	}
	return throughputSeries(ring, time.UnixMilli(now))
}

// throughputSeries reads the ring's fields and values (field, value, ...)
// into the points of the window ending at now, oldest first.
func throughputSeries(ring []string, now time.Time) ([]ThroughputPoint, error) {
	first := throughputFirst(now)
	var out []ThroughputPoint
	for i := 0; i+1 < len(ring); i += 2 {
		var b, g, r int64
		if n, err := fmt.Sscanf(ring[i+1], "%d:%d:%d", &b, &g, &r); err != nil || n != 3 {
			return nil, fmt.Errorf("worker: Throughput: %w: bucket %q holds %.40q", history.ErrCorrupt, ring[i], ring[i+1])
		}
		if b >= first && b <= first+throughputSlots-1 {
			out = append(out, ThroughputPoint{At: time.UnixMilli(b * ThroughputBucket.Milliseconds()), Grants: g, Runs: r})
		}
	}
	return sortThroughput(out), nil
}

// encodeRunner is r's report as stored: JSON, without what the store
// keeps itself.
func encodeRunner(r Runner) (string, error) {
	r.Beat, r.Expires = time.Time{}, time.Time{}
	r.Host = history.Head(r.Host, 256)
	b, err := json.Marshal(r)
	return string(b), err
}

// decodeRunner reads a stored report, "<beat_ms>:<instance>:<json>".
func decodeRunner(id, v string) (Runner, error) {
	beat, rest, ok1 := strings.Cut(v, ":")
	inst, js, ok2 := strings.Cut(rest, ":")
	ms, err := strconv.ParseInt(beat, 10, 64)
	var r Runner
	if !ok1 || !ok2 || err != nil || json.Unmarshal([]byte(js), &r) != nil {
		return Runner{}, fmt.Errorf("runner %q: %w: %.60q", id, history.ErrCorrupt, v)
	}
	r.ID, r.Instance, r.Beat = id, inst, time.UnixMilli(ms)
	return r, nil
}

// sortRunners orders registrations by ID, then Instance.
func sortRunners(rs []Runner) {
	slices.SortFunc(rs, func(a, b Runner) int {
		return cmp.Or(strings.Compare(a.ID, b.ID), strings.Compare(a.Instance, b.Instance))
	})
}
