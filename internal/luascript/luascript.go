// Package luascript assembles lockpool's Redis scripts from named Lua
// pieces, and keeps what each script's header says of its KEYS and ARGV so
// that tests can hold every call to it.
//
// # Pieces
//
// A piece is a Lua fragment that defines one local function of its own
// name, written once in its own .lua file: the generic ones here (clock,
// typecheck), the others beside the package whose model they belong to
// (epoch in internal/epoch, history in internal/history, setttl in
// pkg/lock, wake in pkg/allocator, rolled, batchend, counts and registry in
// pkg/worker). A script's body says which
// pieces it calls in a header line
//
//	-- uses: clock, epoch
//
// and [Set.New] prepends exactly those (and the pieces they use, first),
// once, when the package initialises: the result is one ordinary
// *redis.Script with one SHA, run with EVALSHA and an EVAL fallback as any
// other, so a piece costs nothing per call. A script that calls no piece
// gets none. The line is checked against the body: a script that calls a
// piece it does not list, or lists one it does not call, fails [Verify],
// which internal/redistest runs before any test, and one naming a piece
// the package's [Set] lacks panics at init; either way every test of the
// package fails. (Init only joins strings: it runs at every start of every
// process, the runner's exec supervisor included.) The line lives in
// the .lua file, not in Go, so that a reader of the script sees where
// clock() or epoch(...) come from; the Go side only says which pieces a
// package has ([Pieces]), as its imports do.
//
// # Headers
//
// A script starts with a comment listing its keys and arguments in order,
// one line each, from 1 up without gaps:
//
//	-- KEYS[1]: the pool's member SET              <base>|pool
//	-- KEYS[2..n+1]: the leases' lock keys         <base>:<item>
//	-- ARGV[1]: lease TTL in ms                    <ms>
//	-- ARGV[2..]: items to look at                 <item>
//
// An index is a number, a range a..b whose ends may count a variable n
// (n+3, 2n+3: so many per element of a variadic call), or an open tail a..
// (any number, at the end only). Lines that go on describing an entry
// (indented comment lines) are free text. The last field of an entry's
// first line, after two or more spaces, is its template when it starts
// with "<": what the value must look like. Every KEYS entry has one; an
// ARGV entry without one takes any value. In a template, text stands for
// itself and placeholders for parts of the value:
//
//	<base>    the pool's "<prefix>|<suffix>" (pkg/keyspace), the same in
//	          every key and argument of a call
//	<ms>, <n> an integer
//	<token>   a fencing token: digits
//	<flag>    '1', '0' or ''
//	<known>   '' or '<gen>:<at>:<id>' (see internal/epoch)
//	<number>  a decimal as pkg/lock formats and cond.lua parses it
//	<name>    any other name: any text, the same wherever the name recurs
//	          in the call; within a range, per element, so that the j-th
//	          element of KEYS[4..n+3] <base>:<item> and of ARGV[n+4..2n+3]
//	          <item> must name the same item
//
// A template may name alternatives, separated by " or ", when one entry
// takes one of a few keys: "<base>|run:failures or <base>|batch:<id>:failures"
// fits a value that fits either. A name bound by the alternative that
// fits stays bound for the rest of the call.
//
// [Info.Check] holds a call's keys and arguments to that; internal/redistest
// runs it, through a client hook, on every script call of the tests. The
// header is the one statement of a script's parameters, checked against
// what goes over the wire: call sites pass plain values to Script.Run and
// declare nothing. Two arguments of one shape (two <ms>) swapped pass.
package luascript

import (
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed clock.lua
	clockLua string
	// Clock is the piece clock(): the server's time in ms and in µs.
	Clock = NewPiece("clock", clockLua)

	//go:embed typecheck.lua
	typecheckLua string
	// TypeCheck is the piece typecheck(want): a WRONGTYPE reply naming the
	// first of KEYS[1..#want] that holds another type than want[i].
	TypeCheck = NewPiece("typecheck", typecheckLua)
)

// Piece is a Lua fragment defining the local function of its name.
type Piece struct {
	name, src string
	uses      []string
}

// NewPiece returns the piece name, whose Lua src defines the local function
// name and may itself use other pieces (a "-- uses:" line). It panics when
// src does not define name: pieces are constants.
func NewPiece(name, src string) Piece {
	if !strings.Contains(src, "local function "+name+"(") {
		panic(fmt.Sprintf("luascript: piece %s does not define local function %s", name, name))
	}
	return Piece{name: name, src: src, uses: usesLine(src)}
}

// Set is the pieces the scripts of one package may use: the shared ones of
// this package and the package's own.
type Set struct{ pieces map[string]Piece }

// Pieces returns the set of Clock, TypeCheck and own.
func Pieces(own ...Piece) Set {
	s := Set{pieces: map[string]Piece{}}
	for _, p := range append([]Piece{Clock, TypeCheck}, own...) {
		if _, dup := s.pieces[p.name]; dup {
			panic("luascript: piece " + p.name + " given twice")
		}
		s.pieces[p.name] = p
	}
	return s
}

// New returns the script name ("allocator/acquire.lua": how errors and
// checks name it): the pieces body's "-- uses:" line names, then body. It
// panics when the line names a piece the set lacks, or pieces use each
// other in a cycle. It runs when a package initialises, that is at every
// start of every process linking it (the runner's exec supervisor too), so
// it only joins strings: the header and the uses line are held to
// the body by [Verify], which the tests run.
func (s Set) New(name, body string) *redis.Script {
	var b strings.Builder
	if err := s.assemble(&b, body, map[string]int{}); err != nil {
		panic(fmt.Sprintf("luascript: %s: %v", name, err))
	}
	b.WriteString(body)
	script := redis.NewScript(b.String())
	registry.Store(script.Hash(), &entry{set: s, info: Info{Name: name, Source: b.String()}, body: body})
	return script
}

// entry is a script New made, its header parsed and checked on first use.
type entry struct {
	set  Set
	body string
	once sync.Once
	info Info
	err  error
}

func (e *entry) load() (*Info, error) {
	e.once.Do(func() {
		h, err := parseHeader(e.body)
		if err == nil {
			err = e.set.checkUses(e.body)
		}
		if err != nil {
			e.err = fmt.Errorf("luascript: %s: %w", e.info.Name, err)
			return
		}
		e.info.Keys, e.info.Args = h.Keys, h.Args
	})
	return &e.info, e.err
}

// Verify checks every script New made: its header lists KEYS and ARGV in
// order, each key with a template, and its uses line and those of the
// pieces it uses name exactly the pieces each calls. internal/redistest
// runs it before any test, so a malformed script fails every test package
// that links it.
func Verify() error {
	var errs []error
	registry.Range(func(_, v any) bool {
		if _, err := v.(*entry).load(); err != nil {
			errs = append(errs, err)
		}
		return true
	})
	return errors.Join(errs...)
}

// checkUses holds the uses line of src, and of every piece it uses, to
// the pieces each calls.
func (s Set) checkUses(src string) error {
	uses := usesLine(src)
	if err := s.checkCalls(src, uses); err != nil {
		return err
	}
	for _, name := range uses {
		if err := s.checkUses(s.pieces[name].src); err != nil {
			return fmt.Errorf("piece %s: %w", name, err)
		}
	}
	return nil
}

// assemble writes the pieces src uses, each after the pieces it uses, and
// each once: state is 1 while a piece's own pieces are written, 2 after.
func (s Set) assemble(b *strings.Builder, src string, state map[string]int) error {
	for _, name := range usesLine(src) {
		p, ok := s.pieces[name]
		switch {
		case !ok:
			return fmt.Errorf("uses %s, which is not a piece of the package's set (%s)", name, strings.Join(s.names(), ", "))
		case state[name] == 1:
			return fmt.Errorf("piece %s uses itself", name)
		case state[name] == 2:
			continue
		}
		state[name] = 1
		if err := s.assemble(b, p.src, state); err != nil {
			return fmt.Errorf("piece %s: %w", name, err)
		}
		state[name] = 2
		b.WriteString(p.src)
		b.WriteString("\n")
	}
	return nil
}

// checkCalls reports a piece of the set that src calls but does not list
// in uses, or lists but does not call.
func (s Set) checkCalls(src string, uses []string) error {
	code := stripComments(src)
	for _, name := range s.names() {
		called := calls(code, name)
		listed := slices.Contains(uses, name)
		if called && !listed && !strings.Contains(code, "local function "+name+"(") {
			return fmt.Errorf("calls %s(...) but its -- uses: line does not list %s", name, name)
		}
		if listed && !called {
			return fmt.Errorf("lists %s in -- uses: but never calls %s(...)", name, name)
		}
	}
	return nil
}

// calls reports whether code calls the function name: name, not preceded
// by a word character, "." or ":" (a field or method of that name), then
// optional blanks and "(". It scans with strings, not a regexp compiled
// per name, because it runs at every process start.
func calls(code, name string) bool {
	for i := 0; ; {
		j := strings.Index(code[i:], name)
		if j < 0 {
			return false
		}
		at := i + j
		i = at + len(name)
		if at > 0 {
			if c := code[at-1]; c == '_' || c == '.' || c == ':' || isAlnum(c) {
				continue
			}
		}
		if rest := strings.TrimLeft(code[i:], " \t"); strings.HasPrefix(rest, "(") {
			return true
		}
	}
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func (s Set) names() []string {
	names := make([]string, 0, len(s.pieces))
	for n := range s.pieces {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// usesLine returns the pieces a "-- uses: a, b" line of src's header names.
func usesLine(src string) []string {
	for line := range strings.Lines(header(src)) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "--")
		if !ok {
			continue
		}
		list, ok := strings.CutPrefix(strings.TrimSpace(rest), "uses:")
		if !ok {
			continue
		}
		var names []string
		for n := range strings.SplitSeq(list, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, n)
			}
		}
		return names
	}
	return nil
}

// header is the leading comment block of src.
func header(src string) string {
	end := 0
	for end < len(src) {
		line, _, _ := strings.Cut(src[end:], "\n")
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			break
		}
		end += len(line) + 1
	}
	return src[:min(end, len(src))]
}

// stripComments drops every "--" comment of src (a string holding "--"
// would lose its tail too; none of lockpool's scripts has one).
func stripComments(src string) string {
	var b strings.Builder
	for line := range strings.Lines(src) {
		if code, _, cut := strings.Cut(line, "--"); cut {
			b.WriteString(code)
			b.WriteString("\n")
		} else {
			b.WriteString(line)
		}
	}
	return b.String()
}

// registry maps the SHA1 of every script New made to its *entry.
var registry sync.Map

// Lookup returns the header of the script whose SHA1 (what EVALSHA sends)
// is sha, if New made it and its header is well formed (see [Verify]).
func Lookup(sha string) (*Info, bool) {
	v, ok := registry.Load(sha)
	if !ok {
		return nil, false
	}
	info, err := v.(*entry).load()
	return info, err == nil
}

// LookupSource is Lookup for a script's source (what EVAL sends).
func LookupSource(src string) (*Info, bool) { return Lookup(redis.NewScript(src).Hash()) }
