package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/dashboard"
)

const (
	// pageBudget bounds the time a page's walk goes on looking for
	// matches: past it the page holds what was found, and its cursor
	// goes on from there.
	pageBudget = 150 * time.Millisecond
)

// Items answers a page of the dashboard's items: the one item Match names
// when it has no glob character; else a walk of the pool's members
// (SSCAN MATCH) or, when only held items can match (States without
// "free", or a Runner), of its lock keys (see pool_walk.go), read on
// until the page holds N items, the walk ends or pageBudget is spent.
// The page's Next goes on with the same walk: "m:<cursor>" for the
// members, "k:<cursor>" for the lock keys. As with SCAN, an item that
// matches all along is on some page, and on one page at most once; it may
// be on two pages, and one added, removed or changed during the walk may
// or may not show.
func (s *uiSource) Items(ctx context.Context, q dashboard.Query) (dashboard.Page, error) {
	f := listFilter{states: q.States, match: q.Match, runner: q.Runner}
	if err := f.check(); err != nil {
		return dashboard.Page{}, fmt.Errorf("%w: %w", dashboard.ErrBadQuery, err)
	}
	from, err := parseCursor(q.Cursor)
	if err != nil {
		return dashboard.Page{}, err
	}
	items := []itemInfo{}
	var next walkCursor
	switch {
	case f.runner != "" && len(f.states) > 0 && !slices.Contains(f.states, "leased"):
		// A runner's items are leased ones: none match.
	case f.match != "" && !strings.ContainsAny(f.match, `*?[\`):
		if from.kind == 0 { // the name's one page was the first
			items, err = s.lookup(ctx, f)
		}
	default:
		items, next, err = s.walk(ctx, f, from, max(q.N, 1))
	}
	if err != nil {
		return dashboard.Page{}, err
	}
	names := make([]string, len(items))
	for i, in := range items {
		names[i] = in.Item
	}
	last, err := s.store.LastRuns(ctx, names)
	if err != nil {
		return dashboard.Page{}, err
	}
	for i := range items {
		if h, ok := last[items[i].Item]; ok {
			items[i].Last = &h
		}
	}
	return dashboard.Page{Items: items, Next: next.String()}, nil
}

// lookup is the page of an exact name: the item if it is a member that
// f keeps.
func (s *uiSource) lookup(ctx context.Context, f listFilter) ([]itemInfo, error) {
	if ok, err := s.client.SIsMember(ctx, s.pool.PoolKey(), f.match).Result(); err != nil || !ok {
		return []itemInfo{}, err
	}
	infos, err := describe(ctx, s.client, s.pool, []string{f.match})
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(infos, func(in itemInfo) bool { return !f.keeps(in) }), nil
}

// walk reads on from cursor, walking the members or the lock keys (the
// cursor's walk, or for a new one the lock keys when only held items
// can match and planWalk allows), until the page has n items, the walk
// ends or pageBudget is spent.
func (s *uiSource) walk(ctx context.Context, f listFilter, from walkCursor, n int) ([]itemInfo, walkCursor, error) {
	heldOnly := f.runner != "" || len(f.states) > 0 && !slices.Contains(f.states, "free")
	var scanner redis.Cmdable // nil: walk the members
	switch {
	case from.kind == 'k' && !heldOnly:
		return nil, walkCursor{}, fmt.Errorf("%w: cursor %q walks the held items only, and this query asks for free ones too: start again without a cursor",
			dashboard.ErrBadQuery, from)
	case from.kind == 'k':
		node, err := poolNode(ctx, s.client, s.pool.Keys())
		if err != nil {
			return nil, walkCursor{}, err
		}
		scanner = node
	case from.kind == 0 && heldOnly:
		plan, err := planWalk(ctx, s.client, s.pool)
		if err != nil {
			return nil, walkCursor{}, err
		}
		scanner = plan.scanner
	}
	pattern := lockPattern(s.pool.Keys(), f.match)
	step := func(cursor uint64, count int64) ([]itemInfo, uint64, error) {
		if scanner != nil {
			return scanLocks(ctx, s.client, scanner, s.pool, cursor, pattern, count)
		}
		names, next, err := s.client.SScan(ctx, s.pool.PoolKey(), cursor, f.match, count).Result()
		if err != nil {
			return nil, 0, err
		}
		infos, err := describe(ctx, s.client, s.pool, names)
		return infos, next, err
	}

	at := walkCursor{kind: 'm', at: from.at}
	if scanner != nil {
		at.kind = 'k'
	}
	start := time.Now()
	items := []itemInfo{}
	seen := map[string]bool{}
	var visited int64
	for count := int64(n); ; {
		infos, next, err := step(at.at, count)
		if err != nil {
			return nil, walkCursor{}, err
		}
		visited += count
		for _, in := range infos {
			if f.keeps(in) && !seen[in.Item] {
				seen[in.Item] = true
				items = append(items, in)
			}
		}
		took := time.Since(start)
		if at.at = next; next == 0 || len(items) >= n || took >= pageBudget {
			return items, at, nil
		}
		count = stepCount(n-len(items), len(items), visited, took)
	}
}

// stepCount is the COUNT of a walk's next step: as many as should find
// the need items the page still lacks at the rate found of visited so
// far, growing at most eightfold a step, within [need, maxScanCount],
// and no more than the rest of pageBudget visits at the pace so far.
func stepCount(need, found int, visited int64, took time.Duration) int64 {
	want := 8 * visited
	if found > 0 {
		want = min(want, int64(need)*visited/int64(found)+1)
	}
	want = min(max(want, int64(need)), maxScanCount)
	if fits := int64(float64(visited) * float64(pageBudget-took) / float64(max(took, 1))); fits < want {
		want = max(fits, 1)
	}
	return want
}

// walkCursor is where a page's walk goes on: kind 'm' (the members) or
// 'k' (the lock keys), and the SSCAN or SCAN cursor there. The zero value
// starts a new walk; a walk's end is "".
type walkCursor struct {
	kind byte
	at   uint64
}

func (c walkCursor) String() string {
	if c.at == 0 {
		return ""
	}
	return string(c.kind) + ":" + strconv.FormatUint(c.at, 10)
}

// parseCursor reads a page's Next; "" starts a walk.
func parseCursor(s string) (walkCursor, error) {
	if s == "" {
		return walkCursor{}, nil
	}
	kind, n, _ := strings.Cut(s, ":")
	at, err := strconv.ParseUint(n, 10, 64)
	if kind != "m" && kind != "k" || err != nil || at == 0 {
		return walkCursor{}, fmt.Errorf("%w: cursor %q: want m:<n> or k:<n> (n > 0), as a page's next gives it", dashboard.ErrBadQuery, s)
	}
	return walkCursor{kind: kind[0], at: at}, nil
}
