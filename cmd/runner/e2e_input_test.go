package main

// End-to-end tests of bad input: hostile and extreme item names, keys of
// the wrong Redis type written by someone else, and a pool of a million
// items. Every command is the runner binary in a process of its own.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/lock"
)

// inputEnv is added to every runner of these tests: the race-built runner
// re-executes itself as each task's wrapper, and a race-built process
// otherwise sleeps a second before exiting.
var inputEnv = []string{"GORACE=atexit_sleep_ms=0"}

// inputProc is one runner process with separate stdout and stderr.
type inputProc struct {
	t              *testing.T
	args           []string
	cmd            *exec.Cmd
	stdout, stderr *lineBuffer
	done           chan struct{}
	hwmMu          sync.Mutex
	hwmKB          int64 // highest VmHWM sampled while it ran
}

// inputStart starts bin with args in dir (the test's directory when ""),
// reading stdin (nothing when nil). It samples the process's VmHWM every
// 10ms while it runs.
func inputStart(t *testing.T, bin, dir string, stdin io.Reader, env []string, args ...string) *inputProc {
	t.Helper()
	return inputStartOut(t, bin, dir, stdin, nil, env, args...)
}

// inputStartOut is inputStart writing stdout to w (to p.stdout when nil).
func inputStartOut(t *testing.T, bin, dir string, stdin io.Reader, w io.Writer, env []string, args ...string) *inputProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = slices.Concat(cleanEnv(), inputEnv, env)
	cmd.Stdin = stdin
	p := &inputProc{t: t, args: args, cmd: cmd, stdout: &lineBuffer{}, stderr: &lineBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if w != nil {
		cmd.Stdout = w
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if kb := inputVmHWM(cmd.Process.Pid); kb > 0 {
				p.hwmMu.Lock()
				p.hwmKB = max(p.hwmKB, kb)
				p.hwmMu.Unlock()
			}
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- runner %q (pid %d)\nstdout:\n%s\nstderr:\n%s", args, cmd.Process.Pid, inputClip(p.stdout.String()), inputClip(p.stderr.String()))
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *inputProc) wait(within time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		p.t.Fatalf("runner %q still running after %v", inputClip(fmt.Sprint(p.args)), within)
	}
	return p.cmd.ProcessState.ExitCode()
}

// peakRSSKB is the highest VmHWM (the kernel's high-water mark of the
// resident set) read from /proc while the process ran: it bounds the
// process's peak up to the last sample, at most 10ms before it exited.
// (wait4's ru_maxrss is no use here: at exec, Linux keeps the high-water
// mark of the memory the child shared with this test process.)
func (p *inputProc) peakRSSKB() int64 {
	p.hwmMu.Lock()
	defer p.hwmMu.Unlock()
	return p.hwmKB
}

// inputVmHWM reads the VmHWM of pid in KiB, 0 when it cannot.
func inputVmHWM(pid int) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// inputRun runs a runner command to its end.
func inputRun(t *testing.T, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := inputStart(t, runnerBin, "", stdin, nil, args...)
	code = p.wait(60 * time.Second)
	return code, p.stdout.String(), p.stderr.String()
}

// inputErrorLine returns the single "runner: ..." line of stderr, failing
// the test when there is not exactly one. Other lines (logs) start with a
// timestamp.
func inputErrorLine(t *testing.T, stderr string) string {
	t.Helper()
	var found []string
	for line := range strings.Lines(stderr) {
		if strings.HasPrefix(line, "runner: ") {
			found = append(found, strings.TrimSuffix(line, "\n"))
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one \"runner: \" error line on stderr, got %d:\n%s", len(found), inputClip(stderr))
	}
	return found[0]
}

func inputClip(s string) string {
	if len(s) > 4000 {
		return s[:2000] + fmt.Sprintf("\n... (%d bytes) ...\n", len(s)-4000) + s[len(s)-2000:]
	}
	return s
}

// inputPoolConfig writes a config for a Redis pool under prefix whose task
// writes RUNNER_ITEM, as data only, to $OUT_DIR/<token>, in dir.
func inputPoolConfig(t *testing.T, path, addr, prefix, dir, out, extra string) {
	t.Helper()
	body := fmt.Sprintf(`redis:
  addr: %q
pool:
  prefix: %q
task:
  command: ["sh", "-c", "printf '%%s' \"$RUNNER_ITEM\" > \"$OUT_DIR/$RUNNER_TOKEN\""]
  dir: %q
  kill_grace: 300ms
  env:
    OUT_DIR: %q
%s`, addr, prefix, dir, out, extra)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
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
	t.Parallel()
	addr, client, prefix := redistest.Addr(t), redistest.Client(t), redistest.Prefix(t)
	ctx := context.Background()
	root, taskDir, out := inputSandbox(t)
	cfg := filepath.Join(root, "runner.yaml")
	inputPoolConfig(t, cfg, addr, prefix, taskDir, out, `mode: batch
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
	code, stdout, stderr := inputRun(t, nil, append([]string{"pool", "add", "-c", cfg, "--"}, names...)...)
	if code != 0 || stdout != fmt.Sprintf("%d items added\n", len(names)) {
		t.Fatalf("pool add: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	members, err := client.SMembers(ctx, prefix+"|lock-pool|pool").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(members)
	want := slices.Sorted(slices.Values(names))
	if !slices.Equal(members, want) {
		t.Fatalf("pool members differ from the names added:\n got %q\nwant %q", members, want)
	}

	// pool list: one line per item, each name Go-quoted.
	code, stdout, stderr = inputRun(t, nil, "pool", "list", "-c", cfg)
	if code != 0 {
		t.Fatalf("pool list: exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 1+len(names) {
		t.Fatalf("pool list printed %d lines for %d items: an item broke a line:\n%s", len(lines), len(names), stdout)
	}
	for _, n := range names {
		if !strings.Contains(stdout, "\n"+strconv.Quote(n)+" ") {
			t.Errorf("pool list lacks the quoted name %s", strconv.Quote(n))
		}
	}
	// pool list --json: valid JSON, every UTF-8 name exact.
	code, stdout, stderr = inputRun(t, nil, "pool", "list", "--json", "-c", cfg)
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

	r := inputStart(t, runnerBin, filepath.Join(root, "cwd"), nil, nil, "run", "-c", cfg)
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
	t.Parallel()
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
				"env":        map[string]string{"OUT_DIR": out},
			},
			"mode":   "batch",
			"worker": map[string]any{"concurrency": 4, "max_attempts": 1},
		}
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(root, name+".json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	r := inputStart(t, runnerBin, filepath.Join(root, "cwd"), nil, nil, "run", "-c", config("ok", names))
	if code := r.wait(60 * time.Second); code != 0 {
		t.Fatalf("runner run: exit %d", code)
	}
	got := inputOutputs(t, out)
	for _, n := range names {
		if got[n] != 1 {
			t.Errorf("item %q reached its task %d times, want once", n, got[n])
		}
	}
	if len(got) != len(names) {
		t.Errorf("tasks saw %d distinct items, want %d", len(got), len(names))
	}
	inputNothingExecuted(t, root, taskDir)

	for _, c := range []struct{ name, item string }{
		{"too-long", strings.Repeat("x", lock.MaxKeyLen+1)},
		{"empty", ""},
		{"nul", "a\x00b"},
	} {
		code, _, stderr := inputRun(t, nil, "run", "-c", config(c.name, []string{"fine", c.item}))
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "runner: config: pool.items: element 1") {
			t.Errorf("pool.items with a %s item: exit %d, stderr %q; want 2 and one line naming pool.items element 1", c.name, code, stderr)
		}
	}
}

// TestE2EInputRejectedNames: names no pool can hold are refused by "runner
// pool add" with exit 2 and one line saying why, and the pool is left as
// it was.
func TestE2EInputRejectedNames(t *testing.T) {
	t.Parallel()
	addr, client, prefix := redistest.Addr(t), redistest.Client(t), redistest.Prefix(t)
	ctx := context.Background()
	root, taskDir, out := inputSandbox(t)
	cfg := filepath.Join(root, "runner.yaml")
	inputPoolConfig(t, cfg, addr, prefix, taskDir, out, "")
	poolKey := prefix + "|lock-pool|pool"
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
			code, stdout, stderr := inputRun(t, stdin, append([]string{"pool", "add", "-c", cfg, "--"}, c.args...)...)
			first, _, _ := strings.Cut(stderr, "\n")
			if code != 2 || !strings.HasPrefix(first, "runner: ") || !strings.Contains(first, c.why) {
				t.Errorf("exit %d, stderr %q; want 2 and a line saying %q", code, inputClip(stderr), c.why)
			}
			if !strings.HasPrefix(c.why, "\"-\"") && strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr is not one line: %q", inputClip(stderr))
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
	code, stdout, stderr := inputRun(t, strings.NewReader("via-stdin-1\r\nvia-stdin-2\n-\n"), "pool", "add", "-c", cfg, "-")
	if code != 0 || stdout != "3 items added\n" {
		t.Fatalf("pool add -: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	for _, it := range []string{"via-stdin-1", "via-stdin-2", "-"} {
		if ok, err := client.SIsMember(ctx, poolKey, it).Result(); err != nil || !ok {
			t.Errorf("%q not added from stdin (err %v)", it, err)
		}
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
	t.Parallel()
	addr, client, prefix := redistest.Addr(t), redistest.Client(t), redistest.Prefix(t)
	ctx := context.Background()
	root, taskDir, out := inputSandbox(t)
	cfg := filepath.Join(root, "runner.yaml")
	inputPoolConfig(t, cfg, addr, prefix, taskDir, out, "worker:\n  lease_ttl: 2s\n")
	poolKey := prefix + "|lock-pool|pool"
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
			code, _, stderr := inputRun(t, strings.NewReader(c.stdin), c.args...)
			took := time.Since(start)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
			}
			line := inputErrorLine(t, stderr)
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
	t.Parallel()
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
	r := startRunner(t, "runner", inputEnv, "run", "-c", cfg)
	waitFor(t, "a and c each run 3 times", 30*time.Second, func() bool {
		ended := map[string]int{}
		for _, ev := range e.events() {
			if ev.Ev == "end" {
				ended[ev.Item]++
			}
		}
		return ended["a"] >= 3 && ended["c"] >= 3
	})
	wantHashUnchanged()

	code, stdout, stderr := inputRun(t, nil, "pool", "list", "--json", "-c", cfg)
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
	code, stdout, stderr = inputRun(t, nil, "pool", "status", "--json", "-c", cfg)
	var st statusReport
	if code != 0 || json.Unmarshal([]byte(stdout), &st) != nil || st.Items != 3 || st.Locked < 1 {
		t.Fatalf("pool status --json: exit %d, %q, %s; want 3 items, b among the locked", code, stdout, stderr)
	}

	r.signal(syscall.SIGTERM)
	if code := r.wait(15 * time.Second); code != 0 {
		t.Fatalf("runner exited %d after SIGTERM", code)
	}
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
	t.Parallel()
	const (
		n = 1_000_000
		// Bounds on peak RSS (VmHWM). pool set holds every item to
		// replace the pool atomically; list, status and a runner hold
		// one chunk of 1000.
		setBoundMB    = 256
		streamBoundMB = 64
	)
	bin := filepath.Join(t.TempDir(), "runner")
	build := exec.Command("go", "build", "-o", bin, ".")
	if outb, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the runner without -race: %v\n%s", err, outb)
	}
	srv := redistest.StartServer(t)
	client := srv.Client(t)
	ctx := context.Background()
	root, taskDir, out := inputSandbox(t)
	cfg := filepath.Join(root, "runner.yaml")
	inputPoolConfig(t, cfg, srv.Addr, "million", taskDir, out, "worker:\n  concurrency: 4\n  lease_ttl: 10s\n")
	item := func(i int) string { return "shard-" + strconv.Itoa(i) }
	checkRSS := func(what string, p *inputProc, boundMB int64) {
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
	set := inputStart(t, bin, "", pr, nil, "pool", "set", "-c", cfg, "-")
	if code := set.wait(60 * time.Second); code != 0 || set.stdout.String() != fmt.Sprintf("%d items set as the pool\n", n) {
		t.Fatalf("pool set -: exit %d, stdout %q", code, set.stdout.String())
	}
	t.Logf("pool set - of %d items: %v", n, time.Since(start).Round(time.Millisecond))
	checkRSS("pool set -", set, setBoundMB)
	if c, err := client.SCard(ctx, "million|lock-pool|pool").Result(); err != nil || c != n {
		t.Fatalf("the pool has %d members (err %v), want %d", c, err, n)
	}

	// pool list --json, parsed as it streams.
	start = time.Now()
	lr, lw := io.Pipe()
	list := inputStartOut(t, bin, "", nil, lw, nil, "pool", "list", "--json", "-c", cfg)
	go func() {
		<-list.done
		lw.Close()
	}()
	// It writes one object per line between "[" and "]": check each line
	// as it arrives (the common line by its exact text, since decoding a
	// million objects in this race-built test would take longer than the
	// runner takes to write them).
	seen := make([]bool, n)
	count, lineNo := 0, 0
	sc := bufio.NewScanner(lr)
	for sc.Scan() {
		line := sc.Text()
		lineNo++
		switch {
		case lineNo == 1 && line == "[", line == ",":
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
	status := inputStart(t, bin, "", nil, nil, "pool", "status", "--json", "-c", cfg)
	var st statusReport
	if code := status.wait(60 * time.Second); code != 0 || json.Unmarshal([]byte(status.stdout.String()), &st) != nil {
		t.Fatalf("pool status --json: exit %d: %q %s", code, status.stdout.String(), status.stderr.String())
	}
	if st.Items != n || st.Free != n || st.Locked != 0 {
		t.Fatalf("pool status: %+v, want %d items, all free", st, n)
	}

	// A runner serves the pool: some items run within seconds.
	start = time.Now()
	run := inputStart(t, bin, filepath.Join(root, "cwd"), nil, nil, "run", "-c", cfg)
	const runs = 100
	var first time.Duration
	waitFor(t, fmt.Sprintf("%d runs", runs), 30*time.Second, func() bool {
		files, _ := os.ReadDir(out)
		if first == 0 && len(files) > 0 {
			first = time.Since(start)
		}
		return len(files) >= runs
	})
	took := time.Since(start)
	hwm := inputVmHWM(run.cmd.Process.Pid)
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
	if locked, err := client.Eval(ctx, "return #redis.call('KEYS', ARGV[1])", nil, "million|lock-pool:*").Int(); err != nil || locked != 0 {
		t.Errorf("%d items still locked after the drain (err %v)", locked, err)
	}
}
