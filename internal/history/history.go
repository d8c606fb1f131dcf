// Package history keeps the last outcome of every item of a pool, for
// operators: what happened, when (server time), by which runner, after how
// many attempts in a row, and the stderr tail of the item's last failed
// run. It holds what the writers share: the Lua piece history(...) that
// pkg/allocator's next.lua (a run's end in loop mode) and pkg/worker's
// batch scripts call in the same script that records the run's result, so
// history costs no round trip of its own; the encoding of a record; and the
// in-memory twin of the keys, for the memory backends.
//
// The keys (pkg/keyspace): hist:last, a HASH item -> record, and
// hist:expiry, a ZSET item -> when the record's retention ends, hold one
// entry per item whose record is within its retention; hist:tail:<item>, a
// STRING with the retention as its TTL, holds the tail. Redis 7.0 has no
// per-field expiry, so the retention of the HASH is kept by its writers
// (each drops up to 8 entries whose retention ended, found through the
// ZSET) and by the keys' own TTL (a retention after the last write);
// readers see a record only while it is within the retention it was
// written with, so both backends show the same.
package history

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lockpool/lockpool/internal/luascript"
)

//go:embed history.lua
var lua string

// Piece is the Lua function history(k, a, now), for scripts whose header
// says "-- uses: history".
var Piece = luascript.NewPiece("history", lua)

// Limits of what one record keeps; longer values are cut.
const (
	// MaxError is how much of a run's error is kept: its first bytes.
	MaxError = 1024
	// MaxStderr is how much of a failed run's stderr tail is kept: its
	// last bytes.
	MaxStderr = 4096
	// MaxRunner is the longest runner id kept.
	MaxRunner = 256
)

// Entry is how one run ended, as a writer gives it: the twin of
// pkg/allocator's RunRecord, whose doc says what each field holds (the two
// convert to each other; this package cannot import pkg/allocator, which
// imports it).
type Entry struct {
	Outcome       string
	Attempts      int
	Runner        string
	ExitStatus    int
	Error, Stderr string
	Retain        time.Duration
}

// record is the part of an entry stored in the HASH, after
// "<at_ms>:<token>:".
type record struct {
	Outcome  string `json:"o"`
	Attempts int    `json:"n"`
	Runner   string `json:"r,omitempty"`
	Exit     *int   `json:"x,omitempty"` // nil: -1
	Error    string `json:"e,omitempty"`
	RetainMs int64  `json:"k"`
}

// Args are an entry's ARGV for history(...): the record, the stderr tail
// (” for none) and the retention in ms, all cut to their limits.
func (e Entry) Args() (rec, tail string, retainMs int64) {
	retainMs = max(1, e.Retain.Milliseconds())
	r := record{Outcome: e.Outcome, Attempts: e.Attempts, Runner: Head(e.Runner, MaxRunner), Error: Head(e.Error, MaxError), RetainMs: retainMs}
	if e.ExitStatus >= 0 {
		r.Exit = &e.ExitStatus
	}
	b, _ := json.Marshal(r)
	return string(b), Tail(e.Stderr, MaxStderr), retainMs
}

// Record is an item's last outcome as stored.
type Record struct {
	Entry
	// At is when it was recorded, by the server's clock.
	At time.Time
	// Token is the fencing token of the run.
	Token int64
}

// Visible reports whether the record is still within its retention at
// now: readers show it only then.
func (r Record) Visible(now time.Time) bool { return now.Before(r.At.Add(r.Retain)) }

// ErrCorrupt: a stored value is not what the writers write.
var ErrCorrupt = errors.New("history: value not written by lockpool")

// Decode reads a hist:last value.
func Decode(v string) (Record, error) {
	at, tok, rest, err := head(v)
	if err != nil {
		return Record{}, err
	}
	var r record
	if err := json.Unmarshal([]byte(rest), &r); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	exit := -1
	if r.Exit != nil {
		exit = *r.Exit
	}
	return Record{At: at, Token: tok, Entry: Entry{Outcome: r.Outcome, Attempts: r.Attempts, Runner: r.Runner,
		ExitStatus: exit, Error: r.Error, Retain: time.Duration(r.RetainMs) * time.Millisecond}}, nil
}

// DecodeTail reads a hist:tail:<item> value: when it was written, by the
// run with which token, and the tail.
func DecodeTail(v string) (at time.Time, token int64, tail string, err error) {
	return head(v)
}

// head splits "<at_ms>:<token>:<rest>".
func head(v string) (time.Time, int64, string, error) {
	a, rest, ok1 := strings.Cut(v, ":")
	t, rest, ok2 := strings.Cut(rest, ":")
	ms, err1 := strconv.ParseInt(a, 10, 64)
	tok, err2 := strconv.ParseInt(t, 10, 64)
	if !ok1 || !ok2 || err1 != nil || err2 != nil {
		return time.Time{}, 0, "", fmt.Errorf("%w: %.40q", ErrCorrupt, v)
	}
	return time.UnixMilli(ms), tok, rest, nil
}

// Head is s cut to its first n bytes at most, at a rune boundary.
func Head(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for i := 0; i < utf8.UTFMax && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return s[:n]
}

// Tail is s cut to its last n bytes at most, at a rune boundary.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	from := len(s) - n
	for i := 0; i < utf8.UTFMax && from < len(s) && !utf8.RuneStart(s[from]); i++ {
		from++
	}
	return s[from:]
}
