package history

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/lockpool/lockpool/pkg/lock"
)

func TestHeadAndTailCutAtRuneBoundaries(t *testing.T) {
	s := strings.Repeat("é", 10) // 20 bytes
	for n := 0; n <= 21; n++ {
		h, tl := Head(s, n), Tail(s, n)
		if len(h) > n || len(tl) > n || !utf8.ValidString(h) || !utf8.ValidString(tl) || !strings.HasPrefix(s, h) || !strings.HasSuffix(s, tl) {
			t.Fatalf("n=%d: Head %q, Tail %q: want valid UTF-8 prefix and suffix of at most n bytes", n, h, tl)
		}
		if want := n / 2 * 2; len(h) != min(want, 20) || len(tl) != min(want, 20) {
			t.Fatalf("n=%d: Head %d bytes, Tail %d bytes; want %d", n, len(h), len(tl), min(want, 20))
		}
	}
}

func TestEncodeDecode(t *testing.T) {
	e := Entry{Outcome: "failure", Attempts: 3, Runner: "h:1", ExitStatus: 0, Error: strings.Repeat("x", 2000), Stderr: "s", Retain: time.Hour}
	rec, tail, ms := e.Args()
	if tail != "s" || ms != 3_600_000 {
		t.Fatalf("Args tail %q, retain %d", tail, ms)
	}
	r, err := Decode("1700000000000:42:" + rec)
	if err != nil {
		t.Fatal(err)
	}
	want := Entry{Outcome: "failure", Attempts: 3, Runner: "h:1", ExitStatus: 0, Error: strings.Repeat("x", MaxError), Retain: time.Hour}
	if r.Entry != want || r.Token != 42 || !r.At.Equal(time.UnixMilli(1700000000000)) {
		t.Fatalf("Decode = %+v", r)
	}
	e.ExitStatus = -1
	rec, _, _ = e.Args()
	if r, _ := Decode("1:1:" + rec); r.ExitStatus != -1 {
		t.Fatalf("an entry without an exit status decodes with %d, want -1", r.ExitStatus)
	}
	for _, bad := range []string{"", "x:1:{}", "1:y:{}", "1:1:not json", "1:1"} {
		if _, err := Decode(bad); err == nil {
			t.Fatalf("Decode(%q) succeeded", bad)
		}
	}
}

// TestLogKeepsOneRecordPerItemWithinItsRetention: the memory twin keeps
// the latest token's record, drops records whose retention ended at each
// write, and stays bounded by the items written within the retention.
func TestLogKeepsOneRecordPerItemWithinItsRetention(t *testing.T) {
	pool, err := lock.NewMemoryLockPool(lock.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	l := Of(pool, "memory|pool|hist:last")
	if Of(pool, "memory|pool|hist:last") != l {
		t.Fatal("Of gave two logs for one key")
	}
	t0 := time.UnixMilli(1_700_000_000_000)
	short := Entry{Outcome: "failure", Stderr: "tail", Retain: time.Second}
	for i := range 1000 {
		l.Write(fmt.Sprintf("old-%d", i), int64(i+1), short, t0)
	}
	l.Write("b", 10, Entry{Outcome: "success", Retain: time.Hour}, t0)
	l.Write("b", 9, Entry{Outcome: "lease_lost", Retain: time.Hour}, t0.Add(time.Millisecond))
	if r, ok, _ := l.Get("b", t0); !ok || r.Outcome != "success" || r.Token != 10 {
		t.Fatalf("Get(b) = %+v, %v; want token 10's success: a lower token hides nothing", r, ok)
	}
	later := t0.Add(2 * time.Second)
	if _, ok, tail := l.Get("old-0", later); ok || tail.Stderr != "" {
		t.Fatal("a record past its retention is still visible")
	}
	l.Write("c", 11, Entry{Outcome: "success", Retain: time.Hour}, later)
	if n := l.Len(); n != 2 {
		t.Fatalf("the log holds %d records after a write past the short retention, want 2 (b, c)", n)
	}
	for i := range 10_000 {
		l.Write("c", int64(100+i), Entry{Outcome: "success", Retain: time.Hour}, later)
	}
	if n := l.byExpiry.Len(); n > 2*l.Len()+64 {
		t.Fatalf("the expiry heap holds %d entries for %d records: rewrites must not grow it", n, l.Len())
	}
}
