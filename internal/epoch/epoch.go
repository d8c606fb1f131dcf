// Package epoch holds the dataset-continuity check that lockpool's Redis
// scripts share: a Lua piece (internal/luascript) used by every script
// that grants a lease or writes under one, and the Go side of its answers. The model (what a
// discontinuity is, the quiet period, the fencing counter's lift and their
// assumptions) is in epoch.lua's header and in pkg/allocator's package
// comment.
package epoch

import (
	_ "embed"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/lockpool/lockpool/internal/luascript"
)

//go:embed epoch.lua
var lua string

// Piece is the Lua function epoch(...), for scripts whose header says
// "-- uses: epoch".
var Piece = luascript.NewPiece("epoch", lua)

// State is what a script reported of the dataset.
type State struct {
	// Gen is the dataset generation: 1 for a new pool, bumped at every
	// discontinuity.
	Gen int64
	// Since is when the generation began, by the server's clock.
	Since time.Time
	// QuietUntil is until when no item may be granted after the
	// discontinuity that began Gen, by the server's clock (zero: none).
	QuietUntil time.Time
}

// Parse reads the {gen, id, quiet_ms, at_ms} a script returns at res[i:],
// where id is "" when it equals the id the caller sent as known.
func Parse(res []any, i int) (State, string, error) {
	if len(res) < i+4 {
		return State{}, "", fmt.Errorf("epoch: script answered %d values, want at least %d", len(res), i+4)
	}
	gen, ok1 := res[i].(int64)
	id, ok2 := res[i+1].(string)
	quiet, ok3 := res[i+2].(int64)
	at, ok4 := res[i+3].(int64)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return State{}, "", fmt.Errorf("epoch: bad epoch fields %v", res[i:i+4])
	}
	s := State{Gen: gen, Since: time.UnixMilli(at)}
	if quiet > 0 {
		s.QuietUntil = time.UnixMilli(quiet)
	}
	return s, id, nil
}

// Tracker remembers, for one process, the dataset id and generation its
// scripts last reported, and the longest TTL it has used: what the scripts
// need as their known and longest arguments. It is safe for concurrent
// use.
type Tracker struct {
	mu      sync.Mutex
	id      string
	state   State
	known   string // "<gen>:<at>:<id>" of id and state, or ""
	longest time.Duration
	// onChange is called, outside the lock, when a script reports a newer
	// generation than any seen before.
	onChange func(old, new State)
}

// NewTracker returns a tracker whose longest TTL starts at ttl. onChange,
// when not nil, is called once per newer generation seen.
func NewTracker(ttl time.Duration, onChange func(old, new State)) *Tracker {
	return &Tracker{longest: ttl, onChange: onChange}
}

// Args returns what a script takes as known ("<gen>:<at>:<id>" of the
// dataset generation last seen, or "") and longest (the longest TTL used,
// counting ttl), in ms.
func (t *Tracker) Args(ttl time.Duration) (known string, longestMs int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.longest = max(t.longest, ttl)
	return t.known, t.longest.Milliseconds()
}

// Seen records what a script reported; id is "" when unchanged.
func (t *Tracker) Seen(s State, id string) {
	t.mu.Lock()
	old := t.state
	// A late reply from a server left behind (an older generation) must
	// not pair its id with the newer generation.
	newID := id != "" && s.Gen >= old.Gen && id != t.id
	if newID {
		t.id = id
	}
	newer := s.Gen > old.Gen || (s.Gen == old.Gen && s.QuietUntil.After(old.QuietUntil))
	if newer {
		t.state = s
	}
	if (newID || newer) && t.id != "" && t.state.Gen > 0 {
		t.known = strconv.FormatInt(t.state.Gen, 10) + ":" + strconv.FormatInt(t.state.Since.UnixMilli(), 10) + ":" + t.id
	}
	f := t.onChange
	t.mu.Unlock()
	if newer && s.Gen > old.Gen && f != nil {
		f(old, s)
	}
}

// State returns the newest state seen.
func (t *Tracker) State() State {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state
}
