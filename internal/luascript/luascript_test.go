package luascript

import (
	"fmt"
	"strings"
	"testing"
)

var (
	pieceA = NewPiece("aa", "-- aa: uses bb.\n-- uses: bb\nlocal function aa() return bb() end")
	pieceB = NewPiece("bb", "local function bb() return 1 end")
	pieceC = NewPiece("cc", "local function cc() return 2 end")
)

// source returns what s.New(name, body) sends, or the panic it raised or
// the error Verify reports of it.
func source(s Set, body string) (src string, panicked string) {
	defer func() {
		if r := recover(); r != nil {
			panicked = fmt.Sprint(r)
		}
	}()
	script := s.New("test.lua", body)
	v, ok := registry.Load(script.Hash())
	if !ok {
		return "", "not registered"
	}
	info, err := v.(*entry).load()
	if err != nil {
		return "", err.Error()
	}
	return info.Source, ""
}

func TestNewPrependsOnlyThePiecesUsed(t *testing.T) {
	s := Pieces(pieceA, pieceB, pieceC)
	body := "-- t: a test.\n-- uses: aa, clock\nlocal now = clock()\nreturn aa() + now"
	src, p := source(s, body)
	if p != "" {
		t.Fatalf("New panicked: %s", p)
	}
	want := pieceB.src + "\n" + pieceA.src + "\n" + Clock.src + "\n" + body
	if src != want {
		t.Fatalf("assembled\n%s\nwant bb, then aa (which uses bb), then clock, then the body:\n%s", src, want)
	}
	if got, _ := source(s, "-- t: no pieces.\nreturn 1"); got != "-- t: no pieces.\nreturn 1" {
		t.Fatalf("a body using no piece became\n%s\nwant it unchanged", got)
	}
	// A piece two others use comes once.
	d := NewPiece("dd", "-- uses: bb\nlocal function dd() return bb() end")
	src, _ = source(Pieces(pieceA, pieceB, d), "-- uses: aa, dd\nreturn aa() + dd()")
	if n := strings.Count(src, "local function bb("); n != 1 {
		t.Fatalf("bb defined %d times in\n%s\nwant once", n, src)
	}
}

func TestNewRefusesAMismatchedUsesLine(t *testing.T) {
	s := Pieces(pieceA, pieceB)
	for _, tc := range []struct{ name, body, panic string }{
		{"unknown piece", "-- uses: zz\nreturn 1", "uses zz, which is not a piece"},
		{"called, not listed", "-- uses: aa\nreturn aa() + clock()", "calls clock(...) but its -- uses: line does not list clock"},
		{"listed, not called", "-- uses: aa, clock\nreturn aa()", "lists clock in -- uses: but never calls clock(...)"},
		{"called in a comment only", "-- uses: clock\n-- clock() is not called\nreturn 1", "never calls clock"},
		{"keys out of order", "-- KEYS[2]: b  <base>|b\n-- KEYS[1]: a  <base>|a\nreturn 1", "KEYS[1] expected next"},
		{"a key missing", "-- KEYS[1]: a  <base>|a\n-- KEYS[3]: c  <base>|c\nreturn 1", "KEYS[2] expected next"},
		{"a key with no template", "-- KEYS[1]: the pool\nreturn 1", "a key has no template"},
		{"after an open tail", "-- ARGV[1..]: items\n-- ARGV[2]: x\nreturn 1", "follows the open tail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, p := source(s, tc.body); !strings.Contains(p, tc.panic) {
				t.Fatalf("New and Verify said %q, want something containing %q", p, tc.panic)
			}
		})
	}
	if _, p := source(Pieces(NewPiece("ee", "-- uses: ff\nlocal function ee() return ff() end"), NewPiece("ff", "-- uses: ee\nlocal function ff() return ee() end")), "-- uses: ee\nreturn ee()"); !strings.Contains(p, "uses itself") {
		t.Fatalf("a cycle of pieces panicked with %q, want \"uses itself\"", p)
	}
}

// acquireLike has the shape of allocator/acquire.lua's header; refreshLike
// of allocator/refresh.lua's (a range counted by n); dropLike of
// worker/drop.lua's (an open tail).
const (
	acquireLike = `-- acquire: a test.
-- KEYS[1]: the pool's member SET             <base>|pool
-- KEYS[2]: the availability index ZSET       <base>|alloc:index
-- KEYS[3]: the epoch HASH                    <base>|epoch
-- ARGV[1]: lock key prefix                   <base>:
-- ARGV[2]: owner
-- ARGV[3]: lease TTL in ms                   <ms>
-- ARGV[4]: '1' to lease only the preferred item, else ''  <flag>
-- ARGV[5]: the dataset the caller saw last   <known>
-- ARGV[6]: the longest lease TTL, in ms      <ms>
return 1`
	refreshLike = `-- refresh: a test.
-- KEYS[1]: the availability index ZSET        <base>|alloc:index
-- KEYS[2..n+1]: the leases' lock keys         <base>:<item>
-- ARGV[1]: TTL in ms                          <ms>
-- ARGV[2..n+1]: the leases' lock values       <owner>#<token>
-- ARGV[n+2..2n+1]: the leases' items          <item>
return 1`
	dropLike = `-- drop: a test.
-- KEYS[1]: the batch's pending SET            <base>|batch:<id>:todo
-- KEYS[2]: the batch's meta HASH              <base>|batch:<id>:meta
-- ARGV[1]: retain, ms                         <ms>
-- ARGV[2]: the longest lease TTL, in ms       <ms>
-- ARGV[3..]: items to look at                 <item>
return 1`

	altLike = `-- alt: a key of one of two kinds
-- KEYS[1]: the count HASH      <base>|run:failures or <base>|batch:<id>:failures
-- KEYS[2]: the candidates SET  <base>|pool or <base>|batch:<id>:todo
return 1`
)

func TestCheck(t *testing.T) {
	info := func(body string) *Info {
		h, err := parseHeader(body)
		if err != nil {
			t.Fatal(err)
		}
		h.Name = "test.lua"
		return &h
	}
	acquire, refresh, drop, alt := info(acquireLike), info(refreshLike), info(dropLike), info(altLike)
	// A prefix ending in ":" and items holding ":" make "<base>:<item>"
	// split more than one way.
	const base = "t:1:{ab}:|lock-pool"
	okAcquire := func() ([]string, []string) {
		return []string{base + "|pool", base + "|alloc:index", base + "|epoch"},
			[]string{base + ":", "me", "30000", "", "3:1700000000000:abc", "30000"}
	}
	for _, tc := range []struct {
		name       string
		info       *Info
		keys, args []string
		err        string // "" for none
	}{
		{"acquire as called", acquire, nil, nil, ""},
		{"keys swapped", acquire, []string{base + "|pool", base + "|epoch", base + "|alloc:index"}, nil, `KEYS[2] is "t:1:{ab}:|lock-pool|epoch", which is not <base>|alloc:index`},
		{"a key missing", acquire, []string{base + "|pool", base + "|alloc:index"}, nil, "passes 2 KEYS, the header lists 3"},
		{"an argument missing", acquire, nil, []string{base + ":", "me", "30000", "", "30000"}, "passes 5 ARGV, the header lists 6"},
		{"arguments swapped", acquire, nil, []string{base + ":", "me", "30000", "", "30000", "3:1700000000000:abc"}, `ARGV[5] is "30000", which is not <known>`},
		{"ttl and owner swapped", acquire, nil, []string{base + ":", "30000", "me", "", "", "30000"}, `ARGV[3] is "me", which is not <ms>`},
		{"another pool's prefix", acquire, nil, []string{"other|lock-pool:", "me", "30000", "", "", "30000"}, `ARGV[1] is "other|lock-pool:", which is not <base>: with <base> "t:1:{ab}:|lock-pool"`},
		{"refresh of two", refresh, []string{base + "|alloc:index", base + ":a:1", base + ":b"}, []string{"5000", "me#1", "me#2", "a:1", "b"}, ""},
		{"refresh of none", refresh, []string{base + "|alloc:index"}, []string{"5000"}, ""},
		{"refresh items in another order", refresh, []string{base + "|alloc:index", base + ":a:1", base + ":b"}, []string{"5000", "me#1", "me#2", "b", "a:1"}, `ARGV[4] is "b", which is not <item> with <item> "a:1"`},
		{"refresh an item short", refresh, []string{base + "|alloc:index", base + ":a", base + ":b"}, []string{"5000", "me#1", "me#2", "a"}, "passes 4 ARGV, the header lists 5"},
		{"refresh values for items", refresh, []string{base + "|alloc:index", base + ":a", base + ":b"}, []string{"5000", "a", "b", "me#1", "me#2"}, `is "a", which is not <owner>#<token>`},
		{"drop", drop, []string{base + "|batch:x:todo", base + "|batch:x:meta"}, []string{"0", "30000", "a", "b"}, ""},
		{"drop of another batch's meta", drop, []string{base + "|batch:x:todo", base + "|batch:y:meta"}, []string{"0", "30000", "a"}, `KEYS[2] is "t:1:{ab}:|lock-pool|batch:y:meta", which is not <base>|batch:<id>:meta`},
		{"alternatives: the first of each", alt, []string{base + "|run:failures", base + "|pool"}, nil, ""},
		{"alternatives: the second of each", alt, []string{base + "|batch:x:failures", base + "|batch:x:todo"}, nil, ""},
		{"alternatives: one of each", alt, []string{base + "|run:failures", base + "|batch:x:todo"}, nil, ""},
		{"alternatives: two batches", alt, []string{base + "|batch:x:failures", base + "|batch:y:todo"}, nil, `KEYS[2] is "t:1:{ab}:|lock-pool|batch:y:todo", which is not <base>|pool or <base>|batch:<id>:todo with <base> "t:1:{ab}:|lock-pool", <id> "x"`},
		{"alternatives: neither", alt, []string{base + "|batch:x:done", base + "|pool"}, nil, `KEYS[1] is "t:1:{ab}:|lock-pool|batch:x:done", which is not <base>|run:failures or <base>|batch:<id>:failures`},
		{"drop without longest", drop, []string{base + "|batch:x:todo", base + "|batch:x:meta"}, []string{"0", "a", "b"}, `ARGV[2] is "a", which is not <ms>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, args := tc.keys, tc.args
			if tc.info == acquire {
				k, a := okAcquire()
				keys, args = cmpOr(keys, k), cmpOr(args, a)
			}
			err := tc.info.Check(keys, args)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Check: %v, want no error", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Check: %v, want an error containing %q", err, tc.err)
			}
		})
	}
}

func cmpOr(a, b []string) []string {
	if a != nil {
		return a
	}
	return b
}
