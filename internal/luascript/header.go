package luascript

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Info is what a script's header says of its KEYS and ARGV (see the
// package comment).
type Info struct {
	// Name is the script's name as given to New.
	Name string
	// Source is the script as sent: its pieces, then its body.
	Source string
	// Keys and Args are the header's entries, in order.
	Keys, Args []Param
}

// Param is one KEYS or ARGV entry of a header.
type Param struct {
	// Line is the entry's first line without "-- ", as the header has it.
	Line string
	// Template is what its values must look like, or "" for any value.
	Template string

	start, end lin // first and last index, 1-based; end unset when open
	open       bool
	alts       [][]tok // the template's alternatives, parsed
}

// Alternatives are the templates a value may fit: the template split at
// " or " (one element when it names no alternative), or none without a
// template.
func (p Param) Alternatives() []string {
	if p.Template == "" {
		return nil
	}
	return strings.Split(p.Template, altSep)
}

// altSep separates a template's alternatives.
const altSep = " or "

// lin is c*n + d, for the n of a variadic call.
type lin struct{ c, d int }

func (l lin) at(n int) int { return l.c*n + l.d }

func (l lin) String() string {
	switch {
	case l.c == 0:
		return strconv.Itoa(l.d)
	case l.d == 0:
		return fmt.Sprintf("%dn", l.c)
	}
	return fmt.Sprintf("%dn+%d", l.c, l.d)
}

// tok is a template's literal text or placeholder (name != "").
type tok struct{ lit, name string }

var (
	entryRE    = regexp.MustCompile(`^--\s*(KEYS|ARGV)\[([^\]]*)\]:\s*(.*)$`)
	linRE      = regexp.MustCompile(`^(?:(\d*)n)?(?:\+?(\d+))?$`)
	templateRE = regexp.MustCompile(`\s{2,}(<\S*(?: or <\S*)*)$`)
	holeRE     = regexp.MustCompile(`<(\w+)>`)
)

// parseHeader reads the KEYS and ARGV entries of src's header and checks
// that each list counts from 1 without gaps, an open tail last.
func parseHeader(src string) (Info, error) {
	var h Info
	for _, line := range strings.Split(header(src), "\n") {
		m := entryRE.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		p, err := parseParam(m[2], m[3])
		p.Line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "--"))
		if err != nil {
			return Info{}, fmt.Errorf("header line %q: %w", p.Line, err)
		}
		list := &h.Args
		if m[1] == "KEYS" {
			list = &h.Keys
			if p.Template == "" {
				return Info{}, fmt.Errorf("header line %q: a key has no template (the keyspace name it must be, as <base>|pool)", p.Line)
			}
		}
		want := lin{d: 1}
		if n := len(*list); n > 0 {
			prev := (*list)[n-1]
			if prev.open {
				return Info{}, fmt.Errorf("header line %q follows the open tail %q", p.Line, prev.Line)
			}
			want = lin{prev.end.c, prev.end.d + 1}
		}
		if p.start != want {
			return Info{}, fmt.Errorf("header line %q: %s[%s] expected next (entries count from 1 in order, one line each)", p.Line, m[1], want)
		}
		*list = append(*list, p)
	}
	return h, nil
}

// parseParam parses an index ("3", "4..n+3", "4..") and the rest of the
// entry's line.
func parseParam(index, rest string) (Param, error) {
	var p Param
	from, to, isRange := strings.Cut(index, "..")
	var err error
	if p.start, err = parseLin(from); err != nil {
		return p, err
	}
	switch {
	case !isRange:
		p.end = p.start
	case to == "":
		p.open = true
	default:
		if p.end, err = parseLin(to); err != nil {
			return p, err
		}
	}
	if m := templateRE.FindStringSubmatch(rest); m != nil {
		p.Template = m[1]
		for _, alt := range p.Alternatives() {
			p.alts = append(p.alts, parseTemplate(alt))
		}
	}
	return p, nil
}

func parseLin(s string) (lin, error) {
	m := linRE.FindStringSubmatch(s)
	if s == "" || m == nil {
		return lin{}, fmt.Errorf("index %q is not a number, a+cn or cn+d", s)
	}
	var l lin
	if strings.Contains(s, "n") {
		l.c = 1
		if m[1] != "" {
			l.c, _ = strconv.Atoi(m[1])
		}
	}
	if m[2] != "" {
		l.d, _ = strconv.Atoi(m[2])
	}
	return l, nil
}

func parseTemplate(t string) []tok {
	var toks []tok
	pos := 0
	for _, loc := range holeRE.FindAllStringSubmatchIndex(t, -1) {
		if loc[0] > pos {
			toks = append(toks, tok{lit: t[pos:loc[0]]})
		}
		toks = append(toks, tok{name: t[loc[2]:loc[3]]})
		pos = loc[1]
	}
	if pos < len(t) {
		toks = append(toks, tok{lit: t[pos:]})
	}
	return toks
}

var (
	intRE    = regexp.MustCompile(`^-?\d+$`)
	digitsRE = regexp.MustCompile(`^\d+$`)
	knownRE  = regexp.MustCompile(`^(\d+:\d+:.*)?$`)
	numberRE = regexp.MustCompile(`^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$`)
)

// fits reports whether v may stand for the placeholder name.
func fits(name, v string) bool {
	switch name {
	case "base":
		return v != ""
	case "ms", "n":
		return intRE.MatchString(v)
	case "token":
		return digitsRE.MatchString(v)
	case "flag":
		return v == "" || v == "0" || v == "1"
	case "known":
		return knownRE.MatchString(v)
	case "number":
		return numberRE.MatchString(v)
	}
	return true
}

// elem is one key or argument of a call with the entry it falls under.
type elem struct {
	what  string // "KEYS[3]"
	value string
	p     *Param
	scope int // element index within a range entry, -1 for a single one
}

// Check reports, in an error naming the script, the entry and the value,
// how a call's keys and args differ from the header: their numbers, or a
// value that does not fit its template.
func (h *Info) Check(keys, args []string) error {
	n := -1 // the variadic count, once a list fixes it
	var elems []elem
	for _, list := range []struct {
		name   string
		params []Param
		values []string
	}{{"KEYS", h.Keys, keys}, {"ARGV", h.Args, args}} {
		if len(list.params) == 0 {
			if len(list.values) > 0 {
				return fmt.Errorf("luascript: %s: the call passes %d %s, the header lists none", h.Name, len(list.values), list.name)
			}
			continue
		}
		last := list.params[len(list.params)-1]
		total := last.end
		if last.open {
			total = lin{last.start.c, last.start.d - 1}
		}
		if total.c > 0 && n < 0 {
			if last.open {
				return fmt.Errorf("luascript: %s: the header's %s tail %s starts at a multiple of n, which nothing before it fixes", h.Name, list.name, last.Line)
			}
			rest := len(list.values) - total.d
			if rest < 0 || rest%total.c != 0 {
				return fmt.Errorf("luascript: %s: the call passes %d %s, the header lists %s (%s)", h.Name, len(list.values), list.name, total, last.Line)
			}
			n = rest / total.c
		}
		if got := len(list.values); got < total.at(n) || (!last.open && got != total.at(n)) {
			more := ""
			if last.open {
				more = " or more"
			}
			if total.c > 0 {
				more += fmt.Sprintf(" for n=%d", n)
			}
			return fmt.Errorf("luascript: %s: the call passes %d %s, the header lists %d%s (last: %s)", h.Name, got, list.name, total.at(n), more, last.Line)
		}
		for i := range list.params {
			p := &list.params[i]
			from, to := p.start.at(n), p.end.at(n)
			if p.open {
				to = len(list.values)
			}
			for j := from; j <= to; j++ {
				scope := -1
				if p.open || p.start != p.end {
					scope = j - from
				}
				elems = append(elems, elem{fmt.Sprintf("%s[%d]", list.name, j), list.values[j-1], p, scope})
			}
		}
	}
	// Values whose templates have the most text first: they fix <base>
	// without ambiguity, so lock keys ("<base>:<item>") need no search.
	slices.SortStableFunc(elems, func(a, b elem) int { return literal(b.p) - literal(a.p) })
	m := matcher{bound: map[string]string{}, failed: -1}
	if m.all(elems, 0) {
		return nil
	}
	e := elems[m.failed]
	return fmt.Errorf("luascript: %s: %s is %q, which is not %s%s (header: %s)", h.Name, e.what, e.value, e.p.Template, m.boundAt, e.p.Line)
}

// literal is how much fixed text p's template has: its least literal
// alternative's.
func literal(p *Param) int {
	least := -1
	for _, toks := range p.alts {
		n := 0
		for _, t := range toks {
			n += len(t.lit)
		}
		if least < 0 || n < least {
			least = n
		}
	}
	return max(least, 0)
}

// matcher matches values to templates, binding placeholders, backtracking
// where a template splits a value in more than one way.
type matcher struct {
	bound   map[string]string
	failed  int    // the furthest element that did not match
	boundAt string // the bindings then, for the error
}

func (m *matcher) all(elems []elem, i int) bool {
	if i == len(elems) {
		return true
	}
	e := elems[i]
	if e.p.Template == "" {
		return m.all(elems, i+1)
	}
	for _, toks := range e.p.alts {
		if m.match(toks, e.value, e.scope, func() bool { return m.all(elems, i+1) }) {
			return true
		}
	}
	if i > m.failed {
		m.failed, m.boundAt = i, m.describe(e)
	}
	return false
}

// match matches s to toks, then calls next; it undoes its bindings when
// next fails.
func (m *matcher) match(toks []tok, s string, scope int, next func() bool) bool {
	if len(toks) == 0 {
		return s == "" && next()
	}
	t := toks[0]
	if t.name == "" {
		return strings.HasPrefix(s, t.lit) && m.match(toks[1:], s[len(t.lit):], scope, next)
	}
	key, binds := bindKey(t.name, scope)
	if v, ok := m.bound[key]; ok && binds {
		return strings.HasPrefix(s, v) && m.match(toks[1:], s[len(v):], scope, next)
	}
	for l := len(s); l >= 0; l-- {
		if !fits(t.name, s[:l]) {
			continue
		}
		if binds {
			m.bound[key] = s[:l]
		}
		if m.match(toks[1:], s[l:], scope, next) {
			return true
		}
		delete(m.bound, key)
	}
	return false
}

// bindKey is where a placeholder's value is kept within a call, and
// whether it is kept: a shape (<ms>, <flag>, ...) only says what a value
// looks like; a name says which value, the same wherever it recurs. <base>
// is one for the whole call; other names are one per element of a range.
func bindKey(name string, scope int) (string, bool) {
	switch {
	case shapes[name]:
		return "", false
	case scope >= 0 && name != "base":
		return fmt.Sprintf("%s#%d", name, scope), true
	}
	return name, true
}

// shapes are the placeholders that fits constrains.
var shapes = map[string]bool{"ms": true, "n": true, "token": true, "flag": true, "known": true, "number": true}

// describe says what the placeholders of e's template stood for in the
// call before e, for the error.
func (m *matcher) describe(e elem) string {
	var parts []string
	for _, toks := range e.p.alts {
		for _, t := range toks {
			key, binds := bindKey(t.name, e.scope)
			part := fmt.Sprintf("<%s> %q", t.name, m.bound[key])
			if _, ok := m.bound[key]; ok && binds && t.name != "" && !slices.Contains(parts, part) {
				parts = append(parts, part)
			}
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " with " + strings.Join(parts, ", ")
}
