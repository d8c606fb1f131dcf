package main

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// cliFuzzDeadAddr is the Redis address the fuzzed commands get from their
// environment: nothing listens on port 1, so a pool command that gets past
// its configuration fails at once with "connection refused".
const cliFuzzDeadAddr = "127.0.0.1:1"

// cliFuzzEnv is the whole environment runMain sees. RUNNER_ITEM shows that
// variables of no config section are ignored.
var cliFuzzEnv = []string{
	"RUNNER_REDIS_ADDR=" + cliFuzzDeadAddr,
	"RUNNER_REDIS_DIAL_TIMEOUT=250ms",
	"RUNNER_ITEM=not-a-setting",
}

// FuzzCLIArgs runs the command line on arbitrary arguments, with
// arbitrary stdin and an arbitrary config file. It must not panic, must
// return 0, 1 or 2, and a failure (1 or 2) must write stderr in one write
// of clean lines "runner: <message>" (one per configuration problem),
// followed for usage errors by "Run 'runner ... --help' for usage.".
//
// The input is the argv joined by NUL bytes (a NUL cannot occur in a real
// argument), the bytes of stdin, and the bytes of a config file: "@cfg" in
// any argument becomes the path of a directory holding that file as
// cfg.yaml, cfg.yml, cfg.json and cfg.toml, so "-c @cfg.yaml" reads it.
//
// What is never run, and why (the target must stay a parser test: it may
// not start workers nor touch a Redis):
//
//   - A "run" or "exec" whose flags and configuration are valid would
//     start work; "health" would dial any address; "man" would write
//     files. The app's beforeWork gate (cliFuzzGate) stops each of them
//     once its flags and configuration are parsed, exactly where work
//     would start, so only the parsing stage runs (exit 0).
//   - A "pool" command with a valid configuration whose redis.addr is not
//     cliFuzzDeadAddr (flags may override the environment) could reach a
//     real Redis; the gate stops it too. Pool commands on cliFuzzDeadAddr
//     do run, and fail on connection refused.
//   - Arguments naming an existing file that is not a regular file or a
//     directory (a FIFO), or a path under /proc, /sys or /dev: reading
//     "-c /dev/zero" never ends,
//     since the config reader reads the whole file before it checks the
//     extension (reported as a product issue).
//
// A runMain that does not return within 20s fails the input.
func FuzzCLIArgs(f *testing.F) {
	conn, err := net.DialTimeout("tcp", cliFuzzDeadAddr, 2*time.Second)
	if err == nil {
		conn.Close()
		f.Fatalf("something listens on %s: FuzzCLIArgs needs it closed so that pool commands cannot reach a Redis", cliFuzzDeadAddr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		f.Fatalf("dialing %s: %v; want connection refused", cliFuzzDeadAddr, err)
	}

	validRun := []byte("task:\n  command: [\"true\"]\n  kill_grace: 100ms\nworker:\n  lease_ttl: 1s\n")
	args := func(a ...string) string { return strings.Join(a, "\x00") }
	for _, s := range []struct {
		argv       string
		stdin, cfg []byte
	}{
		{args(), nil, nil},
		{args("version"), nil, nil},
		{args("--version", "extra"), nil, nil},
		{args("help"), nil, nil},
		{args("run", "-h"), nil, nil},
		{args("help", "run"), nil, nil},
		{args("pool", "--help"), nil, nil},
		{args("pool", "lsit"), nil, nil},
		{args("pool", "list", "--help"), nil, nil},
		{args("run", "--concurency", "3"), nil, nil},
		{args("config", "check", "-c", "@cfg.yaml"), nil, []byte("worker: {concurency: 3, lease_ttl: 30}\nlog: {level: loud}\n")},
		{args("config", "show", "-c", "@cfg.yaml"), nil, validRun},
		{args("exec", "--pool", "p", "--", "true"), nil, nil},
		{args("exec", "--", "true"), nil, nil},
		{args("completion", "fish"), nil, nil},
		{args("completion", "tcsh"), nil, nil},
		{args("health", "--addr", "127.0.0.1:1"), nil, nil},
		{args("launch"), nil, nil},
		{args(""), nil, nil},
		{args("run"), nil, nil},
		{args("run", "-c", "@cfg.yaml"), nil, validRun},                     // would start: configuration only
		{args("run", "-c", "@cfg.yaml", "--redis-addr", ""), nil, validRun}, // embedded: would start
		{args("run", "-c", "@cfg.yaml", "extra-arg"), nil, validRun},        // usage error after a valid config
		{args("run", "--config=@cfg.json"), nil, []byte(`{"task": {"command": []}}`)},
		{args("run", "-c", "@cfg.toml"), nil, []byte("[worker]\nlease_ttl = 30\n")},
		{args("run", "-c", "@cfg.yml"), nil, []byte("worker:\n  concurency: 4\n")},
		{args("run", "-c", "@cfg.txt"), nil, validRun},
		{args("run", "-c", "/nonexistent/x.yaml"), nil, nil},
		{args("run", "--set", "worker.lease_ttl=0s", "--set", `task.command=["true"]`), nil, nil},
		{args("run", "--set", "no.such.key=1"), nil, nil},
		{args("run", "--set", "novalue"), nil, nil},
		{args("run", "--concurrency", "0", "--set", `task.command=["true"]`), nil, nil},
		{args("run", "--redis-addr", "user:secret@host:6379"), nil, nil},
		{args("run", "--mode", "sometimes", "-c", "@cfg.yaml"), nil, validRun},
		{args("run", "--no-such-flag"), nil, nil},
		{args("run", "-x\nrunner: forged line"), nil, nil}, // a flag name with a newline
		{args("run", "--\x1b[31mred"), nil, nil},           // a flag name with a terminal escape
		{args("run", "--set"), nil, nil},
		{args("pool"), nil, nil},
		{args("pool", "frobnicate"), nil, nil},
		{args("pool", "add"), nil, nil},
		{args("pool", "add", "--redis-addr", ""), nil, nil},
		{args("pool", "add", "a", "", "b"), nil, nil},
		{args("pool", "add", strings.Repeat("x", 1025)), nil, nil},
		{args("pool", "add", "a", "-"), nil, nil},
		{args("pool", "add", "-"), []byte("a\x00b\n"), nil},
		{args("pool", "add", "-"), []byte("ok\n\nok2\n"), nil},
		{args("pool", "add", "-"), []byte(strings.Repeat("y", 70000) + "\n"), nil},
		{args("pool", "add", "-"), nil, nil},
		{args("pool", "set", "-"), []byte("a\r\nb\n$(touch pwned)\n"), nil},
		{args("pool", "remove", "--", "--help"), nil, nil},
		{args("pool", "add", "x", "--json"), nil, nil},
		{args("pool", "list", "--json"), nil, nil},
		{args("pool", "list", "extra"), nil, nil},
		{args("pool", "status", "--json", "-c", "@cfg.yaml"), nil, []byte("batch: {id: \"\"}\n")},
		{args("pool", "clear", "x"), nil, nil},
		{args("pool", "clear", "--redis-addr", "127.0.0.1:6379"), nil, nil}, // another Redis: configuration only
	} {
		f.Add(s.argv, s.stdin, s.cfg)
	}

	f.Fuzz(func(t *testing.T, argv string, stdin, cfg []byte) {
		dir := t.TempDir()
		for _, name := range []string{"cfg.yaml", "cfg.yml", "cfg.json", "cfg.toml", "cfg.txt"} {
			if err := os.WriteFile(filepath.Join(dir, name), cfg, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		var args []string
		if argv != "" {
			args = strings.Split(strings.ReplaceAll(argv, "@cfg", filepath.Join(dir, "cfg")), "\x00")
		}
		if cliFuzzNamesSpecialFile(args) {
			return
		}

		var stdout bytes.Buffer
		stderr := &cliFuzzWrites{}
		done := make(chan int, 1)
		a := &app{stdin: bytes.NewReader(stdin), stdout: &stdout, stderr: stderr, environ: cliFuzzEnv, beforeWork: cliFuzzGate}
		go func() { done <- a.main(args) }()
		var code int
		select {
		case code = <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("runMain(%q) still running after 20s", args)
		}
		cliFuzzCheck(t, args, code, stderr.writes())
	})
}

// cliFuzzCheck checks runMain's exit code and what it wrote to stderr.
func cliFuzzCheck(t *testing.T, args []string, code int, writes []string) {
	t.Helper()
	all := strings.Join(writes, "")
	switch code {
	case exitOK:
		for _, w := range writes {
			if strings.HasPrefix(w, "runner: ") {
				t.Fatalf("runner %q exited 0 but printed an error: %q", args, w)
			}
		}
		return
	case exitFailure, exitUsage:
	default:
		t.Fatalf("runner %q exited %d, want 0, 1 or 2; stderr:\n%s", args, code, all)
	}
	if len(writes) != 1 {
		t.Fatalf("runner %q exited %d and wrote stderr in %d writes, want one: %q", args, code, len(writes), all)
	}
	lines := strings.Split(strings.TrimSuffix(all, "\n"), "\n")
	if hint := lines[len(lines)-1]; strings.HasPrefix(hint, "Run 'runner") && strings.HasSuffix(hint, " --help' for usage.") {
		if code != exitUsage {
			t.Fatalf("runner %q pointed to the help but exited %d, want 2", args, code)
		}
		lines = lines[:len(lines)-1]
	}
	if len(args) == 0 && (code != exitUsage || all != "runner: missing command\nRun 'runner --help' for usage.\n") {
		t.Fatalf("runner without arguments: exit %d, stderr %q; want 2 and a pointer to the help", code, all)
	}
	if len(lines) == 0 {
		t.Fatalf("runner %q exited %d without a message: %q", args, code, all)
	}
	for _, msg := range lines {
		text, ok := strings.CutPrefix(msg, "runner: ")
		if !ok || strings.TrimSpace(text) == "" {
			t.Fatalf("runner %q exited %d; stderr line is not \"runner: <message>\": %q", args, code, all)
		}
		for _, r := range text {
			if r < ' ' || r == 0x7f {
				t.Fatalf("runner %q exited %d; its message is not one clean line (control character %q): %q", args, code, r, msg)
			}
		}
	}
}

// cliFuzzGate lets a command go on to its work only when that work is a
// pool command on cliFuzzDeadAddr, which fails at once.
func cliFuzzGate(cmd string, cfg *Config) bool {
	_ = cfg.Redacted() // must not panic on any configuration
	return strings.HasPrefix(cmd, "runner pool ") && cfg.Redis.Addr == cliFuzzDeadAddr &&
		cfg.Redis.Sentinel.Master == "" && len(cfg.Redis.Cluster.Addrs) == 0
}

// cliFuzzNamesSpecialFile reports whether an argument, or the value after
// an "=" in it, names an existing file that is neither regular nor a
// directory, or a path under /proc, /sys or /dev.
func cliFuzzNamesSpecialFile(args []string) bool {
	for _, a := range args {
		cands := []string{a}
		if _, v, ok := strings.Cut(a, "="); ok {
			cands = append(cands, v)
		}
		for _, p := range cands {
			if p == "" {
				continue
			}
			if abs, err := filepath.Abs(p); err == nil && (strings.HasPrefix(abs, "/proc/") || strings.HasPrefix(abs, "/sys/") || strings.HasPrefix(abs, "/dev/")) {
				return true // files that may block or never end
			}
			if fi, err := os.Stat(p); err == nil && fi.Mode()&(fs.ModeType&^fs.ModeDir) != 0 {
				return true
			}
		}
	}
	return false
}

// cliFuzzWrites is a writer that keeps each Write apart.
type cliFuzzWrites struct {
	mu sync.Mutex
	w  []string
}

func (c *cliFuzzWrites) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w = append(c.w, string(p))
	return len(p), nil
}

func (c *cliFuzzWrites) writes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.w...)
}
