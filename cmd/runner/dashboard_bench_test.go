package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/dashboard"
	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
)

// BenchmarkDashboardItems measures what the dashboard asks of Redis, on a
// private redis-server, for a pool of 100 items and one of 1,000,000 (5
// and 50 of them leased, 20 in cooldown, 3 quarantined):
//
//	first-page   GET /api/items?n=100                  (no filter)
//	glob         GET /api/items?n=100&match=*1234*     (300 of 1M names match, none of 100)
//	glob-rare    GET /api/items?n=100&match=item-00000[1-3]*  (30 names match)
//	leased       GET /api/items?n=100&state=leased
//	status       buildStatus, the counts of /api/status and pool status
//
// Each op is one request through the dashboard's handler and its JSON, as
// the page sends it (or one status read); items/page is how many items the
// first page holds (a page stops at 100 items or after about 150 ms). Run
// with
//
//	go test -run '^$' -bench DashboardItems -benchtime 20x ./cmd/runner
//
// Setting up the 1,000,000 items takes a few seconds. Nothing here is
// checked against a time: the figures are for reading.
func BenchmarkDashboardItems(b *testing.B) {
	for _, n := range []int{100, 1_000_000} {
		b.Run(fmt.Sprintf("items=%d", n), func(b *testing.B) {
			src := benchPool(b, n)
			srv := httptest.NewServer(dashboard.Handler(src, dashboard.Options{}))
			b.Cleanup(srv.Close)
			for _, c := range []struct{ name, query string }{
				{"first-page", "n=100"},
				{"glob", "n=100&match=" + url.QueryEscape("*1234*")},
				{"glob-rare", "n=100&match=" + url.QueryEscape("item-00000[1-3]*")},
				{"leased", "n=100&state=leased"},
			} {
				b.Run(c.name, func(b *testing.B) {
					var page struct {
						Items []itemInfo `json:"items"`
					}
					for b.Loop() {
						resp, err := http.Get(srv.URL + "/api/items?" + c.query)
						if err != nil {
							b.Fatal(err)
						}
						err = json.NewDecoder(resp.Body).Decode(&page)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK || err != nil {
							b.Fatalf("GET /api/items?%s: %d %v", c.query, resp.StatusCode, err)
						}
					}
					// How full the first page is: what the search shows.
					b.ReportMetric(float64(len(page.Items)), "items/page")
				})
			}
			b.Run("status", func(b *testing.B) {
				for b.Loop() {
					r, err := buildStatus(context.Background(), src.cfg, src.client, src.pool)
					if err != nil {
						b.Fatal(err)
					}
					if r.Items != int64(n) {
						b.Fatalf("status counted %d items, want %d", r.Items, n)
					}
				}
			})
		})
	}
}

// benchPool fills a private server with a pool of n items named
// item-0000000..., a few of them held: leased (n/20,000, at least 5),
// resting in a cooldown (20) and quarantined (3).
func benchPool(b *testing.B, n int) *uiSource {
	b.Helper()
	ctx := context.Background()
	client := redistest.StartServer(b).Client(b)
	src := newUISource(b, client, "bench")
	pool := src.pool
	name := func(i int) string { return fmt.Sprintf("item-%07d", i) }
	const per = 10_000
	for start := 0; start < n; start += per * 10 {
		pipe := client.Pipeline()
		for from := start; from < min(start+per*10, n); from += per {
			members := make([]any, 0, per)
			for i := from; i < min(from+per, n); i++ {
				members = append(members, name(i))
			}
			pipe.SAdd(ctx, pool.PoolKey(), members...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	pipe := client.Pipeline()
	leased := max(5, n/20_000)
	for i := range leased {
		v := fmt.Sprintf("bench-runner/w%d#%d", i%8, i+1)
		pipe.Set(ctx, pool.Key(name(i*(n/leased))), v, time.Hour)
	}
	for i := range 20 {
		pipe.Set(ctx, pool.Key(name(n-1-2*i)), allocator.CooldownValue, time.Hour)
	}
	for i := range 3 {
		pipe.Set(ctx, pool.Key(name(n/2+1+i)), allocator.QuarantineValue, time.Hour)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	return src
}
