package main

// Security end to end, through the real runner binary: passwords and ACL
// users, TLS (server-verified and mutual), secrets kept out of the logs,
// and the least-privilege ACL rule of the README. Servers that need a
// password or speak only TLS come from redistest.StartServerWith.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
	"github.com/lockpool/lockpool/pkg/keyspace"
)

// aclCommands is the least a runner needs, for "runner run" in loop and
// batch mode and for every "runner pool" subcommand. Everything else is
// denied, notably KEYS, SCAN, FLUSHALL, FLUSHDB, CONFIG, SCRIPT and
// FUNCTION: commands without key arguments pass any key pattern, so a
// category such as +@write (which holds FLUSHALL) would let a user
// limited to one prefix empty the whole server. Commands called by the
// runner's Lua scripts are checked against the same list.
var aclCommands = []string{
	"+ping",             // the runner's connect loop, /healthz, pub/sub health checks
	"+eval", "+evalsha", // every script (go-redis sends EVALSHA, then EVAL on NOSCRIPT)
	"+ssubscribe", "+spublish", // allocator wake-ups (sharded pub/sub: SPUBLISH from release.lua and sync.lua)
	"+pubsub|shardnumsub", // sync.lua: forget waiters of processes that are gone
	"+info",               // the dataset check in every script (INFO replication, server, stats) and the start-up check of eviction settings
	"+time",               // server time, in scripts and in "pool status"
	"+get", "+set", "+del", "+exists", "+type", "+pttl", "+pexpire", "+persist", "+rename", "+incr",
	"+hget", "+hset", "+hdel", "+hincrby", "+hmget", "+hgetall", "+hrandfield",
	"+sadd", "+srem", "+scard", "+sismember", "+smismember", "+smove", "+sscan", "+srandmember", "+sunionstore",
	"+zadd", "+zrem", "+zcard", "+zrange", "+zscore", "+zpopmin", "+zscan", "+zrandmember",
}

// aclRules are the ACL rules of a runner user limited to the given key and
// channel patterns, with the commands of aclCommands.
func aclRules(patterns ...string) []any {
	var rules []any
	for _, p := range slices.Concat(patterns, aclCommands) {
		rules = append(rules, p)
	}
	return rules
}

// TestE2ESecurityPasswordAuth runs batches through a server with
// requirepass, as the default user (password from RUNNER_REDIS_PASSWORD)
// and as an ACL user (user name and password from the file); with a wrong
// password the runner logs one line per retry and "pool status" exits 1
// with a one-line error, neither quoting the password.
func TestE2ESecurityPasswordAuth(t *testing.T) {
	t.Parallel()
	const (
		rightPw = "Right-Pw-5e2c91"
		userPw  = "User-Pw-a7d0f3"
		wrongPw = "Wrong-Pw-0b44e8"
	)
	srv := redistest.StartServerWith(t, redistest.ServerOptions{Password: rightPw})
	const user = "runner-user"
	aclUser(t, srv.Client(t), user, userPw, aclRules("~acl-app|*", "&acl-app|*")...)
	secrets := []string{rightPw, userPw, wrongPw}

	for _, tc := range []struct {
		name, prefix, username, password string
		viaEnv                           bool
	}{
		{name: "requirepass", prefix: "pw-app", password: rightPw, viaEnv: true},
		{name: "acl user", prefix: "acl-app", username: user, password: userPw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			var env []string
			auth := fmt.Sprintf("  username: %q\n", tc.username)
			if tc.viaEnv {
				env = []string{"RUNNER_REDIS_PASSWORD=" + tc.password}
			} else {
				auth += fmt.Sprintf("  password: %q\n", tc.password)
			}
			cfg := writeFile(t, "", "auth.yaml", fmt.Sprintf(`redis:
  addr: %q
%spool:
  prefix: %q
  items: [a, b, c]
task:
  command: ["true"]
mode: batch
batch:
  id: auth
`, srv.Addr, auth, tc.prefix))
			run, status := secBatch(t, env, cfg, "auth: 3 done, 0 failed, 0 pending of 3")
			assertNoSecret(t, "runner output", run+status, secrets...)
		})
	}

	for _, tc := range []struct{ name, username string }{
		{name: "wrong password", username: ""},
		{name: "wrong acl password", username: user},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			cfg := writeFile(t, "", "wrong.yaml", fmt.Sprintf(`redis:
  addr: %q
  username: %q
  password: %q
pool:
  prefix: wrong-app
  items: [a]
task:
  command: ["true"]
`, srv.Addr, tc.username, wrongPw))
			// "pool status" gets the password from the environment: neither
			// way may show.
			run, status := secRefused(t, cfg, []string{"RUNNER_REDIS_PASSWORD=" + wrongPw}, regexp.MustCompile(`\bWRONGPASS\b`))
			assertNoSecret(t, "runner logs", run, secrets...)
			assertNoSecret(t, "pool status", status, secrets...)
		})
	}
}

// TestE2ESecurityTLS runs batches over TLS against TLS-only servers
// (--port 0), verifying the server with ca_file, and with a client
// certificate where the server demands one. A runner that trusts another
// CA, or offers no certificate where one is required, logs one line per
// retry and never gets in. The client key appears in no log line, nor in
// /status or /metrics.
func TestE2ESecurityTLS(t *testing.T) {
	parallel(t)
	p := newTestPKI(t)
	optional := redistest.StartServerWith(t, redistest.ServerOptions{TLS: p.clientTLS(true), Args: p.serverArgs("optional")})
	mutual := redistest.StartServerWith(t, redistest.ServerOptions{TLS: p.clientTLS(true), Args: p.serverArgs("yes")})
	keyLines := p.keyBodyLines(t)
	var mu sync.Mutex
	var shown []string // every output the runners produced, for the key check
	show := func(s string) { mu.Lock(); shown = append(shown, s); mu.Unlock() }
	tlsYAML := func(ca string, withCert bool) string {
		s := fmt.Sprintf("  tls:\n    enabled: true\n    ca_file: %q\n", ca)
		if withCert {
			s += fmt.Sprintf("    cert_file: %q\n    key_file: %q\n", p.clientCert, p.clientKey)
		}
		return s
	}

	// The subtests run one after another, in this test's place: each
	// takes a second or two, and parallel ones would queue for places of
	// their own behind the package's other tests, keeping this one, and
	// its key check, waiting.
	t.Run("batch", func(t *testing.T) {
		for _, tc := range []struct {
			name     string
			srv      *redistest.Server
			withCert bool
		}{
			{"server verified", optional, false},
			{"mutual", mutual, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cfg := writeFile(t, "", "tls.yaml", fmt.Sprintf(`redis:
  addr: %q
%spool:
  prefix: tls-batch
  items: [a, b, c, d]
task:
  command: ["true"]
mode: batch
batch:
  id: over-tls
log:
  level: debug
`, tc.srv.Addr, tlsYAML(p.caFile, tc.withCert)))
				run, status := secBatch(t, nil, cfg, "over-tls: 4 done, 0 failed, 0 pending of 4")
				show(run)
				show(status)
			})
		}
	})

	t.Run("mutual loop with admin", func(t *testing.T) {
		cfg := writeFile(t, "", "tls-loop.yaml", fmt.Sprintf(`redis:
  addr: %q
%spool:
  prefix: tls-loop
  items: [a, b]
worker:
  concurrency: 2
task:
  command: ["sleep", "0.05"]
admin:
  listen: 127.0.0.1:0
log:
  level: trace
`, mutual.Addr, tlsYAML(p.caFile, true)))
		r := startRunner(t, "runner", nil, "run", "-c", cfg)
		base := r.adminBase()
		waitFor(t, "task runs over mutual TLS", 30*time.Second, r.untilSucceeded(4))
		for _, path := range []string{"/status", "/metrics", "/healthz"} {
			code, body := httpGet(t, base+path)
			show(body)
			if code != 200 {
				t.Errorf("GET %s = %d, want 200; body:\n%s", path, code, body)
			}
		}
		r.signal(syscall.SIGTERM)
		code := r.wait(20 * time.Second)
		show(r.out.String())
		if code != 0 {
			t.Fatalf("runner exited %d after SIGTERM, want 0", code)
		}
	})

	// Refused: the runner retries, one line per attempt, and never gets in.
	for _, tc := range []struct {
		name     string
		srv      *redistest.Server
		ca       string
		withCert bool
		want     *regexp.Regexp
	}{
		{"wrong CA", optional, p.otherCAFile, true, regexp.MustCompile(`x509: certificate signed by unknown authority`)},
		{"no client certificate", mutual, p.caFile, false, regexp.MustCompile(`tls: certificate required|connection reset by peer|broken pipe|EOF`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := "tls-refused-" + strings.ReplaceAll(tc.name, " ", "-")
			cfg := writeFile(t, "", "tls-refused.yaml", fmt.Sprintf(`redis:
  addr: %q
%spool:
  prefix: %q
  items: [a]
task:
  command: ["true"]
`, tc.srv.Addr, tlsYAML(tc.ca, tc.withCert), prefix))
			run, status := secRefused(t, cfg, nil, tc.want)
			show(run)
			show(status)
			n, err := tc.srv.Client(t).Exists(context.Background(), keyspace.New(prefix, poolName).Members()).Result()
			if err != nil || n != 0 {
				t.Errorf("pool set of the refused runner: exists = %d, %v; want 0 (it must never have connected)", n, err)
			}
		})
	}

	if t.Failed() {
		return
	}
	all := strings.Join(shown, "\n")
	if len(shown) < 12 {
		t.Fatalf("the key check saw %d outputs, want 12: a subtest was skipped", len(shown))
	}
	for _, l := range keyLines {
		if strings.Contains(all, l) {
			t.Errorf("a line of the client key's PEM body appears in the runner's output or admin endpoint: %q", l)
		}
	}
	if strings.Contains(all, "PRIVATE KEY") {
		t.Errorf("a PEM private key header appears in the runner's output or admin endpoint")
	}
}

// TestE2ESecurityACLPrefixUser runs everything a runner does as a user
// that may touch only its pool's keys and channels and run only
// aclCommands: batch and loop mode (with more workers than items, so
// releases publish wake-ups) and every pool subcommand. Redis's ACL log
// must show no denial for it; then keys, channels and commands outside the
// rule are shown to be denied, so the rule is really limiting.
func TestE2ESecurityACLPrefixUser(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		patterns func(prefix string) []string
		onePool  bool // other pools under the prefix are denied too
	}{
		// One user per application: every pool under the prefix.
		{"prefix", func(p string) []string { return []string{"~" + p + "|*", "&" + p + "|*"} }, false},
		// One user per pool (pool.name lock-pool).
		{"pool", func(p string) []string {
			return []string{"~" + p + "|lock-pool:*", "~" + p + "|lock-pool|*", "&" + p + "|lock-pool|alloc:wake:*"}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			e := newE2E(t)
			ctx := context.Background()
			const password = "Acl-Pw-63b1e0"
			user := e.userName("runner-acl")
			aclUser(t, e.client, user, password, aclRules(tc.patterns(e.prefix)...)...)
			cfg := writeFile(t, "", "acl.yaml", fmt.Sprintf(`redis:
  addr: %q
  username: %q
  password: %q
pool:
  prefix: %q
worker:
  concurrency: 4
task:
  command: ["true"]
batch:
  id: acl
`, e.addr, user, password, e.prefix))
			run := func(want string, args ...string) string {
				t.Helper()
				res := runnerCmd(t, procOpts{}, args...)
				if res.code != 0 || !strings.Contains(res.out, want) {
					t.Fatalf("runner %s as the ACL user exited %d, want 0 with %q; output:\n%s", strings.Join(args, " "), res.code, want, res.out)
				}
				return res.out
			}
			run("3 items added", "pool", "add", "-c", cfg, "a", "b", "c")
			run("batch complete", "run", "-c", cfg, "--mode", "batch")
			run("acl: 3 done, 0 failed, 0 pending of 3", "pool", "status", "-c", cfg, "--mode", "batch")
			run("\nc ", "pool", "list", "-c", cfg)

			loop := startRunner(t, "runner-loop", nil, "run", "-c", cfg)
			waitFor(t, "loop-mode runs as the ACL user", 30*time.Second, loop.untilSucceeded(8))
			loop.signal(syscall.SIGTERM)
			if code := loop.wait(20 * time.Second); code != 0 || !strings.Contains(loop.out.String(), "drained: every lease released") {
				t.Fatalf("loop runner as the ACL user exited %d, want 0 and drained; output:\n%s", code, loop.out.String())
			}

			run("1 items removed", "pool", "remove", "-c", cfg, "c")
			run("2 items set as the pool", "pool", "set", "-c", cfg, "x", "y")
			run(`"y"`, "pool", "list", "-c", cfg, "--json")
			run(`"items": 2`, "pool", "status", "-c", cfg, "--json")
			run("pool cleared", "pool", "clear", "-c", cfg)

			// DBSIZE is denied on purpose: "pool status" then counts locks
			// by walking the pool's members instead of SCANning the
			// keyspace, and SCAN would show the user every key name.
			if denied := aclDenials(t, e.client, user, "dbsize"); len(denied) > 0 {
				t.Fatalf("Redis denied the runner's ACL user (add the command, key or channel to the rule):\n%s", strings.Join(denied, "\n"))
			}

			// The rule limits: the same user outside its pool.
			c := redis.NewClient(&redis.Options{Addr: e.addr, Username: user, Password: password, ContextTimeoutEnabled: true})
			t.Cleanup(func() { c.Close() })
			outside := strings.TrimSuffix(e.prefix, ":") + "-other|lock-pool:a" // another application's lock
			if err := e.client.Set(ctx, outside, "x", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			inside := e.prefix + "|lock-pool:probe"
			if err := c.Get(ctx, inside).Err(); !errors.Is(err, redis.Nil) {
				t.Errorf("GET %q inside the pool as the ACL user: %v, want redis.Nil", inside, err)
			}
			for what, err := range map[string]error{
				"GET outside":                 c.Get(ctx, outside).Err(),
				"SET outside":                 c.Set(ctx, outside, "y", 0).Err(),
				"DEL outside":                 c.Del(ctx, outside).Err(),
				"PUBLISH outside":             c.Publish(ctx, "other-app|alloc:wake:x", "1").Err(),
				"EVAL with an outside key":    c.Eval(ctx, "return redis.call('GET', KEYS[1])", []string{outside}).Err(),
				"EVAL reaching outside (Lua)": c.Eval(ctx, "return redis.call('GET', ARGV[1])", []string{inside}, outside).Err(),
				"EVAL calling DBSIZE (Lua)":   c.Eval(ctx, "return redis.call('DBSIZE')", []string{inside}).Err(),
			} {
				// Denials inside a script are ERR "The user executing the script can't ...".
				if err == nil || !strings.Contains(err.Error(), "NOPERM") && !strings.Contains(err.Error(), "user executing the script can't") {
					t.Errorf("%s as the ACL user: %v, want it denied", what, err)
				}
			}
			otherPool := e.prefix + "|other-pool:a"
			if err := c.Get(ctx, otherPool).Err(); tc.onePool != (err != nil && strings.Contains(err.Error(), "NOPERM")) {
				t.Errorf("GET %q (another pool under the prefix) as the ACL user: %v; want it denied: %v", otherPool, err, tc.onePool)
			}
			if v, err := e.client.Get(ctx, outside).Result(); v != "x" || err != nil {
				t.Errorf("the outside key changed: %q, %v", v, err)
			}
			// Destructive or revealing commands without key arguments,
			// which no key pattern can stop: asked as a dry run, never run.
			for _, cmd := range [][]any{
				{"FLUSHALL"}, {"FLUSHDB"}, {"KEYS", "*"}, {"SCAN", "0"}, {"RANDOMKEY"}, {"DBSIZE"},
				{"CONFIG", "SET", "maxmemory", "1"}, {"SCRIPT", "FLUSH"}, {"FUNCTION", "FLUSH"},
				{"SWAPDB", "0", "1"}, {"SHUTDOWN"}, {"ACL", "SETUSER", "x"}, {"CLIENT", "KILL", "ID", "1"},
				{"MONITOR"}, {"PUBSUB", "CHANNELS"}, {"PUBSUB", "SHARDCHANNELS"}, {"SELECT", "1"},
			} {
				args := append([]any{"ACL", "DRYRUN", user}, cmd...)
				res, err := e.client.Do(ctx, args...).Text()
				if err != nil || !strings.Contains(res, "no permissions") {
					t.Errorf("ACL DRYRUN %v for the runner's user: %q, %v; want it denied", cmd, res, err)
				}
			}
		})
	}
}

// ---- helpers ----

// secBatch runs the batch of cfg to its end, wanting exit 0 and "batch
// complete", then "pool status", wanting exit 0 and the batch reported as
// want. It returns the output of both.
func secBatch(t *testing.T, env []string, cfg, want string) (run, status string) {
	t.Helper()
	r := runnerCmd(t, procOpts{env: env}, "run", "-c", cfg)
	if r.code != 0 || !strings.Contains(r.out, "batch complete") {
		t.Fatalf("runner run exited %d, want 0 with \"batch complete\"; output:\n%s", r.code, r.out)
	}
	st := runnerCmd(t, procOpts{env: env}, "pool", "status", "-c", cfg)
	if st.code != 0 || !strings.Contains(st.out, want) {
		t.Fatalf("pool status exited %d, want 0 and %q; output:\n%s", st.code, want, st.out)
	}
	return r.out, st.out
}

// secRefused runs the runner with cfg, which Redis refuses: it must retry,
// one line per attempt with an error matching want, never get in, and
// exit 0 on SIGTERM. Then "pool status" (with statusEnv) must fail with
// one line matching want. It returns the output of both.
func secRefused(t *testing.T, cfg string, statusEnv []string, want *regexp.Regexp) (run, status string) {
	t.Helper()
	r := startRunner(t, "runner", nil, "run", "-c", cfg)
	waitRetries(t, r, 3, want)
	r.signal(syscall.SIGTERM)
	code := r.wait(10 * time.Second)
	run = r.out.String()
	if code != 0 {
		t.Fatalf("runner stopped while retrying exited %d, want 0; output:\n%s", code, run)
	}
	for _, s := range []string{"redis answers", "pool items added", "runner started"} {
		if strings.Contains(run, s) {
			t.Errorf("the runner got in (%q logged); output:\n%s", s, run)
		}
	}
	st := runnerCmd(t, procOpts{env: statusEnv}, "pool", "status", "-c", cfg)
	assertOneLineError(t, "pool status", st, want)
	return run, st.out
}

// waitRetries waits for n "redis not reachable, retrying" lines and checks
// that each is one whole line, numbered in order, whose error matches want.
func waitRetries(t *testing.T, r *runnerProc, n int, want *regexp.Regexp) {
	t.Helper()
	retries := func() []string {
		var out []string
		for _, l := range r.out.lines() {
			if strings.Contains(l, "redis not reachable, retrying") {
				out = append(out, l)
			}
		}
		return out
	}
	waitFor(t, fmt.Sprintf("%d retry lines from %s", n, r.name), 30*time.Second, func() (bool, string) {
		got := retries()
		return len(got) >= n, fmt.Sprintf("%d: %q", len(got), got)
	})
	// Nothing else may interleave, such as go-redis's own logger writing
	// the same error to stderr again.
	for _, l := range r.out.lines() {
		if !hclogLine.MatchString(l) {
			t.Errorf("%s wrote a line that is not the runner's log format: %q", r.name, l)
		}
	}
	for i, l := range retries() {
		if !strings.Contains(l, fmt.Sprintf(" attempt=%d ", i+1)) || !want.MatchString(l) || !strings.Contains(l, `error="`) || !strings.HasSuffix(l, `"`) {
			t.Errorf("retry line %d is not one line with attempt=%d and an error matching %q:\n%s\n--- output:\n%s", i+1, i+1, want, l, r.out.String())
		}
	}
}

// assertOneLineError checks a failed one-shot command: exit 1 and a single
// "runner: ..." line matching want.
func assertOneLineError(t *testing.T, what string, res cmdResult, want *regexp.Regexp) {
	t.Helper()
	code, out := res.code, strings.TrimSuffix(res.out, "\n")
	if code != 1 || strings.Contains(out, "\n") || !strings.HasPrefix(out, "runner: ") || !want.MatchString(out) {
		t.Errorf("%s: exit %d with %q; want exit 1 and one \"runner: ...\" line matching %q", what, code, out, want)
	}
}

// aclDenials returns Redis's ACL log entries for user, one line each,
// but for denied commands named in expected.
func aclDenials(t *testing.T, c *redis.Client, user string, expected ...string) []string {
	t.Helper()
	entries, err := c.Do(context.Background(), "ACL", "LOG", "128").Slice()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, entry := range entries {
		fields := map[string]string{}
		switch e := entry.(type) {
		case map[any]any: // RESP3
			for k, v := range e {
				fields[fmt.Sprint(k)] = fmt.Sprint(v)
			}
		case []any: // RESP2: name, value, ...
			for i := 0; i+1 < len(e); i += 2 {
				fields[fmt.Sprint(e[i])] = fmt.Sprint(e[i+1])
			}
		}
		if fields["username"] == user && !(fields["reason"] == "command" && slices.Contains(expected, fields["object"])) {
			out = append(out, fmt.Sprintf("reason=%s context=%s object=%q", fields["reason"], fields["context"], fields["object"]))
		}
	}
	return out
}

// ---- test certificates ----

// testPKI is a CA with a server certificate (127.0.0.1, ::1, localhost)
// and a client certificate, and another CA that signed nothing of ours.
// Keys are ECDSA P-256 in PKCS #8 PEM files.
type testPKI struct {
	dir                   string
	caFile, otherCAFile   string
	serverCert, serverKey string
	clientCert, clientKey string
	caPool                *x509.CertPool
	clientPair            tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(p.dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	serial := func() *big.Int {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	sign := func(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) (*x509.Certificate, []byte) {
		tmpl.SerialNumber = serial()
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return cert, der
	}
	caTemplate := func(cn string) *x509.Certificate {
		return &x509.Certificate{
			Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		}
	}

	caKey := newKey()
	ca, caDER := sign(caTemplate("lockpool test CA"), nil, &caKey.PublicKey, caKey)
	p.caFile = write("ca.pem", "CERTIFICATE", caDER)
	otherKey := newKey()
	_, otherDER := sign(caTemplate("some other CA"), nil, &otherKey.PublicKey, otherKey)
	p.otherCAFile = write("other-ca.pem", "CERTIFICATE", otherDER)

	serverKey := newKey()
	_, serverDER := sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "redis test server"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &serverKey.PublicKey, caKey)
	p.serverCert = write("server.pem", "CERTIFICATE", serverDER)
	p.serverKey = write("server-key.pem", "PRIVATE KEY", keyDER(serverKey))

	clientKey := newKey()
	_, clientDER := sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "runner"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, &clientKey.PublicKey, caKey)
	p.clientCert = write("client.pem", "CERTIFICATE", clientDER)
	p.clientKey = write("client-key.pem", "PRIVATE KEY", keyDER(clientKey))

	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(ca)
	pair, err := tls.LoadX509KeyPair(p.clientCert, p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	p.clientPair = pair
	return p
}

// serverArgs are redis-server's TLS arguments; authClients is
// --tls-auth-clients (yes, optional).
func (p *testPKI) serverArgs(authClients string) []string {
	return []string{"--tls-cert-file", p.serverCert, "--tls-key-file", p.serverKey,
		"--tls-ca-cert-file", p.caFile, "--tls-auth-clients", authClients}
}

// clientTLS is the test's own TLS client configuration.
func (p *testPKI) clientTLS(withCert bool) *tls.Config {
	c := &tls.Config{RootCAs: p.caPool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if withCert {
		c.Certificates = []tls.Certificate{p.clientPair}
	}
	return c
}

// keyBodyLines are the base64 lines of the client key's PEM file.
func (p *testPKI) keyBodyLines(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "-----") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		t.Fatalf("no base64 body in %s", p.clientKey)
	}
	return lines
}
