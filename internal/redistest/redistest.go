// Package redistest gives tests a real Redis server. It never mocks Redis and
// never skips: if no Redis can be obtained the test fails with instructions.
//
// The shared server returned by [Addr] and [Client] is resolved once per test
// process, in this order:
//
//  1. The REDIS_ADDR environment variable (host:port), if set. The server must
//     answer PING.
//  2. A redis-server binary found on PATH: a private instance is started on a
//     free loopback port with persistence disabled, in its own process group
//     and (on Linux) with a parent-death signal so it dies with the test
//     binary.
//  3. testcontainers-go with the redis:7 image, but only when a Docker daemon
//     answers a health check within a few seconds.
//  4. Otherwise every test asking for Redis fails (t.Fatal) with a message
//     explaining how to provide one.
//
// Packages using the shared server should stop it after the run with
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
//
// Tests that need to stop, kill, restart or configure their own server use
// [StartServer], which always launches a dedicated local redis-server;
// [StartServerWith] also starts one that asks for a password or speaks
// only TLS.
// [StartSentinel] runs a master, its replicas and three sentinels, and can
// force failovers or crash the master; [StartCluster] runs a Redis Cluster.
// Both also launch local redis-server processes only.
//
// Keys of different tests are kept apart with [Prefix]; the shared server is
// never flushed.
//
// A conformance suite runs its behaviours on every Redis backend of
// [Backends]: the shared server and a Redis Cluster. Tests wait for a state
// they can observe with [Eventually], which reports the scheduling delay
// ([SchedDelay]) when a wait times out, rather than sleep for a time that
// is usually long enough.
//
// Every client this package returns holds each call of a lockpool script to
// the script's header ([CheckScripts]).
package redistest

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/luascript"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// HowTo is the advice included in every failure caused by Redis being
// unavailable.
const HowTo = "set REDIS_ADDR=host:port, or install redis-server " +
	"(apt-get install redis-server; `make test` does this as root), " +
	"or start a Docker daemon for testcontainers"

const (
	// startTimeout bounds how long a local redis-server may take to answer PING.
	startTimeout = 10 * time.Second
	// stopTimeout bounds how long a redis-server gets to exit after SIGTERM
	// before it is killed.
	stopTimeout = 5 * time.Second
	// dockerProbeTimeout bounds the Docker daemon health check.
	dockerProbeTimeout = 3 * time.Second
	// containerStartTimeout bounds pulling and starting the redis:7 container.
	containerStartTimeout = 3 * time.Minute
	// containerImage is the image used by the testcontainers fallback.
	containerImage = "redis:7"
)

// shared holds the process-wide Redis resolved by resolveShared.
var shared struct {
	once sync.Once
	addr string
	err  error

	mu   sync.Mutex
	stop func() // stops a private server or container; nil if none
}

// Main runs the tests of a package and then stops any Redis server or
// container this package started for them, exiting with the tests' status,
// or failing when a script call did not match its header ([CheckScripts]).
// Call it from TestMain:
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
func Main(m *testing.M) {
	startSched()
	if err := luascript.Verify(); err != nil {
		fmt.Fprintf(os.Stderr, "redistest: the package's Lua scripts are malformed:\n%v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	stopShared()
	if reportScriptMismatches() && code == 0 {
		code = 1
	}
	os.Exit(code)
}

// stopShared stops the shared private server or container, if one was started.
func stopShared() {
	shared.mu.Lock()
	stop := shared.stop
	shared.stop = nil
	shared.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Addr returns the host:port of the shared real Redis server, resolving it on
// first use (see the package documentation). It fails the test if no Redis
// can be obtained; it never skips.
func Addr(t testing.TB) string {
	t.Helper()
	shared.once.Do(resolveShared)
	if shared.err != nil {
		t.Fatalf("redistest: no Redis available: %v\nTo run these tests, %s.", shared.err, HowTo)
	}
	return shared.addr
}

// Client returns a new go-redis client connected to [Addr], with
// ContextTimeoutEnabled set. The client is closed when the test finishes.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	return newClient(t, Addr(t), access{})
}

func newClient(t testing.TB, addr string, acc access) *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		Password:              acc.password,
		TLSConfig:             acc.tls,
		ContextTimeoutEnabled: true,
	})
	CheckScripts(c)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

var prefixCounter atomic.Uint64

// Prefix returns a key prefix unique to this call: the sanitised test name,
// a per-process counter and a random suffix, ending in ":". Tests that share
// a Redis server (including tests in other packages running concurrently)
// never clash if all their keys start with their own prefix.
func Prefix(t testing.TB) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return fmt.Sprintf("test:%s:%d:%s:", sanitize(t.Name()), prefixCounter.Add(1), hex.EncodeToString(b[:]))
}

// sanitize keeps letters, digits, '-', '_' and '.', replaces everything else
// with '_' (so "{", "}", ":", "/" and spaces never appear) and bounds the length.
func sanitize(name string) string {
	const maxLen = 64
	var sb strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			sb.WriteRune(r)
		default:
			sb.WriteByte('_')
		}
		if sb.Len() >= maxLen {
			break
		}
	}
	if sb.Len() == 0 {
		return "test"
	}
	return sb.String()
}

// ServerTime returns the server's clock as reported by the TIME command. It
// fails the test on error.
func ServerTime(t testing.TB, c redis.UniversalClient) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tm, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatalf("redistest: TIME: %v", err)
	}
	return tm
}

// resolveShared implements the resolution order of the package documentation.
func resolveShared() {
	var reasons []string

	// (a) REDIS_ADDR.
	if addr := strings.TrimSpace(os.Getenv("REDIS_ADDR")); addr != "" {
		if err := waitPing(addr, access{}, 3*time.Second, nil); err != nil {
			shared.err = fmt.Errorf("REDIS_ADDR=%s does not answer PING: %w", addr, err)
			return
		}
		shared.addr = addr
		return
	}
	reasons = append(reasons, "REDIS_ADDR is not set")

	// (b) redis-server on PATH.
	if bin, err := exec.LookPath("redis-server"); err == nil {
		dir, err := os.MkdirTemp("", "redistest-")
		if err != nil {
			shared.err = fmt.Errorf("create temp dir for redis-server: %w", err)
			return
		}
		p, err := startOnFreePort(bin, dir, ServerOptions{})
		if err != nil {
			_ = os.RemoveAll(dir)
			shared.err = err
			return
		}
		shared.addr = p.addr
		shared.mu.Lock()
		shared.stop = func() {
			p.stop()
			_ = os.RemoveAll(dir)
		}
		shared.mu.Unlock()
		return
	}
	reasons = append(reasons, "redis-server is not on PATH")

	// (c) testcontainers, only if a Docker daemon answers.
	if err := dockerHealthy(); err != nil {
		reasons = append(reasons, "no Docker daemon for testcontainers ("+oneLine(err.Error())+")")
		// (d) fail.
		shared.err = errors.New(strings.Join(reasons, "; "))
		return
	}
	addr, stop, err := startContainer()
	if err != nil {
		shared.err = fmt.Errorf("%s; Docker answers but starting %s with testcontainers failed: %w",
			strings.Join(reasons, "; "), containerImage, err)
		return
	}
	shared.addr = addr
	shared.mu.Lock()
	shared.stop = stop
	shared.mu.Unlock()
}

// dockerHealthy reports whether a Docker daemon answers testcontainers'
// provider health check within dockerProbeTimeout. Provider discovery itself
// can block or panic when no daemon exists, so it runs in its own goroutine
// and is abandoned on timeout.
func dockerHealthy() error {
	ctx, cancel := context.WithTimeout(context.Background(), dockerProbeTimeout)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("testcontainers panicked: %v", r)
			}
		}()
		p, err := testcontainers.ProviderDefault.GetProvider()
		if err != nil {
			errc <- err
			return
		}
		defer func() { _ = p.Close() }()
		errc <- p.Health(ctx)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return fmt.Errorf("docker daemon did not answer within %v", dockerProbeTimeout)
	}
}

// startContainer starts redis:7 with testcontainers and returns its address
// and a function that terminates it.
func startContainer() (string, func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), containerStartTimeout)
	defer cancel()
	ctr, err := testcontainers.Run(ctx, containerImage,
		testcontainers.WithExposedPorts("6379/tcp"),
		testcontainers.WithCmd("redis-server", "--save", "", "--appendonly", "no"),
		testcontainers.WithWaitStrategy(
			wait.ForLog("Ready to accept connections"),
			wait.ForListeningPort("6379/tcp"),
		),
	)
	terminate := func() {
		if ctr != nil {
			_ = testcontainers.TerminateContainer(ctr)
		}
	}
	if err != nil {
		terminate()
		return "", nil, err
	}
	addr, err := ctr.PortEndpoint(ctx, "6379/tcp", "")
	if err == nil {
		err = waitPing(addr, access{}, startTimeout, nil)
	}
	if err != nil {
		terminate()
		return "", nil, err
	}
	return addr, terminate, nil
}

// Server is a dedicated redis-server owned by one test, started by
// [StartServer]. Its methods must be called from the test's goroutine
// (they call t.Fatal on failure).
type Server struct {
	// Addr is the server's host:port on 127.0.0.1. It stays the same across
	// [Server.Restart].
	Addr string

	t    testing.TB
	bin  string
	dir  string
	port int
	opts ServerOptions // given to StartServerWith
	// cmdline, if set, is the complete redis-server command line, used
	// instead of the defaults plus args (sentinels: "<conf> --sentinel").
	cmdline []string
	// clusterPort is the cluster bus port of a cluster node, 0 otherwise.
	clusterPort int

	mu      sync.Mutex
	proc    *process    // nil while stopped
	lastLog *tailBuffer // output of the latest process, running or not
}

// StartServer starts a dedicated local redis-server (from PATH; REDIS_ADDR and
// Docker are not used) for a test that needs to stop, restart or configure its
// own server. extraArgs are appended to the default command line
// ("--port N --bind 127.0.0.1 --save "" --appendonly no --dir <tempdir> ..."),
// so they can override defaults, e.g. StartServer(t, "--maxmemory", "1mb").
// The server is stopped when the test finishes. If redis-server is not on
// PATH the test fails with instructions.
func StartServer(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	return StartServerWith(t, ServerOptions{Args: extraArgs})
}

// ServerOptions configure a server started by [StartServerWith]. The zero
// value is [StartServer]'s server.
type ServerOptions struct {
	// Args are appended to the default command line, as StartServer's
	// extraArgs (e.g. "--appendonly", "yes", or ACL and TLS file options).
	Args []string
	// Password, if set, is the default user's password (--requirepass).
	// The readiness check and [Server.Client] authenticate with it.
	Password string
	// TLS, if set, makes the server speak TLS only: it listens on Addr with
	// --tls-port and has no plain port (--port 0). Args must name its
	// certificate, key and CA files (--tls-cert-file, --tls-key-file,
	// --tls-ca-cert-file, and --tls-auth-clients as wanted); TLS is the
	// client side, used by the readiness check and [Server.Client] (with a
	// client certificate where the server demands one). The redis-server
	// on PATH must be built with TLS.
	TLS *tls.Config
}

// access is how a client gets in: a password, TLS.
type access struct {
	password string
	tls      *tls.Config
}

func (o ServerOptions) access() access { return access{password: o.Password, tls: o.TLS} }

// StartServerWith is StartServer with options: a server that asks for a
// password or speaks only TLS. The server is stopped when the test
// finishes.
func StartServerWith(t testing.TB, opts ServerOptions) *Server {
	t.Helper()
	s, err := newServer(t, opts)
	if err != nil {
		t.Fatalf("redistest: StartServer: %v", err)
	}
	return s
}

// redisServerBin finds redis-server on PATH or fails the test with
// instructions.
func redisServerBin(t testing.TB, what string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: %s needs a local redis-server binary: %v\nTo run these tests, %s.", what, err, HowTo)
	}
	return bin
}

// newServer starts a dedicated server with the default arguments and opts
// in a fresh temporary directory, on a free port, and registers its Stop
// with t.Cleanup.
func newServer(t testing.TB, opts ServerOptions) (*Server, error) {
	t.Helper()
	opts.Args = append([]string(nil), opts.Args...)
	s := &Server{
		t:    t,
		bin:  redisServerBin(t, "StartServer"),
		dir:  t.TempDir(),
		opts: opts,
	}
	p, err := startOnFreePort(s.bin, s.dir, s.opts)
	if err != nil {
		return nil, err
	}
	s.adopt(p)
	return s, nil
}

// adopt records p as the server's first process and registers Stop with
// t.Cleanup.
func (s *Server) adopt(p *process) {
	s.proc, s.port, s.Addr, s.lastLog = p, p.port, p.addr, p.log
	s.t.Cleanup(s.Stop)
}

// output returns the tail of the output of the server's latest process.
func (s *Server) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastLog == nil {
		return ""
	}
	return s.lastLog.String()
}

// Client returns a new go-redis client connected to the server, with
// ContextTimeoutEnabled set, and the password and TLS configuration of
// [ServerOptions]. The client is closed when the test finishes. It keeps
// working across [Server.Restart] (it reconnects).
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	return newClient(t, s.Addr, s.opts.access())
}

// Stop terminates the server (SIGTERM, then SIGKILL after a few seconds) and
// waits for it to exit. SIGTERM is a clean shutdown: a server configured to
// persist (save points or AOF) writes its RDB snapshot or flushes its AOF
// before exiting, like SHUTDOWN. Use [Server.Kill] to simulate a crash.
// Stopping a stopped (or killed) server does nothing.
func (s *Server) Stop() {
	if p := s.take(); p != nil {
		p.stop()
	}
}

// Kill simulates a crash, like kill -9: it sends SIGKILL to the server's
// process group (the server and any BGSAVE or AOF-rewrite child it forked)
// and waits until the server has exited. Nothing is saved or flushed on the
// way out: the RDB file is whatever the last completed save wrote, and the
// AOF holds what Redis had already written to the kernel. Redis writes the
// AOF before it replies, so acknowledged writes survive whatever appendfsync
// says, except when a slow fsync made it postpone a write (possible with
// everysec); fsync itself only matters for a machine crash, which Kill does
// not simulate. The port is released, so [Server.Restart] can bring the
// server back from its files. Killing a stopped (or killed) server does
// nothing.
func (s *Server) Kill() {
	if p := s.take(); p != nil {
		p.kill()
	}
}

// take detaches the running process, if any.
func (s *Server) take() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	s.proc = nil
	return p
}

// Dir returns the server's working directory (its --dir), where it keeps
// dump.rdb, the AOF directory and, for cluster nodes, nodes.conf. It stays
// the same across [Server.Restart] and is removed when the test finishes.
func (s *Server) Dir() string { return s.dir }

// Pid returns the process id of the running redis-server, or 0 while the
// server is stopped or killed.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Running reports whether the server process is running (it was started or
// restarted and has not been stopped or killed since). It does not check that
// the server still answers.
func (s *Server) Running() bool { return s.Pid() != 0 }

// Restart starts the server again on the same port, in the same directory
// and with the same arguments, and waits until it answers PING. If it is
// running it is first stopped with [Server.Stop] (SIGTERM: a persistent server
// saves on the way out); after [Server.Kill] it restarts from whatever its
// files held at the crash. A server started with persistence arguments (e.g.
// "--appendonly", "yes" or "--save", "3600 1") reloads its RDB/AOF from
// [Server.Dir]; with the default arguments nothing is persisted, so all data
// is lost.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	// The port was just released; another process could in theory grab it,
	// the kernel may briefly refuse the bind, and after a SIGKILL a dying
	// BGSAVE child may still hold the listening socket for a moment. Retry
	// until startTimeout.
	deadline := time.Now().Add(startTimeout)
	for {
		p, err := s.start(s.port)
		if err == nil {
			s.proc, s.lastLog = p, p.log
			return
		}
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			s.t.Fatalf("redistest: Restart on %s: %v", s.Addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// replicaSyncTimeout bounds how long [Server.StartReplica] waits for the
// replica's link to come up.
const replicaSyncTimeout = 10 * time.Second

// StartReplica starts a dedicated server, as [StartServer] with extraArgs,
// replicating s ("--replicaof"), and returns once the replica reports its
// link to s up (INFO replication: role:slave, master_link_status:up): it
// holds what s held then, and receives every later write. It fails the
// test, with what the replica last reported and the scheduling delay, if
// that takes longer than 10s. The replica is stopped when the test
// finishes.
func (s *Server) StartReplica(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	host, port, _ := net.SplitHostPort(s.Addr)
	r := StartServer(t, append([]string{"--replicaof", host, port}, extraArgs...)...)
	if _, err := poll(replicaSyncTimeout, "the replica "+r.Addr+" in sync with "+s.Addr, func() (bool, string) {
		return replicating(r.Addr, s.Addr)
	}); err != nil {
		t.Fatalf("redistest: StartReplica: %v (%s)", err, SchedDelay())
	}
	return r
}

// start launches the server's redis-server on port.
func (s *Server) start(port int) (*process, error) {
	if s.cmdline != nil {
		return launch(s.bin, s.dir, port, s.cmdline, access{})
	}
	return startRedis(s.bin, s.dir, port, s.opts)
}

// serverSet is the servers of a topology (a cluster, a Sentinel set-up).
type serverSet []*Server

// addrs returns every server's host:port, in order.
func (ss serverSet) addrs() []string {
	addrs := make([]string, len(ss))
	for i, s := range ss {
		addrs[i] = s.Addr
	}
	return addrs
}

// find returns the server listening on addr, or nil.
func (ss serverSet) find(addr string) *Server {
	for _, s := range ss {
		if s.Addr == addr {
			return s
		}
	}
	return nil
}

// process is one running redis-server.
type process struct {
	cmd  *exec.Cmd
	port int
	addr string
	log  *tailBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done is closed
}

var errAddrInUse = errors.New("address already in use")

// startOnFreePort starts redis-server on a free loopback port, retrying with
// a fresh port if the chosen one was taken in the meantime.
func startOnFreePort(bin, dir string, opts ServerOptions) (*process, error) {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var port int
		port, err = freePort()
		if err != nil {
			return nil, err
		}
		var p *process
		p, err = startRedis(bin, dir, port, opts)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, errAddrInUse) {
			return nil, err
		}
	}
	return nil, err
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port, nil
}

// startRedis launches redis-server on 127.0.0.1:port with the default
// arguments and opts, and waits until it answers PING. On failure the
// process is gone and the error carries the tail of its output.
func startRedis(bin, dir string, port int, opts ServerOptions) (*process, error) {
	listen := []string{"--port", strconv.Itoa(port)}
	if opts.TLS != nil {
		listen = []string{"--port", "0", "--tls-port", strconv.Itoa(port)}
	}
	if opts.Password != "" {
		listen = append(listen, "--requirepass", opts.Password)
	}
	args := append(listen,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--daemonize", "no",
		"--protected-mode", "no",
		"--loglevel", "warning",
	)
	p, err := launch(bin, dir, port, append(args, opts.Args...), opts.access())
	if err != nil && opts.TLS != nil && strings.Contains(err.Error(), "Bad directive") {
		err = fmt.Errorf("%w\nThis redis-server seems to be built without TLS: install one built with BUILD_TLS=yes "+
			"(Debian's redis-server package is; from source: make BUILD_TLS=yes)", err)
	}
	return p, err
}

// launch runs bin with exactly args in dir, expecting it to listen on
// 127.0.0.1:port, and waits until it answers PING (through acc). On failure
// the process is gone and the error carries the tail of its output; it
// wraps errAddrInUse if the port (or, for a cluster node, its bus port) was
// taken.
func launch(bin, dir string, port int, args []string, acc access) (*process, error) {
	p := &process{
		port: port,
		addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		log:  &tailBuffer{max: 16 << 10},
		done: make(chan struct{}),
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout = p.log // without --logfile redis logs to stdout
	p.cmd.Stderr = p.log
	p.cmd.SysProcAttr = sysProcAttr()
	// Wait also waits for the output pipe to close; a forked child that
	// somehow outlived the process group kill must not block it forever.
	p.cmd.WaitDelay = stopTimeout
	if err := spawn(p.cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	err := waitPing(p.addr, acc, startTimeout, p.done)
	if err == nil {
		// The PONG may come from another test's server that took the
		// port first (this one then exits with "Address already in use"):
		// ready means ours answers.
		if pid, perr := serverPID(p.addr, acc); perr == nil && pid != p.cmd.Process.Pid {
			err = fmt.Errorf("%w: the server answering on %s is process %d, not %d", errAddrInUse, p.addr, pid, p.cmd.Process.Pid)
		}
	}
	if err != nil {
		p.stop()
		tail := p.log.String()
		if strings.Contains(tail, "Address already in use") && !errors.Is(err, errAddrInUse) {
			err = fmt.Errorf("%w (%v)", errAddrInUse, err)
		}
		return nil, fmt.Errorf("redis-server %s on %s did not become ready: %w\n--- redis-server output (tail) ---\n%s",
			strings.Join(args, " "), p.addr, err, tailLines(tail, 40))
	}
	return p, nil
}

// stop sends SIGTERM to the process group, escalates to SIGKILL after
// stopTimeout, and waits for the process to exit.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	terminate(p.cmd)
	select {
	case <-p.done:
		return
	case <-time.After(stopTimeout):
	}
	kill(p.cmd)
	<-p.done
}

// kill sends SIGKILL to the process group and waits for the process to exit.
func (p *process) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	kill(p.cmd)
	<-p.done
}

// waitPing polls addr with PING (through acc) until it answers +PONG, the
// timeout expires, or exited (if non-nil) is closed.
func waitPing(addr string, acc access, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = ping(addr, acc); last == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("redis-server exited")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG within %v: %w", timeout, last)
		}
		select {
		case <-exited:
			return errors.New("redis-server exited")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ping sends one PING (after an AUTH with acc's password, over TLS with
// acc's configuration) and expects +PONG.
func ping(addr string, acc access) error {
	conn, r, err := dialAuth(addr, acc)
	if err != nil {
		return err
	}
	defer conn.Close()
	return reply(conn, r, "PING\r\n", "+PONG")
}

// dialAuth connects to addr (over TLS with acc's configuration) with a
// one-second deadline, and AUTHs with acc's password when it has one.
func dialAuth(addr string, acc access) (net.Conn, *bufio.Reader, error) {
	d := &net.Dialer{Timeout: time.Second}
	var conn net.Conn
	var err error
	if acc.tls != nil {
		conn, err = tls.DialWithDialer(d, "tcp", addr, acc.tls)
	} else {
		conn, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(conn)
	if acc.password != "" {
		auth := fmt.Sprintf("*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(acc.password), acc.password)
		if err := reply(conn, r, auth, "+OK"); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("AUTH: %w", err)
		}
	}
	return conn, r, nil
}

// serverPID asks the server at addr for its process id (INFO server).
func serverPID(addr string, acc access) (int, error) {
	conn, r, err := dialAuth(addr, acc)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")); err != nil {
		return 0, err
	}
	head, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(head), "$"))
	if err != nil || !strings.HasPrefix(head, "$") {
		return 0, fmt.Errorf("INFO answered %q", head)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("INFO server has no process_id")
}

// reply sends cmd on conn and expects the one-line answer want from r.
func reply(conn net.Conn, r *bufio.Reader, cmd, want string) error {
	if _, err := conn.Write([]byte(cmd)); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != want {
		return fmt.Errorf("answered %q", line)
	}
	return nil
}

// spawner starts child processes from a goroutine locked to an OS thread
// that never exits. On Linux the parent-death signal is tied to the thread
// that forked the child, not the process, so forking from an ordinary
// goroutine could kill the server early if the Go runtime retires that thread.
var spawner struct {
	once sync.Once
	reqs chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	errc chan error
}

func spawn(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range spawner.reqs {
				r.errc <- r.cmd.Start()
			}
		}()
	})
	r := spawnReq{cmd: cmd, errc: make(chan error, 1)}
	spawner.reqs <- r
	return <-r.errc
}

// tailBuffer is a concurrency-safe io.Writer keeping the last max bytes.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// tailLines returns the last n lines of s, or a placeholder if s is empty.
func tailLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "(no output)"
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
