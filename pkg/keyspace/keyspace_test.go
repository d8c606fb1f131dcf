package keyspace

import (
	"go/parser"
	"go/token"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestDocumentedLayout checks the package comment's table of keys against
// the methods that name them: every documented key is one a method
// returns, and every key a method returns is documented. A method added
// without a row (or a row without a method) fails here.
func TestDocumentedLayout(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "keyspace.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	inTable := false
	for line := range strings.Lines(f.Doc.Text()) {
		fields := strings.Fields(line)
		switch {
		case len(fields) > 0 && fields[0] == "key":
			inTable = true
		case inTable && len(fields) == 0:
			inTable = false
		case inTable:
			documented = append(documented, fields[0])
		}
	}
	if len(documented) < 10 {
		t.Fatalf("found %d rows in the package comment's table; the parser lost it", len(documented))
	}

	// The methods that name keys, with the placeholders the table uses;
	// the others return parts of names (or no name) and are listed too, so
	// that every exported method is accounted for.
	p := New("<prefix>", "<suffix>")
	b := p.Batch("<id>")
	named := map[string][]string{
		"Lock":          {p.Lock("<item>")},
		"Members":       {p.Members()},
		"Staging":       {p.Staging("<random>")},
		"Epoch":         {p.Epoch()},
		"Index":         {p.Index()},
		"IndexBucket":   {strings.Replace(p.IndexBucket(7), ":7", ":<b>", 1)},
		"IndexCount":    {p.IndexCount()},
		"LegacyIndex":   {p.LegacyIndex()},
		"Control":       {p.Control()},
		"Cancels":       {p.Cancels()},
		"Fence":         {p.Fence()},
		"Bindings":      {p.Bindings()},
		"Waiters":       {p.Waiters()},
		"Reserved":      {p.Reserved()},
		"Foreign":       {p.Foreign()},
		"SyncState":     {p.SyncState()},
		"Wake":          {p.Wake("<proc>")},
		"Failures":      {p.Failures()},
		"Batch":         {b.Todo, b.Done, b.Failed, b.Failures, b.Meta, b.Errors},
		"ItemsMarker":   {p.ItemsMarker()},
		"History":       {p.History()},
		"HistoryExpiry": {p.HistoryExpiry()},
		"Tail":          {p.Tail("<item>")},
		"Runners":       {p.Runners()},
		"RunnerInfo":    {p.RunnerInfo()},
		"Throughput":    {p.Throughput()},
	}
	parts := []string{"Prefix", "Suffix", "Base", "LockPrefix", "WakePrefix", "BatchPattern", "HashTag", "TailPrefix"}
	typ := reflect.TypeOf(p)
	for i := range typ.NumMethod() {
		name := typ.Method(i).Name
		if _, ok := named[name]; !ok && !slices.Contains(parts, name) {
			t.Errorf("method %s is neither a key in this test's table nor listed as a part of one", name)
		}
	}

	var produced []string
	for _, keys := range named {
		for _, k := range keys {
			produced = append(produced, strings.Replace(k, p.Base(), "<base>", 1))
		}
	}
	for _, k := range documented {
		if !slices.Contains(produced, k) {
			t.Errorf("documented key %q is returned by no method", k)
		}
	}
	for _, k := range produced {
		if !slices.Contains(documented, k) {
			t.Errorf("key %q is not in the package comment's table", k)
		}
	}
}

func TestHashTagAndSlot(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		tag    string
		ok     bool
	}{
		{"{acme}", "acme", true},
		{"jobs:{acme}:x", "acme", true},
		{"acme", "", false},
		{"{}acme", "", false},
		{"{acme", "", false},
		{"a{b}{c}", "b", true},
	} {
		tag, ok := HashTag(tc.prefix)
		if tag != tc.tag || ok != tc.ok {
			t.Errorf("HashTag(%q) = %q, %v; want %q, %v", tc.prefix, tag, ok, tc.tag, tc.ok)
		}
	}
	// Every key of a tagged pool is in the tag's slot; values from CLUSTER
	// KEYSLOT of Redis 7.0.
	p := New("{acme}", "lock-pool")
	for _, k := range []string{p.Lock("x"), p.Members(), p.Epoch(), p.Wake("p"), p.Batch("b").Meta} {
		if got := Slot(k); got != Slot("acme") {
			t.Errorf("Slot(%q) = %d; want the tag's %d", k, got, Slot("acme"))
		}
	}
	for key, want := range map[string]int{"foo": 12182, "bar": 5061, "{user1000}.following": 3443} {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d; want %d", key, got, want)
		}
	}
}
