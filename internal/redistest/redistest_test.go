package redistest_test

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
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/redistest"
)

func TestMain(m *testing.M) {
	// Most tests here wait for Redis (replication, Sentinel failovers,
	// cluster gossip) rather than use CPU: unless -parallel was given, run
	// them all at once instead of GOMAXPROCS at a time.
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", "16")
	}
	redistest.Main(m)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestSharedPing(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	if got, err := c.Ping(ctx(t)).Result(); err != nil || got != "PONG" {
		t.Fatalf("PING = %q, %v", got, err)
	}
	if c.Options().Addr != redistest.Addr(t) || !c.Options().ContextTimeoutEnabled {
		t.Fatalf("unexpected client options: addr %q, ContextTimeoutEnabled %v", c.Options().Addr, c.Options().ContextTimeoutEnabled)
	}
}

func TestPrefixUnique(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		p := redistest.Prefix(t)
		if seen[p] {
			t.Fatalf("Prefix returned %q twice", p)
		}
		seen[p] = true
	}
	t.Run("sub/with spaces{and}:colons", func(t *testing.T) {
		p := redistest.Prefix(t)
		if !strings.HasSuffix(p, ":") || strings.ContainsAny(p, " /{}") || !strings.Contains(p, "TestPrefixUnique_sub_with_spaces") {
			t.Fatalf("badly sanitised prefix %q", p)
		}
	})
}

func TestPrefixIsolatesKeys(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	a, b := redistest.Prefix(t), redistest.Prefix(t)
	if err := c.Set(ctx(t), a+"k", "a", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx(t), b+"k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET under other prefix: err = %v, want redis.Nil", err)
	}
	if got, err := c.Get(ctx(t), a+"k").Result(); err != nil || got != "a" {
		t.Fatalf("GET = %q, %v", got, err)
	}
}

func TestServerTime(t *testing.T) {
	t.Parallel()
	st := redistest.ServerTime(t, redistest.Client(t))
	if d := time.Since(st); d > 5*time.Second || d < -5*time.Second {
		t.Fatalf("server time %v too far from local time %v", st, time.Now())
	}
}

func TestStartServerRestartLosesData(t *testing.T) {
	t.Parallel()
	s := redistest.StartServer(t)
	addr := s.Addr
	c := s.Client(t)
	key := redistest.Prefix(t) + "k"
	if err := c.Set(ctx(t), key, "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	s.Restart()
	if s.Addr != addr {
		t.Fatalf("Addr changed across Restart: %s -> %s", addr, s.Addr)
	}
	if err := c.Get(ctx(t), key).Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET after restart: err = %v, want redis.Nil (data should be lost)", err)
	}

	s.Stop()
	if err := dial(addr); err == nil {
		t.Fatalf("server still accepts connections on %s after Stop", addr)
	}
	s.Stop() // idempotent
	s.Restart()
	if err := c.Ping(ctx(t)).Err(); err != nil {
		t.Fatalf("PING after Stop+Restart: %v", err)
	}
}

func TestStartServerExtraArgs(t *testing.T) {
	t.Parallel()
	s := redistest.StartServer(t, "--maxmemory", "1mb")
	got, err := s.Client(t).ConfigGet(ctx(t), "maxmemory").Result()
	if err != nil || got["maxmemory"] != "1048576" {
		t.Fatalf("CONFIG GET maxmemory = %v, %v", got, err)
	}
}

func TestServerStoppedOnCleanup(t *testing.T) {
	t.Parallel()
	var addr string
	t.Run("owner", func(t *testing.T) {
		s := redistest.StartServer(t)
		addr = s.Addr
		if err := dial(addr); err != nil {
			t.Fatalf("server not reachable: %v", err)
		}
	})
	if err := dial(addr); err == nil {
		t.Fatalf("server on %s still running after its test's cleanup", addr)
	}
}

// fatalRecorder captures Fatalf instead of failing the real test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestStartServerReportsOutputOnFailure(t *testing.T) {
	t.Parallel()
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		redistest.StartServer(rec, "--no-such-directive", "1")
	}()
	<-done
	if !strings.Contains(rec.msg, "redis-server output") || !strings.Contains(rec.msg, "no-such-directive") {
		t.Fatalf("failure message lacks redis-server output:\n%s", rec.msg)
	}
}

// The tests below re-run this test binary with a controlled environment.

const helperEnv = "REDISTEST_HELPER"

// TestHelperProcess is the body of the subprocesses; it does nothing in a
// normal run.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return
	}
	addr := redistest.Addr(t)
	if want := os.Getenv("WANT_ADDR"); want != "" && addr != want {
		t.Fatalf("Addr = %q, want %q", addr, want)
	}
	if err := redistest.Client(t).Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	fmt.Println("HELPER-OK", addr)
}

func runHelper(t *testing.T, env ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHelperProcess$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	// No redis-server on PATH and no Docker daemon in the child (later
	// entries override earlier ones).
	cmd.Env = append(cmd.Env, helperEnv+"=1", "PATH="+t.TempDir(), "DOCKER_HOST=unix:///nonexistent/docker.sock")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("helper took %v", time.Since(start).Round(time.Millisecond))
	return string(out), err
}

func TestNoRedisFailsWithHowTo(t *testing.T) {
	t.Parallel()
	out, err := runHelper(t, "REDIS_ADDR=")
	if err == nil {
		t.Fatalf("helper succeeded without any Redis:\n%s", out)
	}
	for _, want := range []string{"--- FAIL: TestHelperProcess", "set REDIS_ADDR=host:port", "install redis-server", "Docker daemon"} {
		if !strings.Contains(out, want) {
			t.Fatalf("helper output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "SKIP") {
		t.Fatalf("helper skipped instead of failing:\n%s", out)
	}
}

func TestRedisAddrEnvIsUsed(t *testing.T) {
	t.Parallel()
	s := redistest.StartServer(t)
	out, err := runHelper(t, "REDIS_ADDR="+s.Addr, "WANT_ADDR="+s.Addr)
	if err != nil || !strings.Contains(out, "HELPER-OK "+s.Addr) {
		t.Fatalf("helper with REDIS_ADDR=%s: %v\n%s", s.Addr, err, out)
	}
}

func TestUnreachableRedisAddrFails(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	out, err := runHelper(t, "REDIS_ADDR="+addr)
	if err == nil || !strings.Contains(out, "does not answer PING") {
		t.Fatalf("helper with dead REDIS_ADDR: %v\n%s", err, out)
	}
}

func dial(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err
}

func TestStartServerWithPassword(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServerWith(t, redistest.ServerOptions{Password: "pw with spaces"})
	if err := srv.Client(t).Set(ctx(t), "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET through Server.Client: %v", err)
	}
	anon := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer anon.Close()
	if err := anon.Ping(ctx(t)).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("PING without the password: %v, want NOAUTH", err)
	}
	srv.Restart() // the readiness check authenticates again
	if err := srv.Client(t).Ping(ctx(t)).Err(); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
}

func TestStartServerWithTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redistest"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, b := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	srv := redistest.StartServerWith(t, redistest.ServerOptions{
		Args: []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", certFile, "--tls-auth-clients", "no"},
		TLS:  &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
	})
	if err := srv.Client(t).Ping(ctx(t)).Err(); err != nil {
		t.Fatalf("PING over TLS: %v", err)
	}
	plain := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, ReadTimeout: time.Second})
	defer plain.Close()
	if err := plain.Ping(ctx(t)).Err(); err == nil {
		t.Fatalf("a plain PING on the TLS port answered")
	}
}
