package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/dashboard"
	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/keyspace"
	"github.com/lockpool/lockpool/pkg/lock"
)

// walkPool is a pool of 2,000 items in every state, with lock keys around it
// that are not its items', for the walks' tests:
//
//	item-0000..0199  leased, owners by i%4: runner-a/w<i%3>, runner-ab/w1, runner-b/w0, runner-a/wx
//	item-0200..0219  cooldown
//	item-0220..0224  quarantine (item-0224 without a TTL)
//	item-0225, 0226  locked by others ("some-app"; "runner-a/w1", no token)
//	item-0227        error: its lock key is a HASH (WRONGTYPE)
//	item-0228..1999  free
//
// and, not the pool's: lock keys of non-members ("<base>:x" leased,
// "<base>:stranger" in cooldown), and the keys of another pool whose base
// extends this one's ("<base>:sub": a leased lock and its member SET).
var walkWant = counts{Items: 2000, Free: 1772, Leased: 200, Cooldown: 20, Quarantine: 5, Locked: 2, Errors: 1}

func walkItem(i int) string { return fmt.Sprintf("item-%04d", i) }

// newUISource is the dashboard's source over the pool "<prefix>|lock-pool"
// (loop mode), without an allocator: it reads, it does not act.
func newUISource(tb testing.TB, client redis.UniversalClient, prefix string) *uiSource {
	tb.Helper()
	cfg := &Config{Mode: "loop", Pool: PoolConfig{Prefix: prefix, Name: "lock-pool"}}
	pool, err := lock.NewRedisLockPool(client, cfg.lockConfig())
	if err != nil {
		tb.Fatal(err)
	}
	store, err := statusStore(cfg, pool)
	if err != nil {
		tb.Fatal(err)
	}
	return &uiSource{cfg: cfg, client: client, pool: pool, store: store}
}

func newWalkPool(t *testing.T, client redis.UniversalClient, prefix string) *uiSource {
	t.Helper()
	ctx := context.Background()
	src := newUISource(t, client, prefix)
	pool := src.pool
	items := make([]string, 2000)
	for i := range items {
		items[i] = walkItem(i)
	}
	if err := pool.Extend(ctx, items); err != nil {
		t.Fatal(err)
	}
	owners := []string{"runner-a/w%d", "runner-ab/w1", "runner-b/w0", "runner-a/wx"}
	pipe := client.Pipeline()
	for i := range 200 {
		owner := owners[i%4]
		if i%4 == 0 {
			owner = fmt.Sprintf(owner, i%3)
		}
		pipe.Set(ctx, pool.Key(walkItem(i)), fmt.Sprintf("%s#%d", owner, i+1), time.Hour)
	}
	for i := 200; i < 220; i++ {
		pipe.Set(ctx, pool.Key(walkItem(i)), allocator.CooldownValue, time.Hour)
	}
	for i := 220; i < 224; i++ {
		pipe.Set(ctx, pool.Key(walkItem(i)), allocator.QuarantineValue, time.Hour)
	}
	pipe.Set(ctx, pool.Key(walkItem(224)), allocator.QuarantineValue, 0)
	pipe.Set(ctx, pool.Key(walkItem(225)), "some-app", time.Hour)
	pipe.Set(ctx, pool.Key(walkItem(226)), "runner-a/w1", time.Hour)
	pipe.HSet(ctx, pool.Key(walkItem(227)), "not", "a lock")
	pipe.Set(ctx, pool.Key("x"), "runner-a/w0#5", time.Hour)
	pipe.Set(ctx, pool.Key("stranger"), allocator.CooldownValue, time.Hour)
	other := keyspace.New(prefix, "lock-pool:sub")
	pipe.Set(ctx, other.Lock("it1"), "runner-a/w0#7", time.Hour)
	pipe.SAdd(ctx, other.Members(), "it1")
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	return src
}

// slowDescribe is every member's lock, read one member at a time: what
// the walks must agree with.
func slowDescribe(t *testing.T, src *uiSource) []itemInfo {
	t.Helper()
	var all []itemInfo
	for it, err := range src.pool.Items(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		infos, err := describe(context.Background(), src.client, src.pool, []string{it})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, infos...)
	}
	return all
}

// counts are a statusReport's counts by state, comparable.
type counts struct{ Items, Free, Leased, Cooldown, Quarantine, Locked, Errors int64 }

func countsOf(r statusReport) counts {
	return counts{Items: r.Items, Free: r.Free, Leased: r.Leased, Cooldown: r.Cooldown, Quarantine: r.Quarantine, Locked: r.Locked, Errors: r.Errors}
}

// walkServers runs test on a dedicated redis-server (the shared one holds
// every other test's keys, on which planWalk's choice would depend) and
// on a 3-master Redis Cluster (whose client sends a keyless SCAN to any
// node), each test with a pool of its own: a server then holds at most
// the four tests' 233 keys each, under half of a pool's 2,000 members,
// so planWalk walks the lock keys.
func walkServers(t *testing.T, tests map[string]func(t *testing.T, client redis.UniversalClient, prefix string)) {
	srv := redistest.StartServer(t)
	cluster := redistest.StartCluster(t, redistest.ClusterOptions{})
	for _, b := range []struct {
		name   string
		client func(t *testing.T) redis.UniversalClient
		tagged bool
	}{
		{"redis", func(t *testing.T) redis.UniversalClient { return srv.Client(t) }, false},
		{"redis-cluster", func(t *testing.T) redis.UniversalClient { return cluster.Client(t) }, true},
	} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			for name, test := range tests {
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					prefix := redistest.Prefix(t)
					if b.tagged {
						prefix = "{" + prefix + "}"
					}
					test(t, b.client(t), prefix)
				})
			}
		})
	}
}

func TestPoolWalks(t *testing.T) {
	t.Parallel()
	walkServers(t, map[string]func(t *testing.T, client redis.UniversalClient, prefix string){
		"Status":      testStatusCounts,
		"ItemsPaging": testItemsPaging,
		"ItemsExact":  testItemsExact,
		"ItemsBad":    testItemsBadQueries,
	})
}

// testStatusCounts: both walks count what reading every member's lock
// counts, and buildStatus walks the lock keys on a small database.
func testStatusCounts(t *testing.T, client redis.UniversalClient, prefix string) {
	ctx := context.Background()
	src := newWalkPool(t, client, prefix)
	slow := statusReport{Items: 2000}
	for _, in := range slowDescribe(t, src) {
		if in.Status == "free" {
			slow.Free++
		}
		slow.count(in.Status)
	}
	if countsOf(slow) != walkWant {
		t.Fatalf("the fixture read member by member counts %+v, want %+v", slow, walkWant)
	}
	plan, err := planWalk(ctx, client, src.pool)
	if err != nil || plan.scanner == nil || plan.members != 2000 {
		t.Fatalf("planWalk = %+v, %v; want the lock keys walked and 2000 members", plan, err)
	}
	for name, p := range map[string]walkPlan{"lock keys": plan, "members": {members: plan.members}} {
		var r statusReport
		if err := countStates(ctx, client, src.pool, p, &r); err != nil || countsOf(r) != walkWant {
			t.Errorf("countStates walking the %s = %+v, %v; want %+v", name, countsOf(r), err, walkWant)
		}
	}
	r, err := buildStatus(ctx, src.cfg, client, src.pool)
	if err != nil || countsOf(r) != walkWant {
		t.Errorf("buildStatus = %+v, %v; want the counts %+v", countsOf(r), err, walkWant)
	}
}

// pageAll follows q's pages to the end and returns every item seen, each
// page checked: no item twice in one page, and Next of the walk kind
// (m or k).
func pageAll(t *testing.T, src *uiSource, q dashboard.Query, kind string) map[string]itemInfo {
	t.Helper()
	seen := map[string]itemInfo{}
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("%+v: still paging after 1000 pages", q)
		}
		p, err := src.Items(context.Background(), q)
		if err != nil {
			t.Fatalf("Items(%+v): %v", q, err)
		}
		onPage := map[string]bool{}
		for _, in := range p.Items.([]itemInfo) {
			if onPage[in.Item] {
				t.Errorf("%+v: %s twice on one page", q, in.Item)
			}
			onPage[in.Item] = true
			seen[in.Item] = in
		}
		if p.Next == "" {
			return seen
		}
		if !strings.HasPrefix(p.Next, kind+":") {
			t.Fatalf("%+v: next page %q, want a cursor of the %s walk", q, p.Next, kind)
		}
		q.Cursor = p.Next
	}
}

// testItemsPaging: following the pages of each walk shows every matching
// item, and none other, with its state.
func testItemsPaging(t *testing.T, client redis.UniversalClient, prefix string) {
	src := newWalkPool(t, client, prefix)
	all := slowDescribe(t, src)
	for _, c := range []struct {
		name string
		q    dashboard.Query
		kind string // of the walk: m (members), k (lock keys)
		want int
	}{
		{"everything", dashboard.Query{}, "m", 2000},
		{"glob", dashboard.Query{Match: "item-01*"}, "m", 100},
		{"free", dashboard.Query{States: []string{"free"}}, "m", 1772},
		{"free or leased", dashboard.Query{States: []string{"free", "leased"}}, "m", 1972},
		{"leased", dashboard.Query{States: []string{"leased"}}, "k", 200},
		{"held otherwise", dashboard.Query{States: []string{"cooldown,quarantine", "locked", "error"}}, "k", 28},
		{"held and glob", dashboard.Query{States: []string{"cooldown"}, Match: "item-021?"}, "k", 10},
		{"runner", dashboard.Query{Runner: "runner-a"}, "k", 50},
		{"runner and glob", dashboard.Query{Runner: "runner-a", Match: "item-00*"}, "k", 25},
		{"runner, leased", dashboard.Query{Runner: "runner-b", States: []string{"leased", "free"}}, "k", 50},
		{"runner, not leased", dashboard.Query{Runner: "runner-a", States: []string{"cooldown"}}, "", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := c.q
			q.N = 40
			f := listFilter{states: q.States, match: q.Match, runner: q.Runner}
			if err := f.check(); err != nil {
				t.Fatal(err)
			}
			want := map[string]itemInfo{}
			for _, in := range all {
				if ok, _ := path.Match(cmp.Or(q.Match, "*"), in.Item); ok && f.keeps(in) {
					want[in.Item] = in
				}
			}
			if len(want) != c.want {
				t.Fatalf("the fixture has %d items matching, want %d", len(want), c.want)
			}
			got := pageAll(t, src, q, c.kind)
			for it, in := range want {
				if g, ok := got[it]; !ok {
					t.Errorf("%s (%s) matches and is on no page", it, in.Status)
				} else if g.Status != in.Status || g.Owner != in.Owner || g.Token != in.Token {
					t.Errorf("%s on a page: %+v; want %+v", it, g, in)
				}
			}
			for it, in := range got {
				if _, ok := want[it]; !ok {
					t.Errorf("%s (%s, owner %q) is on a page and does not match", it, in.Status, in.Owner)
				}
			}
		})
	}
}

// testItemsExact: a name without glob characters is looked up.
func testItemsExact(t *testing.T, client redis.UniversalClient, prefix string) {
	src := newWalkPool(t, client, prefix)
	for _, c := range []struct {
		q    dashboard.Query
		want []string
	}{
		{dashboard.Query{Match: "item-0005"}, []string{"item-0005/leased"}},
		{dashboard.Query{Match: "item-0227"}, []string{"item-0227/error"}},
		{dashboard.Query{Match: "item-1500", States: []string{"free"}}, []string{"item-1500/free"}},
		{dashboard.Query{Match: "item-0005", States: []string{"free"}}, nil},
		{dashboard.Query{Match: "item-0004", Runner: "runner-a"}, []string{"item-0004/leased"}},
		{dashboard.Query{Match: "item-0005", Runner: "runner-a"}, nil},
		{dashboard.Query{Match: "x"}, nil}, // a lock key, not a member
		{dashboard.Query{Match: "item-0005", Cursor: "m:7"}, nil},
	} {
		c.q.N = 10
		p, err := src.Items(context.Background(), c.q)
		if err != nil {
			t.Errorf("Items(%+v): %v", c.q, err)
			continue
		}
		var got []string
		for _, in := range p.Items.([]itemInfo) {
			got = append(got, in.Item+"/"+in.Status)
		}
		if !slices.Equal(got, c.want) || p.Next != "" {
			t.Errorf("Items(%+v) = %q, next %q; want %q and no next page", c.q, got, p.Next, c.want)
		}
	}
}

// testItemsBadQueries: a malformed cursor, one of another walk, or an
// unknown state is the request's fault: dashboard.ErrBadQuery, a 400.
func testItemsBadQueries(t *testing.T, client redis.UniversalClient, prefix string) {
	src := newWalkPool(t, client, prefix)
	for _, q := range []dashboard.Query{
		{Cursor: "17"}, {Cursor: "m:"}, {Cursor: "m:x"}, {Cursor: "m:-1"}, {Cursor: "k:0"}, {Cursor: "q:5"}, {Cursor: "k:5:1"},
		{Cursor: "k:5"}, // a walk of the held items, for a query of all
		{Cursor: "k:5", States: []string{"leased", "free"}},
		{States: []string{"held"}},
	} {
		q.N = 10
		if _, err := src.Items(context.Background(), q); !errors.Is(err, dashboard.ErrBadQuery) {
			t.Errorf("Items(%+v): %v, want dashboard.ErrBadQuery", q, err)
		}
	}
	srv := httptest.NewServer(dashboard.Handler(src, dashboard.Options{}))
	defer srv.Close()
	resp, body := do(t, http.MethodGet, srv.URL+"/api/items?cursor=zz")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "cursor") {
		t.Errorf("GET /api/items?cursor=zz: %d %s; want 400 naming the cursor", resp.StatusCode, body)
	}
	resp, body = do(t, http.MethodGet, srv.URL+"/api/items?runner=runner-b&n=1000")
	if resp.StatusCode != http.StatusOK || strings.Count(body, `"owner":"runner-b/w0"`) != 50 || strings.Count(body, `"owner"`) != 50 {
		t.Errorf("GET /api/items?runner=runner-b: %d %.300s; want runner-b's 50 leases", resp.StatusCode, body)
	}
}

// TestPoolWalkChoice: the lock keys are walked unless the server refuses
// DBSIZE (an ACL user without +dbsize +scan: no SCAN is tried, so ACL LOG
// shows only the DBSIZE) or the database holds more than half as many keys
// as the pool has members; the other walk gives the same counts and pages.
func TestPoolWalkChoice(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.StartServer(t)
	admin := srv.Client(t)
	src := newWalkPool(t, admin, "choice")

	aclUser(t, admin, "noscan", "pw", "~*", "&*", "+@all", "-dbsize", "-scan")
	user := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "noscan", Password: "pw", ContextTimeoutEnabled: true})
	t.Cleanup(func() { user.Close() })
	pool, err := lock.NewRedisLockPool(user, src.cfg.lockConfig())
	if err != nil {
		t.Fatal(err)
	}
	limited := &uiSource{cfg: src.cfg, client: user, pool: pool, store: src.store}
	if plan, err := planWalk(ctx, user, pool); err != nil || plan.scanner != nil {
		t.Fatalf("planWalk without DBSIZE = %+v, %v; want the members walked", plan, err)
	}
	if r, err := buildStatus(ctx, src.cfg, user, pool); err != nil || countsOf(r) != walkWant {
		t.Errorf("buildStatus without DBSIZE = %+v, %v; want %+v", countsOf(r), err, walkWant)
	}
	if got := pageAll(t, limited, dashboard.Query{N: 40, States: []string{"leased"}}, "m"); len(got) != 200 {
		t.Errorf("the leased items without SCAN: %d on the pages, want 200", len(got))
	}
	if denied := aclDenials(t, admin, "noscan", "dbsize"); len(denied) > 0 {
		t.Errorf("the walks asked for more than DBSIZE of a user without it:\n%s", strings.Join(denied, "\n"))
	}

	// A database of more than half as many keys as the pool has members
	// (its 233 and 1,000 others): the members are walked.
	pipe := admin.Pipeline()
	for i := range 1000 {
		pipe.Set(ctx, fmt.Sprintf("other-app:%d", i), "x", time.Hour)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if plan, err := planWalk(ctx, admin, src.pool); err != nil || plan.scanner != nil {
		t.Fatalf("planWalk with 1000 other keys = %+v, %v; want the members walked", plan, err)
	}
	if r, err := buildStatus(ctx, src.cfg, admin, src.pool); err != nil || countsOf(r) != walkWant {
		t.Errorf("buildStatus with many other keys = %+v, %v; want %+v", countsOf(r), err, walkWant)
	}
}
