package main

// The command line end to end through the built binary (issue 12): help
// for every command, config check and show, exit codes, SIGHUP, exec,
// completion scripts and the pool table.

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/allocator"
	"github.com/lockpool/lockpool/pkg/lock"
)

// commandPaths lists every command of the tree, "runner" first.
func commandPaths() [][]string {
	var out [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		out = append(out, path)
		for _, s := range c.Commands() {
			if s.Name() == "help" {
				continue
			}
			walk(s, append(slices.Clip(path), s.Name()))
		}
	}
	walk((&app{}).rootCmd(), nil)
	return out
}

// TestE2EHelpEveryCommand: "--help" of every command exits 0 and prints a
// help naming the command, with a paragraph and an example; "runner help
// CMD" prints the same.
func TestE2EHelpEveryCommand(t *testing.T) {
	t.Parallel()
	paths := commandPaths()
	if len(paths) < 15 {
		t.Fatalf("only %d commands found: %q", len(paths), paths)
	}
	for _, path := range paths {
		name := strings.Join(append([]string{"runner"}, path...), " ")
		t.Run(name, func(t *testing.T) {
			parallel(t)
			code, stdout, stderr := runnerCmd(t, procOpts{within: 20 * time.Second}, append(slices.Clip(path), "--help")...).split()
			if code != 0 || stderr != "" {
				t.Fatalf("%s --help: exit %d, stderr %q", name, code, stderr)
			}
			for _, want := range []string{"Usage:\n  " + name, "Examples:\n", "  runner"} {
				if !strings.Contains(stdout, want) {
					t.Errorf("%s --help lacks %q:\n%s", name, want, stdout)
				}
			}
			// The paragraph: the first line of Long is more than a title.
			if first, _, _ := strings.Cut(stdout, "\n"); len(first) < 40 {
				t.Errorf("%s --help starts with %q, want a paragraph", name, first)
			}
			if len(path) > 0 {
				code, via, _ := runnerCmd(t, procOpts{within: 20 * time.Second}, append([]string{"help"}, path...)...).split()
				if code != 0 || via != stdout {
					t.Errorf("runner help %s: exit %d, and its text differs from --help", strings.Join(path, " "), code)
				}
			}
		})
	}
	// Flags only where they act; exit codes documented in the root help.
	_, list, _ := runnerCmd(t, procOpts{}, "pool", "list", "--help").split()
	for _, unwanted := range []string{"--concurrency", "--mode", "--admin-listen"} {
		if strings.Contains(list, unwanted) {
			t.Errorf("pool list --help offers %s, which does nothing there", unwanted)
		}
	}
	for _, cmd := range [][]string{{"--help"}, {"run", "--help"}} {
		_, help, _ := runnerCmd(t, procOpts{}, cmd...).split()
		if !strings.Contains(help, "3 stopped by a signal before the batch was complete") {
			t.Errorf("runner %s does not document the exit codes:\n%s", strings.Join(cmd, " "), help)
		}
	}
	// Unknown commands suggest the nearest, in one line and a pointer.
	for args, want := range map[string]string{
		"pool lsit":          `runner: unknown command "lsit" for "runner pool" (did you mean "list"?)` + "\nRun 'runner pool --help' for usage.\n",
		"confg":              `runner: unknown command "confg" for "runner" (did you mean "config"?)` + "\nRun 'runner --help' for usage.\n",
		"run --concurency 3": "runner: unknown flag: --concurency (did you mean --concurrency?)\nRun 'runner run --help' for usage.\n",
	} {
		code, stdout, stderr := runnerCmd(t, procOpts{}, strings.Fields(args)...).split()
		if code != 2 || stderr != want || stdout != "" {
			t.Errorf("runner %s: exit %d, stderr %q; want 2, %q", args, code, stderr, want)
		}
	}
}

// TestE2EConfigCheckReportsEveryProblem: config check prints each problem
// of a file on its own line (exit 2), never the password; a good file
// prints ok (exit 0).
func TestE2EConfigCheckReportsEveryProblem(t *testing.T) {
	parallel(t)
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.yaml", `
redis:
  password: 1234567
worker:
  concurency: 3
  lease_ttl: 30
  max_attempts: 0
task:
  command: ["true"]
  env: {PATH: /bin}
log:
  level: loud
`)
	code, stdout, stderr := runnerCmd(t, procOpts{}, "config", "check", "-c", bad).split()
	want := []string{
		`runner: config: unknown key "worker.concurency" (did you mean "worker.concurrency"?)`,
		`runner: config: redis.password: want a string (quote it), got a number`,
		`runner: config: worker.lease_ttl: bare number 30 has no unit; write a Go duration such as "30s" or "1m30s"`,
		`runner: config: worker.max_attempts: must be > 0, got 0`,
		`runner: config: task.env: want a list of strings, got a table`,
		`runner: config: log.level: must be one of trace, debug, info, warn, error; got "loud"`,
	}
	got := lines(stderr)
	if code != 2 || stdout != "" || len(got) != len(want) {
		t.Fatalf("config check: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and %d lines", code, stdout, stderr, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("line %d:\n got %s\nwant %s...", i, got[i], want[i])
		}
	}
	if strings.Contains(stderr, "1234567") {
		t.Error("config check printed the password")
	}
	good := writeFile(t, dir, "good.toml", "[task]\ncommand = [\"true\"]\nenv = [\"PATH=/bin\"]\n")
	if code, stdout, stderr := runnerCmd(t, procOpts{}, "config", "check", "-c", good).split(); code != 0 || stdout != "ok\n" {
		t.Errorf("config check of a good file: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestE2EConfigShowSources: config show tells default, file, env and flag
// apart and redacts secrets.
func TestE2EConfigShowSources(t *testing.T) {
	parallel(t)
	file := writeFile(t, t.TempDir(), "c.yaml", "worker:\n  concurrency: 3\ntask:\n  command: [\"true\"]\n  env: [\"TOKEN=tok-123\"]\n")
	env := []string{"RUNNER_WORKER_LEASE_TTL=45s", "RUNNER_REDIS_PASSWORD=hunter2-Sekr3t"}
	code, stdout, stderr := runnerCmd(t, procOpts{env: env}, "config", "show", "-c", file, "--mode", "batch", "--json").split()
	if code != 0 {
		t.Fatalf("config show: exit %d: %s", code, stderr)
	}
	var shown map[string]struct {
		Value  any    `json:"value"`
		Source string `json:"source"`
	}
	if err := json.Unmarshal([]byte(stdout), &shown); err != nil {
		t.Fatalf("config show --json: %v\n%s", err, stdout)
	}
	for key, want := range map[string]struct {
		value  any
		source string
	}{
		"worker.concurrency":      {3.0, "file"},
		"worker.lease_ttl":        {"45s", "env"},
		"mode":                    {"batch", "flag"},
		"log.format":              {"text", "default"},
		"worker.refresh_interval": {"15s", "default"}, // derived from the env's lease_ttl
		"redis.password":          {"***", "env"},
		"task.env":                {[]any{"TOKEN=***"}, "file"},
	} {
		got := shown[key]
		if fmt.Sprint(got.Value) != fmt.Sprint(want.value) || got.Source != want.source {
			t.Errorf("%s: value %v from %s, want %v from %s", key, got.Value, got.Source, want.value, want.source)
		}
	}
	if len(shown) != len(configKeys) {
		t.Errorf("config show --json has %d keys, want %d", len(shown), len(configKeys))
	}
	_, table, _ := runnerCmd(t, procOpts{env: env}, "config", "show", "-c", file).split()
	for _, secret := range []string{"hunter2", "tok-123"} {
		if strings.Contains(stdout+table, secret) {
			t.Errorf("config show printed a secret (%s)", secret)
		}
	}
	if !regexp.MustCompile(`(?m)^worker\.lease_ttl +"45s" +env$`).MatchString(table) {
		t.Errorf("config show table lacks an aligned worker.lease_ttl row:\n%s", table)
	}
}

// exitCodeConfig is an embedded-backend batch whose task runs script
// ("mode: loop" in extra makes it a loop).
func exitCodeConfig(t *testing.T, items int, script, extra string) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "c.yaml", fmt.Sprintf(`
pool:
  items: %s
worker:
  concurrency: 2
  lease_ttl: 5s
  max_attempts: 1
  shutdown_grace: 100ms
task:
  command: ["sh", "-c", %q]
  kill_grace: 300ms
batch:
  progress_interval: 1s
%s`, yamlList(itemNames(items)), script, cmp.Or(extra, "mode: batch\n")))
}

// TestE2EExitCodes: 0 batch complete or loop drained, 1 failed batch
// items, 2 usage and configuration, 3 a batch stopped by SIGTERM.
func TestE2EExitCodes(t *testing.T) {
	t.Parallel()
	t.Run("0 batch complete", func(t *testing.T) {
		parallel(t)
		if res := runnerCmd(t, procOpts{}, "run", "-c", exitCodeConfig(t, 4, "true", "")); res.code != 0 {
			t.Errorf("exit %d, want 0:\n%s", res.code, clip(res.out))
		}
	})
	t.Run("1 failed batch items", func(t *testing.T) {
		parallel(t)
		res := runnerCmd(t, procOpts{}, "run", "-c", exitCodeConfig(t, 3, `[ "$RUNNER_ITEM" != item-01 ]`, ""))
		if res.code != 1 || !strings.Contains(res.stderr, "failed items") {
			t.Errorf("exit %d, want 1 naming failed items:\n%s", res.code, clip(res.out))
		}
	})
	t.Run("2 usage and configuration", func(t *testing.T) {
		parallel(t)
		for _, args := range [][]string{{"run", "--bogus"}, {"run", "--set", "worker.lease_ttl=30"}, {"pool"}} {
			if res := runnerCmd(t, procOpts{}, args...); res.code != 2 {
				t.Errorf("runner %q: exit %d, want 2:\n%s", args, res.code, clip(res.out))
			}
		}
	})
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run("3 batch stopped by "+sig.String(), func(t *testing.T) {
			parallel(t)
			r := startRunner(t, "batch", nil, "run", "-c", exitCodeConfig(t, 6, "echo started; sleep 30", ""))
			waitFor(t, "two tasks started", 20*time.Second, func() (bool, string) {
				n := strings.Count(r.out.String(), "runner.task: started")
				return n >= 2, fmt.Sprintf("%d started", n)
			})
			r.signal(sig)
			if code := r.wait(20 * time.Second); code != 3 {
				t.Errorf("exit %d after %v mid-batch, want 3:\n%s", code, sig, clip(r.out.String()))
			}
			if !strings.Contains(r.stderr.String(), "runner: stopped by a signal before the batch was complete") {
				t.Errorf("no line saying the batch was stopped:\n%s", clip(r.out.String()))
			}
		})
	}
	t.Run("0 loop drained", func(t *testing.T) {
		parallel(t)
		r := startRunner(t, "loop", nil, "run", "-c", exitCodeConfig(t, 2, "echo started; sleep 0.2", "mode: loop\n"))
		waitFor(t, "a task started", 20*time.Second, r.untilLogged("runner.task: started"))
		r.signal(syscall.SIGTERM)
		if code := r.wait(20 * time.Second); code != 0 {
			t.Errorf("exit %d after SIGTERM in loop mode, want 0:\n%s", code, clip(r.out.String()))
		}
	})
}

// TestE2EJSONLogDurations: durations in JSON logs are strings.
func TestE2EJSONLogDurations(t *testing.T) {
	parallel(t)
	res := runnerCmd(t, procOpts{}, "run", "-c", exitCodeConfig(t, 1, "echo out; echo err >&2", "mode: batch\nlog:\n  format: json\n"))
	if res.code != 0 {
		t.Fatalf("exit %d:\n%s", res.code, clip(res.out))
	}
	if !strings.Contains(res.stderr, `"lease_ttl":"5s"`) || strings.Contains(res.stderr, `"lease_ttl":5000000000`) {
		t.Errorf("JSON logs do not write lease_ttl as \"5s\":\n%s", clip(res.stderr))
	}
	// Task stdout at INFO, stderr at WARN.
	var outLevel, errLevel string
	for _, l := range lines(res.stderr) {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil || m["@module"] != "runner.task" {
			continue
		}
		switch m["@message"] {
		case "out":
			outLevel = fmt.Sprint(m["@level"])
		case "err":
			errLevel = fmt.Sprint(m["@level"])
		}
	}
	if outLevel != "info" || errLevel != "warn" {
		t.Errorf("task stdout logged at %q, stderr at %q; want info, warn:\n%s", outLevel, errLevel, clip(res.stderr))
	}
}

// TestE2ESIGHUPRaisesConcurrency: a running loop at concurrency 2 gets
// SIGHUP after its file says 4: four tasks run at once, and the two that
// ran before the reload finish normally (no lease dropped, none lost).
func TestE2ESIGHUPRaisesConcurrency(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	items := itemNames(8)
	write := func(concurrency int) string {
		return e.config("hup", items, fmt.Sprintf("worker:\n  concurrency: %d\n  lease_ttl: 3s\n", concurrency), 3*time.Second)
	}
	cfg := write(2)
	r := startRunner(t, "hup", nil, "run", "-c", cfg)
	before := e.waitHeld(r, 2)
	if path := write(4); path != cfg {
		t.Fatalf("config rewritten at %s, not %s", path, cfg)
	}
	r.signal(syscall.SIGHUP)
	start := time.Now()
	waitFor(t, "four tasks running after SIGHUP", 10*time.Second+redistest.Slack(), func() (bool, string) {
		held := openBy(e.events(), r.pid())
		return len(held) == 4, fmt.Sprintf("running %v", sortedKeys(held))
	})
	t.Logf("4 tasks running %v after SIGHUP (%s)", time.Since(start).Round(time.Millisecond), redistest.SchedDelay())
	// The two runs from before the reload end normally.
	waitFor(t, "the runs from before SIGHUP ending", 20*time.Second, func() (bool, string) {
		ended := 0
		for _, ev := range e.events() {
			if b, ok := before[ev.Item]; ok && ev.Ev == "end" && ev.Token == b.Token {
				ended++
			}
		}
		return ended == 2, fmt.Sprintf("%d of 2 ended", ended)
	})
	stopRunners(t, 20*time.Second, r)
	runs := e.checkLedger(e.events())
	for it, b := range before {
		for _, s := range runs[it] {
			if s.token == b.Token && !s.ok {
				t.Errorf("item %s: the run from before SIGHUP did not end normally", it)
			}
		}
	}
	out := r.out.String()
	for _, bad := range []string{"lease lost", "configuration not reloaded"} {
		if strings.Contains(out, bad) {
			t.Errorf("runner logged %q:\n%s", bad, clip(out))
		}
	}
	if !strings.Contains(out, "SIGHUP: configuration reloaded") {
		t.Errorf("runner did not log the reload:\n%s", clip(out))
	}
}

// execEnv is a pool with items on the test's Redis for runner exec, and the
// environment that names it.
func execEnv(t *testing.T, items ...string) (e *e2eEnv, args []string, env []string) {
	t.Helper()
	e = newE2E(t)
	env = []string{"REDIS_ADDR=" + e.addr}
	res := runnerCmd(t, procOpts{env: []string{"RUNNER_REDIS_ADDR=" + e.addr, "RUNNER_POOL_PREFIX=" + e.prefix}}, append([]string{"pool", "add"}, items...)...)
	if res.code != 0 {
		t.Fatalf("pool add: exit %d: %s", res.code, res.out)
	}
	return e, []string{"exec", "--pool", poolName, "--prefix", e.prefix}, env
}

// TestE2EExecExitCodes: runner exec exits with its command's code.
func TestE2EExecExitCodes(t *testing.T) {
	parallel(t)
	_, args, env := execEnv(t, "only")
	for _, want := range []int{0, 1, 42} {
		res := runnerCmd(t, procOpts{env: env}, append(args, "--item", "only", "--", "sh", "-c", `echo "$RUNNER_ITEM"; exit `+strconv.Itoa(want))...)
		if res.code != want || res.stdout != "only\n" {
			t.Errorf("exec exit %d: got exit %d, stdout %q:\n%s", want, res.code, res.stdout, res.out)
		}
	}
	// Not in the pool: refused with 2.
	if res := runnerCmd(t, procOpts{env: env}, append(args, "--item", "absent", "--", "true")...); res.code != 2 {
		t.Errorf("exec on an absent item: exit %d, want 2:\n%s", res.code, res.out)
	}
}

// TestE2EExecKilledWhenLeaseStolen: when exec's lease is taken from it
// (its lock overwritten), the command's process group is killed before
// the lease could have expired, and exec exits 1 saying so.
func TestE2EExecKilledWhenLeaseStolen(t *testing.T) {
	parallel(t)
	e, args, env := execEnv(t, "victim")
	pidFile := filepath.Join(t.TempDir(), "pid")
	r := startProc(t, "exec", procOpts{env: env}, append(args, "--item", "victim", "--lease-ttl", "3s", "--",
		"sh", "-c", `sleep 60 & echo $! > "$0"; wait`, pidFile)...)
	waitFor(t, "the command started", 20*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(pidFile)
		return len(b) > 0, "no pid file"
	})
	b, _ := os.ReadFile(pidFile)
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	stolen := time.Now()
	if err := e.client.Set(callCtx(t), e.lockKey("victim"), "thief#1", 10*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	// Lost at the next refresh (every 1s); killed within kill_grace.
	code := r.wait(10*time.Second + redistest.Slack())
	took := time.Since(stolen)
	t.Logf("exec exited %v after the theft (%s)", took.Round(time.Millisecond), redistest.SchedDelay())
	if code != 1 || !strings.Contains(r.stderr.String(), "lease on victim was lost") {
		t.Errorf("exit %d, want 1 saying the lease was lost:\n%s", code, r.out.String())
	}
	if err := syscall.Kill(child, 0); err == nil {
		t.Errorf("the command's child %d still runs after exec exited", child)
	}
}

// TestE2ECompletionScripts: completion scripts come out for bash, zsh and
// fish (bash's parses), and an unknown shell is a usage error.
func TestE2ECompletionScripts(t *testing.T) {
	parallel(t)
	for shell, want := range map[string]string{"bash": "complete -o default -F __start_runner runner", "zsh": "#compdef runner", "fish": "complete -c runner"} {
		code, stdout, stderr := runnerCmd(t, procOpts{}, "completion", shell).split()
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("completion %s: exit %d, stderr %q, script lacks %q", shell, code, stderr, want)
		}
		if shell == "bash" {
			check := exec.Command("bash", "-n")
			check.Stdin = strings.NewReader(stdout)
			if out, err := check.CombinedOutput(); err != nil {
				t.Errorf("bash -n on the bash completion: %v: %s", err, out)
			}
		}
	}
	if res := runnerCmd(t, procOpts{}, "completion", "tcsh"); res.code != 2 {
		t.Errorf("completion tcsh: exit %d, want 2", res.code)
	}
}

// TestE2EPoolTableOddNames: pool list is an aligned table in which names
// with spaces, control characters or non-ASCII show the same way as
// everywhere (displayName); pool remove counts what it removed; pool
// status in loop mode says nothing of a batch.
func TestE2EPoolTableOddNames(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	cfg := e.config("table", nil, "", time.Second)
	names := []string{"plain", "with space", "tab\there", "esc\x1b[31mred", `"quoted"`, "ünïcödé", "-rf", "a-very-long-item-name-that-sets-the-column-width"}
	if res := runnerCmd(t, procOpts{}, append([]string{"pool", "add", "-c", cfg, "--"}, names...)...); res.code != 0 {
		t.Fatalf("pool add: %d %s", res.code, res.out)
	}
	code, stdout, stderr := runnerCmd(t, procOpts{}, "pool", "list", "-c", cfg).split()
	if code != 0 {
		t.Fatalf("pool list: exit %d: %s", code, stderr)
	}
	rows := lines(stdout)
	if len(rows) != 1+len(names) || !strings.HasPrefix(rows[0], "ITEM ") {
		t.Fatalf("pool list: want a header and %d rows:\n%s", len(names), stdout)
	}
	col := strings.Index(rows[0], "STATUS")
	for _, row := range rows[1:] {
		// Every name displayed is ASCII but ünïcödé, whose runes are
		// wider in bytes: compare in runes.
		if r := []rune(row); len(r) <= col || r[col-1] != ' ' || !strings.HasPrefix(string(r[col:]), "free") {
			t.Errorf("row not aligned under STATUS (col %d): %q", col, row)
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(rows[1:], func(r string) bool { return strings.HasPrefix(r, displayName(n)+"  ") }) {
			t.Errorf("no row for %q shown as %s", n, displayName(n))
		}
		if strings.ContainsAny(displayName(n), "\t\x1b") {
			t.Errorf("displayName(%q) = %q holds a control character", n, displayName(n))
		}
	}
	if strings.Contains(stdout, ` "" `) {
		t.Errorf("pool list prints \"\" for an empty owner:\n%s", stdout)
	}
	// --jsonl: one object per line, names exact.
	code, stdout, _ = runnerCmd(t, procOpts{}, "pool", "list", "--jsonl", "-c", cfg).split()
	var got []string
	for _, l := range lines(stdout) {
		var in itemInfo
		if err := json.Unmarshal([]byte(l), &in); err != nil {
			t.Fatalf("pool list --jsonl line %q: %v", l, err)
		}
		got = append(got, in.Item)
	}
	if code != 0 || !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(names))) {
		t.Errorf("pool list --jsonl: exit %d, items %q", code, got)
	}
	// pool remove counts what Redis removed.
	code, stdout, _ = runnerCmd(t, procOpts{}, "pool", "remove", "-c", cfg, "--", "plain", "with space", "nonexistent").split()
	if code != 0 || stdout != "2 items removed\n" {
		t.Errorf("pool remove of 2 members and 1 stranger: exit %d, stdout %q; want \"2 items removed\"", code, stdout)
	}
	code, stdout, _ = runnerCmd(t, procOpts{}, "pool", "status", "-c", cfg).split()
	if code != 0 || strings.Contains(stdout, "batch") || !regexp.MustCompile(`(?m)^free +6$`).MatchString(stdout) {
		t.Errorf("pool status in loop mode: exit %d, want 6 free and no batch line:\n%s", code, stdout)
	}
}

// TestE2EPoolStatusCountsHoldsApart: pool status and pool list tell a
// lease, a cooldown, a quarantine and a foreign lock apart, by the value
// each item's lock holds (states made with the library, as a runner would).
func TestE2EPoolStatusCountsHoldsApart(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	items := []string{"free", "leased", "cooling", "quarantined", "foreign"}
	cfg := e.config("holds", nil, "", time.Second)
	if res := runnerCmd(t, procOpts{}, append([]string{"pool", "add", "-c", cfg, "--"}, items...)...); res.code != 0 {
		t.Fatalf("pool add: %d %s", res.code, res.out)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx := t.Context()
	lp, err := lock.NewRedisLockPool(e.client, lock.Config{Prefix: e.prefix, Suffix: poolName})
	must(err)
	a, err := allocator.NewRedis(lp, allocator.Config{LeaseTTL: time.Minute})
	must(err)
	defer a.Close()
	must(a.Sync(ctx))
	take := func(item string) *allocator.Lease {
		l, err := a.TryAcquire(ctx, "test", allocator.AcquireOptions{Prefer: item, Exact: true})
		must(err)
		return l
	}
	take("leased")
	must(take("cooling").Cooldown(ctx, time.Minute))
	must(take("quarantined").Quarantine(ctx, time.Minute))
	if ok, err := lp.Lock(ctx, "foreign", "someone", time.Minute); err != nil || !ok {
		t.Fatalf("Lock(foreign) = %v, %v", ok, err)
	}

	code, stdout, stderr := runnerCmd(t, procOpts{}, "pool", "status", "--json", "-c", cfg).split()
	if code != 0 {
		t.Fatalf("pool status: exit %d: %s", code, stderr)
	}
	var st statusReport
	must(json.Unmarshal([]byte(stdout), &st))
	if st.Items != 5 || st.Free != 1 || st.Leased != 1 || st.Cooldown != 1 || st.Quarantine != 1 || st.Locked != 1 {
		t.Errorf("pool status --json counts %+v; want 1 of each of 5 states:\n%s", st, stdout)
	}
	code, stdout, stderr = runnerCmd(t, procOpts{}, "pool", "list", "--jsonl", "-c", cfg).split()
	if code != 0 {
		t.Fatalf("pool list: exit %d: %s", code, stderr)
	}
	want := map[string]string{"free": "free", "leased": "leased", "cooling": "cooldown", "quarantined": "quarantine", "foreign": "locked"}
	for _, l := range lines(stdout) {
		var in itemInfo
		must(json.Unmarshal([]byte(l), &in))
		if in.Status != want[in.Item] {
			t.Errorf("pool list: %s is %q, want %q", in.Item, in.Status, want[in.Item])
		}
	}
}
