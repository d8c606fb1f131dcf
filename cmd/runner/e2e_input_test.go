package main

// End-to-end tests of input: the pool subcommands, hostile and extreme
// item names, keys of the wrong Redis type written by someone else, and a
// pool of a million items. Every command is the runner binary in a process
// of its own.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/keyspace"
	"github.com/lockpool/lockpool/pkg/lock"
)

// inputPoolConfig writes root/runner.yaml, a config for a Redis pool under
// prefix whose task writes RUNNER_ITEM, as data only, to $OUT_DIR/<token>,
// in dir.
func inputPoolConfig(t *testing.T, root, addr, prefix, dir, out, extra string) string {
	t.Helper()
	return writeFile(t, root, "runner.yaml", fmt.Sprintf(`redis:
  addr: %q
pool:
  prefix: %q
task:
  command: ["sh", "-c", "printf '%%s' \"$RUNNER_ITEM\" > \"$OUT_DIR/$RUNNER_TOKEN\""]
  dir: %q
  kill_grace: 300ms
  env: [%q]
%s`, addr, prefix, dir, "OUT_DIR="+out, extra))
}

// inputSandbox makes a task directory holding victim/keep, and an output
// directory, under a fresh temporary directory.
func inputSandbox(t *testing.T) (root, taskDir, out string) {
	t.Helper()
	root = t.TempDir()
	taskDir, out = filepath.Join(root, "task"), filepath.Join(root, "out")
	for _, d := range []string{filepath.Join(taskDir, "victim"), out, filepath.Join(root, "cwd")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(taskDir, "victim", "keep"), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	return root, taskDir, out
}

// inputNothingExecuted asserts that no item was executed: no file named
// pwned anywhere under root nor in this package's directory, and the
// victim directory intact.
func inputNothingExecuted(t *testing.T, root, taskDir string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(d.Name(), "pwned") && !strings.HasPrefix(path, filepath.Join(root, "out")) {
			t.Errorf("an item name was executed: %s exists", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("pwned"); err == nil {
		t.Errorf("an item name was executed: pwned exists in the package directory")
	}
	if b, err := os.ReadFile(filepath.Join(taskDir, "victim", "keep")); err != nil || string(b) != "keep" {
		t.Errorf("victim/keep damaged: %q, %v", b, err)
	}
}

// inputOutputs reads the task outputs: item -> how many runs wrote it.
func inputOutputs(t *testing.T, out string) map[string]int {
	t.Helper()
	files, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, f := range files {
		if _, err := strconv.ParseInt(f.Name(), 10, 64); err != nil {
			t.Errorf("output file %q is not named by a token", f.Name())
		}
		b, err := os.ReadFile(filepath.Join(out, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got[string(b)]++
	}
	return got
}

// inputRunBatch runs the batch of cfg (from root/cwd) and asserts that
// each of names reached its task exactly once, as data, and that nothing
// else ran.
func inputRunBatch(t *testing.T, root, taskDir, out, cfg string, names []string) *runnerProc {
	t.Helper()
	r := startProc(t, "runner", procOpts{dir: filepath.Join(root, "cwd")}, "run", "-c", cfg)
	if code := r.wait(60 * time.Second); code != 0 {
		t.Fatalf("runner run: exit %d", code)
	}
	got := inputOutputs(t, out)
	for _, n := range names {
		if got[n] != 1 {
			t.Errorf("item %q reached its task %d times, want once", n, got[n])
		}
		delete(got, n)
	}
	for g, c := range got {
		t.Errorf("a task saw RUNNER_ITEM=%q (%d times), which is no item", g, c)
	}
	inputNothingExecuted(t, root, taskDir)
	return r
}

// inputHostileNames are valid item names that would do harm if any layer
// passed them through a shell, a format string or a log line unquoted.
func inputHostileNames() []string {
	return []string{
		strings.Repeat("x", lock.MaxKeyLen),   // the longest name
		strings.Repeat("é", lock.MaxKeyLen/2), // 1024 bytes of two-byte runes
		strings.Repeat("🔑", lock.MaxKeyLen/4), // 1024 bytes of four-byte runes
		"line1\nline2",                        // a newline: argv only, stdin splits lines
		"x\n2099-01-01T00:00:00.000Z [ERROR] runner: forged log line",
		"trailing-cr\r",
		"ключ-🔑-鍵",
		"e\u0301-combining",
		"\u202eevil\u202c-bidi",
		"zero\u200bwidth",
		"$(touch pwned)",
		"`touch pwned`",
		"; rm -rf ./victim; touch pwned",
		"&& touch pwned &",
		"| touch pwned",
		"> pwned",
		`'"`,
		`'; touch pwned; echo '`,
		`"; touch pwned; echo "`,
		"$HOME ${IFS} $RUNNER_TOKEN",
		"*",
		"../../pwned-traversal",
		"-rf",
		"--help",
		`\`,
		"%s%n%x",
		"a=b",
		" spaced ",
		"tab\there",
		"\x1b[31mred\x1b[0m",
		"\xff\xfe-not-utf8",
	}
}

// TestE2EInputItemNames runs hostile and extreme names, added with
// "runner pool add" on the command line, through "runner run" in batch
// mode: each must reach its task exactly once, byte for byte, as data.
func TestE2EInputItemNames(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	ctx := context.Background()
	root, taskDir, out := inputSandbox(t)
	cfg := inputPoolConfig(t, root, e.addr, e.prefix, taskDir, out, `mode: batch
batch:
  id: names
worker:
  concurrency: 4
  lease_ttl: 10s
  max_attempts: 1
`)
	names := inputHostileNames()

	// "--" ends the flags: "-rf" and "--help" are items. ("-" means
	// stdin: it is added from there in TestE2EInputRejectedNames.)
	code, stdout, stderr := runnerCmd(t, procOpts{}, append([]string{"pool", "add", "-c", cfg, "--"}, names...)...).split()
	if code != 0 || stdout != fmt.Sprintf("%d items added\n", len(names)) {
		t.Fatalf("pool add: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	members, err := e.client.SMembers(ctx, e.keys().Members()).Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(members)
	want := slices.Sorted(slices.Values(names))
	if !slices.Equal(members, want) {
		t.Fatalf("pool members differ from the names added:\n got %q\nwant %q", members, want)
	}

	// pool list: one line per item, each name as displayName shows it
	// (Go-quoted when it holds anything unprintable or ambiguous).
	code, stdout, stderr = runnerCmd(t, procOpts{}, "pool", "list", "-c", cfg).split()
	if code != 0 {
		t.Fatalf("pool list: exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 1+len(names) {
		t.Fatalf("pool list printed %d lines for %d items: an item broke a line:\n%s", len(lines), len(names), stdout)
	}
	for _, n := range names {
		if !strings.Contains(stdout, "\n"+displayName(n)+"  ") {
			t.Errorf("pool list lacks the name %s", displayName(n))
		}
	}
	// pool list --json: valid JSON, every UTF-8 name exact.
	code, stdout, stderr = runnerCmd(t, procOpts{}, "pool", "list", "--json", "-c", cfg).split()
	if code != 0 {
		t.Fatalf("pool list --json: exit %d: %s", code, stderr)
	}
	var infos []itemInfo
	if err := json.Unmarshal([]byte(stdout), &infos); err != nil {
		t.Fatalf("pool list --json: %v", err)
	}
	listed := map[string]bool{}
	for _, in := range infos {
		listed[in.Item] = true
	}
	if len(infos) != len(names) {
		t.Fatalf("pool list --json: %d items, want %d", len(infos), len(names))
	}
	for _, n := range names {
		if json.Valid([]byte(strconv.Quote(n))) && !listed[n] {
			t.Errorf("pool list --json lacks %q", n)
		}
	}

	r := inputRunBatch(t, root, taskDir, out, cfg, names)
	// A name cannot forge a log line: hclog quotes or indents values.
	for _, line := range r.stderr.lines() {
		if strings.HasPrefix(line, "2099-") {
			t.Errorf("an item name forged a log line: %q", line)
		}
	}
}

// TestE2EInputItemNamesInConfig gives the names as pool.items of a JSON
// config to the embedded backend (no Redis): the same names reach their
// tasks, and a name too long or holding a NUL byte is a configuration
// error naming pool.items.
func TestE2EInputItemNamesInConfig(t *testing.T) {
	parallel(t)
	root, taskDir, out := inputSandbox(t)
	var names []string
	for _, n := range inputHostileNames() {
		if json.Valid([]byte(strconv.Quote(n))) { // JSON holds UTF-8 only
			names = append(names, n)
		}
	}
	config := func(name string, items []string) string {
		doc := map[string]any{
			"pool": map[string]any{"items": items},
			"task": map[string]any{
				"command":    []string{"sh", "-c", `printf '%s' "$RUNNER_ITEM" > "$OUT_DIR/$RUNNER_TOKEN"`},
				"dir":        taskDir,
				"kill_grace": "300ms",
				"env":        []string{"OUT_DIR=" + out},
			},
			"mode":   "batch",
			"worker": map[string]any{"concurrency": 4, "max_attempts": 1},
		}
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		return writeFile(t, root, name+".json", string(b))
	}

	inputRunBatch(t, root, taskDir, out, config("ok", names), names)

	for _, c := range []struct{ name, item string }{
		{"too-long", strings.Repeat("x", lock.MaxKeyLen+1)},
		{"empty", ""},
		{"nul", "a\x00b"},
	} {
		code, _, stderr := runnerCmd(t, procOpts{}, "run", "-c", config(c.name, []string{"fine", c.item})).split()
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "runner: config: pool.items: element 1") {
			t.Errorf("pool.items with a %s item: exit %d, stderr %q; want 2 and one line naming pool.items element 1", c.name, code, stderr)
		}
	}
}

// TestE2EInputRejectedNames: names no pool can hold are refused by "runner
// pool add" with exit 2 and one line saying why, and the pool is left as
// it was.
func TestE2EInputRejectedNames(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	client, ctx := e.client, context.Background()
	root, taskDir, out := inputSandbox(t)
	cfg := inputPoolConfig(t, root, e.addr, e.prefix, taskDir, out, "")
	poolKey := e.keys().Members()
	// reset puts the pool back as it was, so that one failure does not
	// spill into the next case.
	reset := func(t *testing.T) {
		t.Helper()
		if err := client.Del(ctx, poolKey).Err(); err != nil {
			t.Fatal(err)
		}
		if err := client.SAdd(ctx, poolKey, "existing-1", "existing-2").Err(); err != nil {
			t.Fatal(err)
		}
	}
	wantUnchanged := func(t *testing.T) {
		t.Helper()
		m, err := client.SMembers(ctx, poolKey).Result()
		slices.Sort(m)
		if err != nil || !slices.Equal(m, []string{"existing-1", "existing-2"}) {
			t.Errorf("the pool has %d members (err %v), want it unchanged: existing-1 and existing-2", len(m), err)
		}
	}
	bulk := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "bulk-%d\n", i)
		}
		return b.String()
	}

	for _, c := range []struct {
		name  string
		args  []string
		stdin string
		why   string // in the message
	}{
		{"1025 bytes", []string{"ok", strings.Repeat("x", lock.MaxKeyLen+1)}, "", "1025 bytes, limit 1024"},
		{"1025 bytes of runes", []string{strings.Repeat("é", lock.MaxKeyLen/2) + "x"}, "", "1025 bytes, limit 1024"},
		{"empty", []string{"ok", ""}, "", "invalid key: empty"},
		{"NUL on stdin", []string{"-"}, "ok\nbad\x00nul\n", "contains a NUL byte"},
		{"1025-byte line on stdin", []string{"-"}, "ok\n" + strings.Repeat("y", lock.MaxKeyLen+1) + "\n", "1025 bytes, limit 1024"},
		{"huge line on stdin", []string{"-"}, "ok\n" + strings.Repeat("y", 100_000) + "\n", "longer than 1024 bytes"},
		{"empty line on stdin", []string{"-"}, "ok\n\n", "invalid key: empty"},
		// The bad line comes after a full read chunk of good ones: still
		// nothing may be written.
		{"bad line after 10000 good ones", []string{"-"}, bulk(10_000) + "\n" + bulk(5), "invalid key: empty"},
		{"\"-\" among items", []string{"ok", "-"}, "", "\"-\" must be the only item argument"},
	} {
		t.Run(c.name, func(t *testing.T) {
			reset(t)
			var stdin io.Reader
			if c.stdin != "" {
				stdin = strings.NewReader(c.stdin)
			}
			code, stdout, stderr := runnerCmd(t, procOpts{stdin: stdin}, append([]string{"pool", "add", "-c", cfg, "--"}, c.args...)...).split()
			first, _, _ := strings.Cut(stderr, "\n")
			if code != 2 || !strings.HasPrefix(first, "runner: ") || !strings.Contains(first, c.why) {
				t.Errorf("exit %d, stderr %q; want 2 and a line saying %q", code, clip(stderr), c.why)
			}
			if !strings.HasPrefix(c.why, "\"-\"") && strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr is not one line: %q", clip(stderr))
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			wantUnchanged(t)
		})
	}

	// stdin holds one item per line: a newline cannot be in a name read
	// from it (add such names as arguments), and a line's trailing CR is
	// dropped, as for any text file with CRLF line ends.
	code, stdout, stderr := runnerCmd(t, procOpts{stdin: strings.NewReader("via-stdin-1\r\nvia-stdin-2\n-\n")}, "pool", "add", "-c", cfg, "-").split()
	if code != 0 || stdout != "3 items added\n" {
		t.Fatalf("pool add -: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	for _, it := range []string{"via-stdin-1", "via-stdin-2", "-"} {
		if ok, err := client.SIsMember(ctx, poolKey, it).Result(); err != nil || !ok {
			t.Errorf("%q not added from stdin (err %v)", it, err)
		}
	}
}

func TestE2EPoolCommands(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	cfg := e.config("pool", nil, "", time.Second)
	pool := func(args ...string) (int, string) {
		t.Helper()
		// Flags come before the items: "pool add -c FILE ITEM...".
		res := runnerCmd(t, procOpts{within: 20 * time.Second}, append([]string{"pool", args[0], "-c", cfg}, args[1:]...)...)
		return res.code, res.out
	}
	if code, out := pool("add", "a", "b", "c", "$(touch pwned)"); code != 0 || !strings.Contains(out, "4 items added") {
		t.Fatalf("pool add: %d %s", code, out)
	}
	if code, out := pool("remove", "c"); code != 0 || !strings.Contains(out, "1 items removed") {
		t.Fatalf("pool remove: %d %s", code, out)
	}
	// A lease-shaped lock and a foreign lock show up as such.
	ctx := context.Background()
	e.client.Set(ctx, e.lockKey("a"), "host:1/w0#1234567", time.Minute)
	e.client.Set(ctx, e.lockKey("b"), "python-service", 0)
	code, out := pool("list", "--json")
	if code != 0 {
		t.Fatalf("pool list: %d %s", code, out)
	}
	var infos []itemInfo
	if err := json.Unmarshal([]byte(out), &infos); err != nil {
		t.Fatalf("pool list --json: %v\n%s", err, out)
	}
	slices.SortFunc(infos, func(x, y itemInfo) int { return strings.Compare(x.Item, y.Item) })
	want := []itemInfo{
		{Item: "$(touch pwned)", Status: "free"},
		{Item: "a", Status: "leased", Owner: "host:1/w0", Token: 1234567},
		{Item: "b", Status: "locked", Owner: "python-service", TTLMillis: -1},
	}
	if len(infos) != 3 {
		t.Fatalf("pool list = %+v", infos)
	}
	for i := range want {
		got := infos[i]
		if i == 1 && got.TTLMillis > 0 {
			got.TTLMillis = 0
		}
		if got != want[i] {
			t.Fatalf("pool list[%d] = %+v, want %+v", i, got, want[i])
		}
	}
	// a is leased by a runner, b locked by something else: counted apart.
	if code, out := pool("status", "--json"); code != 0 || !strings.Contains(out, `"leased": 1`) || !strings.Contains(out, `"locked_other": 1`) || !strings.Contains(out, `"free": 1`) {
		t.Fatalf("pool status: %d %s", code, out)
	}
	if code, out := pool("set", "x", "y"); code != 0 || !strings.Contains(out, "2 items set") {
		t.Fatalf("pool set: %d %s", code, out)
	}
	// Bad input: clear error, nothing lost.
	if code, out := pool("add", "ok", ""); code != 2 || !strings.Contains(out, "invalid key") {
		t.Fatalf("pool add with an empty item: %d %s", code, out)
	}
	if n, _ := e.client.SCard(ctx, e.keys().Members()).Result(); n != 2 {
		t.Fatalf("pool has %d members after a rejected add, want 2", n)
	}
	if code, out := pool("clear"); code != 0 || !strings.Contains(out, "cleared") {
		t.Fatalf("pool clear: %d %s", code, out)
	}
	if _, err := os.Stat("pwned"); err == nil {
		t.Fatal("an item name was executed")
	}
}

// inputWrongTypeCase is one command run against a key of the wrong type.
type inputWrongTypeCase struct {
	name  string
	args  []string
	stdin string
}

// TestE2EInputWrongTypePoolKey: the pool key holds a STRING someone else
// wrote. That is not transient, so "runner run" (loop and batch) exits 1
// at once, and every pool command exits 1, each with one line naming the
// key; the STRING is left as it was.
func TestE2EInputWrongTypePoolKey(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	client, ctx := e.client, context.Background()
	root, taskDir, out := inputSandbox(t)
	cfg := inputPoolConfig(t, root, e.addr, e.prefix, taskDir, out, "worker:\n  lease_ttl: 2s\n")
	poolKey := e.keys().Members()
	const foreign = "someone else's string"
	if err := client.Set(ctx, poolKey, foreign, 0).Err(); err != nil {
		t.Fatal(err)
	}

	for _, c := range []inputWrongTypeCase{
		{"run loop", []string{"run", "-c", cfg}, ""},
		{"run batch", []string{"run", "-c", cfg, "--mode", "batch"}, ""},
		{"run with pool.items", []string{"run", "-c", cfg, "--set", "pool.items=a,b"}, ""},
		{"pool add", []string{"pool", "add", "-c", cfg, "a"}, ""},
		{"pool add stdin", []string{"pool", "add", "-c", cfg, "-"}, "a\nb\n"},
		{"pool remove", []string{"pool", "remove", "-c", cfg, "a"}, ""},
		{"pool set", []string{"pool", "set", "-c", cfg, "a"}, ""},
		{"pool set stdin", []string{"pool", "set", "-c", cfg, "-"}, "a\nb\n"},
		{"pool clear", []string{"pool", "clear", "-c", cfg}, ""},
		{"pool list", []string{"pool", "list", "-c", cfg}, ""},
		{"pool list json", []string{"pool", "list", "--json", "-c", cfg}, ""},
		{"pool status", []string{"pool", "status", "-c", cfg}, ""},
		{"pool status json", []string{"pool", "status", "--json", "-c", cfg}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			code, _, stderr := runnerCmd(t, procOpts{stdin: strings.NewReader(c.stdin)}, c.args...).split()
			took := time.Since(start)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
			}
			line := oneErrorLine(t, stderr)
			if !strings.Contains(line, strconv.Quote(poolKey)) && !strings.Contains(line, " "+poolKey+" ") {
				t.Errorf("the error does not name the key %s: %q", poolKey, line)
			}
			if !strings.Contains(line, "wrong type") {
				t.Errorf("the error does not say \"wrong type\": %q", line)
			}
			if took > 15*time.Second {
				t.Errorf("took %v to give up: a wrong type is not transient", took)
			}
			if typ, _ := client.Type(ctx, poolKey).Result(); typ != "string" {
				t.Fatalf("the pool key is a %s now, want the foreign string", typ)
			}
			if v, _ := client.Get(ctx, poolKey).Result(); v != foreign {
				t.Fatalf("the pool key holds %q now, want %q", v, foreign)
			}
			if ttl, _ := client.TTL(ctx, poolKey).Result(); ttl != -1 {
				t.Fatalf("the pool key got a TTL: %v", ttl)
			}
		})
	}
	if files, _ := os.ReadDir(out); len(files) != 0 {
		t.Errorf("%d tasks ran on a pool that is not a set", len(files))
	}
}

// TestE2EInputWrongTypeLockKey: an item's lock key holds a HASH someone
// else wrote. The runner leaves it alone, never runs that item, and keeps
// serving the others; pool list shows the item as an error.
func TestE2EInputWrongTypeLockKey(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	ctx := context.Background()
	items := []string{"a", "b", "c"}
	hashKey := e.lockKey("b")
	foreign := map[string]string{"owner": "someone else", "note": "not a lock"}
	if err := e.client.HSet(ctx, hashKey, foreign).Err(); err != nil {
		t.Fatal(err)
	}
	wantHashUnchanged := func() {
		t.Helper()
		got, err := e.client.HGetAll(ctx, hashKey).Result()
		if err != nil || len(got) != len(foreign) || got["owner"] != foreign["owner"] || got["note"] != foreign["note"] {
			t.Fatalf("the foreign hash is %v (err %v), want %v", got, err, foreign)
		}
		if ttl, _ := e.client.TTL(ctx, hashKey).Result(); ttl != -1 {
			t.Fatalf("the foreign hash got a TTL: %v", ttl)
		}
	}
	cfg := e.config("hash", items, "worker:\n  concurrency: 3\n  lease_ttl: 2s\n  refresh_interval: 300ms\n", 50*time.Millisecond)
	r := startRunner(t, "runner", nil, "run", "-c", cfg)
	waitFor(t, "a and c each run 3 times", 30*time.Second, func() (bool, string) {
		evs := e.events()
		a := count(evs, "end", func(ev event) bool { return ev.Item == "a" })
		c := count(evs, "end", func(ev event) bool { return ev.Item == "c" })
		return a >= 3 && c >= 3, fmt.Sprintf("a ran %d times, c %d", a, c)
	})
	wantHashUnchanged()

	code, stdout, stderr := runnerCmd(t, procOpts{}, "pool", "list", "--json", "-c", cfg).split()
	if code != 0 {
		t.Fatalf("pool list --json: exit %d: %s", code, stderr)
	}
	var infos []itemInfo
	if err := json.Unmarshal([]byte(stdout), &infos); err != nil {
		t.Fatalf("pool list --json: %v\n%s", err, stdout)
	}
	var b *itemInfo
	for i := range infos {
		if infos[i].Item == "b" {
			b = &infos[i]
		}
	}
	if len(infos) != 3 || b == nil || b.Status != "error" || !strings.Contains(b.Error, "WRONGTYPE") {
		t.Fatalf("pool list --json = %+v; want 3 items, b with status error naming WRONGTYPE", infos)
	}
	code, stdout, stderr = runnerCmd(t, procOpts{}, "pool", "status", "--json", "-c", cfg).split()
	var st statusReport
	if code != 0 || json.Unmarshal([]byte(stdout), &st) != nil || st.Items != 3 || st.Errors != 1 {
		t.Fatalf("pool status --json: exit %d, %q, %s; want 3 items, b counted as an error", code, stdout, stderr)
	}

	stopRunners(t, 15*time.Second, r)
	wantHashUnchanged()
	for _, ev := range e.events() {
		if ev.Item == "b" {
			t.Fatalf("item b, whose lock key is a hash, was run: %+v", ev)
		}
	}
	e.checkLedger(e.events())
	e.wantItemsFree([]string{"a", "c"}, time.Second)
}

// TestE2EInputMillionItems: a pool of 1,000,000 items, on a Redis of its
// own, is set from stdin, listed as streamed JSON, counted by pool status,
// and served by a runner, each runner process staying within a memory
// bound.
//
// The runner here is built without -race: the race detector multiplies a
// process's memory by 5 to 10 and its CPU time by 2 to 20, so neither the
// bounds nor the duration would say anything about the runner. The other
// e2e tests run the race-built binary.
func TestE2EInputMillionItems(t *testing.T) {
	parallelFirst(t)
	const (
		n = 1_000_000
		// Bounds on peak RSS (VmHWM). pool set holds every item to
		// replace the pool atomically; list, status and a runner hold
		// one chunk of 1000.
		setBoundMB    = 256
		streamBoundMB = 64
	)
	srv := redistest.StartServer(t)
	client := srv.Client(t)
	ctx := context.Background()
	root, taskDir, out := inputSandbox(t)
	cfg := inputPoolConfig(t, root, srv.Addr, "million", taskDir, out, "worker:\n  concurrency: 4\n  lease_ttl: 10s\n")
	item := func(i int) string { return "shard-" + strconv.Itoa(i) }
	checkRSS := func(what string, p *runnerProc, boundMB int64) {
		t.Helper()
		peak := p.peakRSSKB()
		t.Logf("%s: peak RSS (VmHWM) %.1f MB", what, float64(peak)/1024)
		if peak == 0 || peak > boundMB*1024 {
			t.Errorf("%s: peak RSS %.1f MB, bound %d MB", what, float64(peak)/1024, boundMB)
		}
	}

	// pool set - from a generator.
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriter(pw)
		for i := range n {
			bw.WriteString(item(i))
			bw.WriteByte('\n')
		}
		pw.CloseWithError(bw.Flush())
	}()
	start := time.Now()
	set := startProc(t, "pool set", procOpts{bin: plainRunnerBin, stdin: pr, sampleRSS: true}, "pool", "set", "-c", cfg, "-")
	if code := set.wait(60 * time.Second); code != 0 || set.stdout.String() != fmt.Sprintf("%d items set as the pool\n", n) {
		t.Fatalf("pool set -: exit %d, stdout %q", code, set.stdout.String())
	}
	t.Logf("pool set - of %d items: %v", n, time.Since(start).Round(time.Millisecond))
	checkRSS("pool set -", set, setBoundMB)
	if c, err := client.SCard(ctx, keyspace.New("million", poolName).Members()).Result(); err != nil || c != n {
		t.Fatalf("the pool has %d members (err %v), want %d", c, err, n)
	}

	// pool list --json, parsed as it streams.
	start = time.Now()
	lr, lw := io.Pipe()
	list := startProc(t, "pool list", procOpts{bin: plainRunnerBin, stdout: lw, sampleRSS: true}, "pool", "list", "--json", "-c", cfg)
	go func() {
		<-list.done
		lw.Close()
	}()
	// It writes one object per line between "[" and "]", each but the
	// last followed by a comma: check each line
	// as it arrives (the common line by its exact text, since decoding a
	// million objects in this race-built test would take longer than the
	// runner takes to write them).
	seen := make([]bool, n)
	count, lineNo := 0, 0
	sc := bufio.NewScanner(lr)
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), ",")
		lineNo++
		switch {
		case lineNo == 1 && line == "[":
			continue
		case line == "]":
			if sc.Scan() {
				t.Fatalf("pool list --json: %q after the closing ]", sc.Text())
			}
			continue
		case lineNo == 1:
			t.Fatalf("pool list --json starts with %q, want [", line)
		}
		var in itemInfo
		if name, ok := strings.CutPrefix(line, `{"item":"`); ok && strings.HasSuffix(name, `","status":"free"}`) {
			in = itemInfo{Item: strings.TrimSuffix(name, `","status":"free"}`), Status: "free"}
		} else if err := json.Unmarshal([]byte(line), &in); err != nil {
			t.Fatalf("pool list --json line %d: %v: %q", lineNo, err, line)
		}
		i, err := strconv.Atoi(strings.TrimPrefix(in.Item, "shard-"))
		if err != nil || i < 0 || i >= n || item(i) != in.Item {
			t.Fatalf("pool list --json lists %q, which was not added", in.Item)
		}
		if seen[i] {
			t.Fatalf("pool list --json lists %q twice", in.Item)
		}
		if in.Status != "free" {
			t.Fatalf("pool list --json: %+v, want free", in)
		}
		seen[i] = true
		count++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if code := list.wait(60 * time.Second); code != 0 {
		t.Fatalf("pool list --json: exit %d: %s", code, list.stderr.String())
	}
	if count != n {
		t.Fatalf("pool list --json listed %d items, want %d", count, n)
	}
	t.Logf("pool list --json of %d items, parsed as it streamed: %v", n, time.Since(start).Round(time.Millisecond))
	checkRSS("pool list --json", list, streamBoundMB)

	// pool status counts them.
	status := startProc(t, "pool status", procOpts{bin: plainRunnerBin}, "pool", "status", "--json", "-c", cfg)
	var st statusReport
	if code := status.wait(60 * time.Second); code != 0 || json.Unmarshal([]byte(status.stdout.String()), &st) != nil {
		t.Fatalf("pool status --json: exit %d: %q %s", code, status.stdout.String(), status.stderr.String())
	}
	if st.Items != n || st.Free != n || st.Locked != 0 {
		t.Fatalf("pool status: %+v, want %d items, all free", st, n)
	}

	// A runner serves the pool: some items run within seconds.
	start = time.Now()
	run := startProc(t, "runner", procOpts{bin: plainRunnerBin, dir: filepath.Join(root, "cwd")}, "run", "-c", cfg)
	const runs = 100
	var first time.Duration
	waitFor(t, fmt.Sprintf("%d runs", runs), 30*time.Second, func() (bool, string) {
		files, _ := os.ReadDir(out)
		if first == 0 && len(files) > 0 {
			first = time.Since(start)
		}
		return len(files) >= runs, fmt.Sprintf("%d runs", len(files))
	})
	took := time.Since(start)
	hwm := vmHWM(run.pid())
	run.cmd.Process.Signal(syscall.SIGTERM)
	if code := run.wait(15 * time.Second); code != 0 {
		t.Fatalf("runner exited %d after SIGTERM", code)
	}
	t.Logf("runner over %d items: first run after %v, %d runs after %v; VmHWM %.1f MB before SIGTERM",
		n, first.Round(time.Millisecond), runs, took.Round(time.Millisecond), float64(hwm)/1024)
	if hwm == 0 || hwm > streamBoundMB*1024 {
		t.Errorf("runner: VmHWM %d kB before SIGTERM, bound %d MB", hwm, streamBoundMB)
	}
	for it, c := range inputOutputs(t, out) {
		i, err := strconv.Atoi(strings.TrimPrefix(it, "shard-"))
		if err != nil || i < 0 || i >= n || item(i) != it {
			t.Errorf("a task ran %q (%d times), which is no item", it, c)
		}
	}
	if locked, err := client.Eval(ctx, "return #redis.call('KEYS', ARGV[1])", nil, keyspace.GlobEscape(keyspace.New("million", poolName).LockPrefix())+"*").Int(); err != nil || locked != 0 {
		t.Errorf("%d items still locked after the drain (err %v)", locked, err)
	}
}
