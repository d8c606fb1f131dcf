package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelOptions configures [StartSentinel]. The zero value is usable.
type SentinelOptions struct {
	// MasterName is the name the sentinels monitor the master under.
	// Default "lockpool".
	MasterName string
	// Replicas is the number of replicas of the master. Default (and
	// minimum) 1: a failover needs a replica to promote.
	Replicas int
	// DownAfter is the sentinels' down-after-milliseconds: how long the
	// master must fail to answer before a sentinel considers it down.
	// Default 1s.
	DownAfter time.Duration
	// FailoverTimeout is the sentinels' failover-timeout. Default 10s. It
	// bounds the steps of a failover (the leader election, the promotion,
	// the reconfiguration of the other replicas, during which SENTINEL
	// FAILOVER answers INPROG), and after a failover attempt that did not
	// complete a sentinel waits 2×FailoverTimeout before trying again. A
	// completed failover resets that clock on every sentinel, so completed
	// failovers can follow each other immediately; the waits of
	// [Sentinel.Failover] and [Sentinel.KillMaster] are bounded accordingly.
	FailoverTimeout time.Duration
	// ServerArgs are extra redis-server arguments for the master and the
	// replicas (not the sentinels), appended to the defaults of
	// [StartServer], e.g. {"--appendonly", "yes"}.
	ServerArgs []string
	// StockTimers keeps Sentinel's built-in internal periods. By default
	// StartSentinel shortens them with SENTINEL DEBUG (INFO every 500ms
	// instead of 10s, PING every 300ms instead of 1s, and so on; see the
	// comments in sentinel.go), which makes sentinels notice changes sooner;
	// the configured DownAfter and FailoverTimeout apply either way. With
	// StockTimers a forced failover or RestartKilled takes about 11s instead
	// of 2s (a sentinel turns a demoted or restarted master into a replica
	// 8s after it first reports itself master, and asks it again only every
	// 10s), and a DownAfter of 1s is fragile: sentinels reconnect to a newly
	// promoted master only once a second, yet expect its first PING reply
	// within DownAfter, so they may judge it down at once and fail over
	// again; use a few seconds.
	StockTimers bool
	// WaitTimeout bounds each wait of StartSentinel and of the methods
	// (Failover adds FailoverTimeout to it, KillMaster 2×FailoverTimeout,
	// for a failover attempt that does not complete). Default 30s.
	WaitTimeout time.Duration
}

// shortTimers are the SENTINEL DEBUG settings applied unless
// SentinelOptions.StockTimers is set: INFO every 500ms instead of 10s, hello
// messages every 250ms instead of 2s (see settleTimers), down-state queries
// to the other sentinels every 250ms instead of 1s, and PING (and reconnect
// attempts) every 300ms instead of 1s.
//
// The ping period matters for correctness with a 1s down-after: when
// sentinels switch to a new master they expect it to answer a PING within
// down-after, but they reconnect to an address at most once per ping period;
// after a kill -9 the link has been failing to reconnect, so with the stock
// 1s period the new master is often judged down right after its promotion
// and, the failover clock being reset by the switch, failed over again at
// once. It must not go much lower either: Sentinel only promotes a replica
// whose last INFO is younger than 5×ping-period, and while the master is
// down it sends replicas INFO only once a second.
var shortTimers = []any{"info-period", 500, "publish-period", 250, "ask-period", 250, "ping-period", 300}

// settleTimers is applied to every sentinel but the first once they know each
// other. A sentinel waits 4×publish-period after a replica starts reporting
// itself master before it turns it back into a replica (that is how a
// demoted master is converted: 1s after a forced failover instead of 8s). A
// sentinel that did not run a forced failover sees the promoted replica
// report master before the leader's hello message announces the promotion
// (the leader checks the replica's INFO only once a second during a
// failover); with a short wait it would demote the new master again and the
// deployment would flap. The first sentinel runs every forced failover, so it
// never races against its own announcement; the others keep the 8s wait.
var settleTimers = []any{"publish-period", 2000}

const (
	// sentinelCount is the number of sentinels StartSentinel runs.
	sentinelCount = 3
	// sentinelQuorum is the number of sentinels that must agree the master
	// is down before a failover.
	sentinelQuorum = 2
	// defaultWaitTimeout is the default bound of the waits of StartSentinel,
	// StartCluster and their methods.
	defaultWaitTimeout = 30 * time.Second
)

// Sentinel is a Redis Sentinel deployment owned by one test, started by
// [StartSentinel]: one master, its replicas and three sentinels, all local
// redis-server processes on free 127.0.0.1 ports. Its methods must be called
// from the test's goroutine (they call t.Fatal on failure).
//
// Timings measured on the development machine (2 CPUs, redis-server 7.0.15,
// default options, go test -race; the methods log theirs):
//
//   - StartSentinel: 0.7-1.5s alone, 3-5.5s while the package's other tests
//     start servers too (2.6s with StockTimers).
//   - [Sentinel.Failover] (forced, SENTINEL FAILOVER): 0.5-1.4s until every
//     sentinel reports the new master, 1.8-2.5s (at most 3.2s seen) until
//     the old master replicates from it; 3.3s with two replicas; about 11s
//     with StockTimers.
//   - [Sentinel.KillMaster] (kill -9 of the master): 1.6-3s from the kill
//     until every sentinel reports the promoted replica and has heard from
//     it: DownAfter (1s) until the sentinels consider the master down, then
//     their agreement, a leader election and the promotion (2.2s with
//     StockTimers). A second KillMaster right after RestartKilled takes the
//     same.
//   - [Sentinel.RestartKilled]: 1.1-2.2s until the restarted server
//     replicates (about 11s with StockTimers).
type Sentinel struct {
	t         testing.TB
	opts      SentinelOptions
	servers   serverSet // data servers; servers[0] was the first master
	sentinels []*Server

	mu       sync.Mutex
	killed   *Server
	killedAt time.Time
}

// StartSentinel starts a Sentinel deployment for the test: a master and
// opts.Replicas replicas (redis-server with the defaults of [StartServer]
// plus opts.ServerArgs, each in its own temporary directory), and three
// sentinels ("redis-server <conf> --sentinel", each with its own config
// file in its own temporary directory, since Sentinel rewrites it) monitoring
// the master as opts.MasterName with quorum 2, down-after-milliseconds
// opts.DownAfter, failover-timeout opts.FailoverTimeout and parallel-syncs 1.
//
// It returns only when every replica replicates from the master with its link
// up and every sentinel reports that master, knows every replica (with link
// status ok) and knows the two other sentinels. Everything is stopped when
// the test finishes, sentinels first. A server that fails to start fails the
// test with the tail of its output; a state that is not reached within
// opts.WaitTimeout (30s) fails it naming what was awaited and what was last
// seen, with the tail of the sentinels' logs.
//
// The data servers run with repl-diskless-sync-delay 0 (before
// opts.ServerArgs, which may override it), and unless opts.StockTimers is
// set the sentinels' internal periods are shortened; see [SentinelOptions].
func StartSentinel(t testing.TB, opts SentinelOptions) *Sentinel {
	t.Helper()
	start := time.Now()
	if opts.MasterName == "" {
		opts.MasterName = "lockpool"
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.DownAfter <= 0 {
		opts.DownAfter = time.Second
	}
	if opts.FailoverTimeout <= 0 {
		opts.FailoverTimeout = 10 * time.Second
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = defaultWaitTimeout
	}
	opts.ServerArgs = append([]string(nil), opts.ServerArgs...)
	s := &Sentinel{t: t, opts: opts}
	bin := redisServerBin(t, "StartSentinel")

	// Data servers. They all start as masters; the replicas are attached
	// with REPLICAOF so that their command line names no master, and a
	// Restart brings a server back as a master (with whatever it persisted)
	// for the sentinels to reconfigure, as a rebooted machine would.
	// A full resynchronisation starts at once instead of after 5s (Redis 7's
	// default repl-diskless-sync-delay, meant to batch replicas). A demoted
	// master always needs one: the sentinels' hello messages, published on
	// it after the promotion, advance its replication offset past the point
	// where it could continue partially.
	args := append([]string{"--repl-diskless-sync-delay", "0"}, opts.ServerArgs...)
	for i := 0; i <= opts.Replicas; i++ {
		srv, err := newServer(t, ServerOptions{Args: args})
		if err != nil {
			t.Fatalf("redistest: StartSentinel: data server %d: %v", i, err)
		}
		s.servers = append(s.servers, srv)
	}
	master := s.servers[0].Addr
	host, port, _ := net.SplitHostPort(master)
	for _, r := range s.servers[1:] {
		err := probe(r.Addr, func(ctx context.Context, c *redis.Client) error {
			return c.Do(ctx, "REPLICAOF", host, port).Err()
		})
		if err != nil {
			t.Fatalf("redistest: StartSentinel: REPLICAOF %s %s on %s: %v", host, port, r.Addr, err)
		}
	}
	// Replicas in sync before the sentinels start: a sentinel learns the
	// replicas from the master's INFO, which it may not ask again for 10s.
	s.must(t, "StartSentinel", "every replica replicating from "+master+" with master_link_status:up", func() (bool, string) {
		for _, r := range s.servers[1:] {
			if ok, seen := replicating(r.Addr, master); !ok {
				return false, seen
			}
		}
		return true, ""
	})

	for i := 0; i < sentinelCount; i++ {
		sn, err := s.startSentinel(bin, master)
		if err != nil {
			t.Fatalf("redistest: StartSentinel: sentinel %d: %v", i, err)
		}
		s.sentinels = append(s.sentinels, sn)
	}
	if !opts.StockTimers {
		for _, sn := range s.sentinels {
			sentinelDebug(t, sn.Addr, shortTimers)
		}
	}

	replicas := s.Addrs()[1:]
	s.must(t, "StartSentinel", fmt.Sprintf("every sentinel to report master %s, know replicas %v with link ok and know %d other sentinels, and the replicas in sync",
		master, replicas, sentinelCount-1), func() (bool, string) {
		for _, sn := range s.sentinels {
			if ok, seen := sentinelKnows(sn.Addr, opts.MasterName, master, replicas); !ok {
				return false, seen
			}
		}
		for _, r := range replicas {
			if ok, seen := replicating(r, master); !ok {
				return false, seen
			}
		}
		return true, ""
	})
	if !opts.StockTimers {
		for _, sn := range s.sentinels[1:] {
			sentinelDebug(t, sn.Addr, settleTimers)
		}
	}
	t.Logf("redistest: StartSentinel: master %s, replicas %v, sentinels %v ready after %v",
		master, replicas, s.SentinelAddrs(), time.Since(start).Round(time.Millisecond))
	return s
}

// sentinelDebug sets Sentinel's internal timers with SENTINEL DEBUG.
func sentinelDebug(t testing.TB, addr string, timers []any) {
	t.Helper()
	err := probeSentinel(addr, func(ctx context.Context, c *redis.SentinelClient) error {
		return c.Process(ctx, redis.NewStatusCmd(ctx, append([]any{"SENTINEL", "DEBUG"}, timers...)...))
	})
	if err != nil {
		t.Fatalf("redistest: StartSentinel: SENTINEL DEBUG %v on %s: %v", timers, addr, err)
	}
}

// startSentinel writes a config file for a sentinel on a free port in a new
// temporary directory and starts it, retrying with another port if the
// chosen one was taken.
func (s *Sentinel) startSentinel(bin, master string) (*Server, error) {
	dir := s.t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	host, mport, _ := net.SplitHostPort(master)
	name := s.opts.MasterName
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var port int
		if port, err = freePort(); err != nil {
			return nil, err
		}
		text := strings.Join([]string{
			"port " + strconv.Itoa(port),
			"bind 127.0.0.1",
			"protected-mode no",
			"daemonize no",
			"loglevel notice",
			"dir " + dir,
			fmt.Sprintf("sentinel monitor %s %s %s %d", name, host, mport, sentinelQuorum),
			fmt.Sprintf("sentinel down-after-milliseconds %s %d", name, s.opts.DownAfter.Milliseconds()),
			fmt.Sprintf("sentinel failover-timeout %s %d", name, s.opts.FailoverTimeout.Milliseconds()),
			fmt.Sprintf("sentinel parallel-syncs %s 1", name),
			"",
		}, "\n")
		if err = os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return nil, err
		}
		srv := &Server{t: s.t, bin: bin, dir: dir, cmdline: []string{conf, "--sentinel"}}
		var p *process
		if p, err = srv.start(port); err == nil {
			srv.adopt(p)
			return srv, nil
		}
		if !errors.Is(err, errAddrInUse) {
			return nil, err
		}
	}
	return nil, err
}

// sentinelKnows reports whether the sentinel at addr reports master for name,
// lists each of replicas as a replica with link status ok, and knows the
// other sentinels; otherwise it describes what it sees.
func sentinelKnows(addr, name, master string, replicas []string) (bool, string) {
	var seen string
	err := probeSentinel(addr, func(ctx context.Context, c *redis.SentinelClient) error {
		got, err := c.GetMasterAddrByName(ctx, name).Result()
		if err != nil {
			return err
		}
		if len(got) != 2 || net.JoinHostPort(got[0], got[1]) != master {
			seen = fmt.Sprintf("sentinel %s reports master %v", addr, got)
			return nil
		}
		m, err := c.Master(ctx, name).Result()
		if err != nil {
			return err
		}
		if m["flags"] != "master" || m["num-other-sentinels"] != strconv.Itoa(sentinelCount-1) {
			seen = fmt.Sprintf("sentinel %s: master flags %q, num-other-sentinels %s", addr, m["flags"], m["num-other-sentinels"])
			return nil
		}
		others, err := c.Sentinels(ctx, name).Result()
		if err != nil {
			return err
		}
		if len(others) != sentinelCount-1 {
			seen = fmt.Sprintf("sentinel %s: SENTINEL SENTINELS lists %d sentinels", addr, len(others))
			return nil
		}
		for _, o := range others {
			if o["flags"] != "sentinel" {
				seen = fmt.Sprintf("sentinel %s: other sentinel %s:%s has flags %q", addr, o["ip"], o["port"], o["flags"])
				return nil
			}
		}
		rs, err := c.Replicas(ctx, name).Result()
		if err != nil {
			return err
		}
		known := map[string]map[string]string{}
		for _, r := range rs {
			known[net.JoinHostPort(r["ip"], r["port"])] = r
		}
		for _, want := range replicas {
			r, ok := known[want]
			if !ok {
				seen = fmt.Sprintf("sentinel %s: SENTINEL REPLICAS lacks %s (has %d)", addr, want, len(rs))
				return nil
			}
			if r["flags"] != "slave" || r["master-link-status"] != "ok" {
				seen = fmt.Sprintf("sentinel %s: replica %s has flags %q, master-link-status %q", addr, want, r["flags"], r["master-link-status"])
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Sprintf("sentinel %s: %v", addr, err)
	}
	return seen == "", seen
}

// must polls check for up to WaitTimeout and fails the test with the
// sentinels' log tails if it is not satisfied.
func (s *Sentinel) must(t testing.TB, op, what string, check func() (bool, string)) time.Duration {
	t.Helper()
	return s.mustWithin(t, s.opts.WaitTimeout, op, what, check)
}

func (s *Sentinel) mustWithin(t testing.TB, timeout time.Duration, op, what string, check func() (bool, string)) time.Duration {
	t.Helper()
	d, err := poll(timeout, what, check)
	if err != nil {
		t.Fatalf("redistest: %s: %v\n%s", op, err, s.logs())
	}
	return d
}

// logs returns the tails of the sentinels' logs.
func (s *Sentinel) logs() string {
	var b strings.Builder
	for _, sn := range s.sentinels {
		fmt.Fprintf(&b, "--- sentinel %s log (tail) ---\n%s\n", sn.Addr, tailLines(sn.output(), 25))
	}
	return b.String()
}

// MasterName returns the name the sentinels monitor the master under.
func (s *Sentinel) MasterName() string { return s.opts.MasterName }

// SentinelAddrs returns the host:port of the three sentinels.
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, sn := range s.sentinels {
		addrs[i] = sn.Addr
	}
	return addrs
}

// Addrs returns the host:port of every data server (the master and the
// replicas, whatever their current roles), the first master first.
func (s *Sentinel) Addrs() []string { return s.servers.addrs() }

// Server returns the data server listening on addr (one of [Sentinel.Addrs]),
// or nil if there is none. Use it to reach a particular server, e.g.
// s.Server(s.MasterAddr(t)).Client(t), or to kill a replica.
func (s *Sentinel) Server(addr string) *Server { return s.servers.find(addr) }

// Client returns a new go-redis failover client (redis.NewFailoverClient)
// that finds the master through the sentinels, with ContextTimeoutEnabled
// set. It follows failovers. It is closed when the test finishes.
func (s *Sentinel) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:            s.opts.MasterName,
		SentinelAddrs:         s.SentinelAddrs(),
		ContextTimeoutEnabled: true,
	})
	CheckScripts(c)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// MasterAddr returns the master's host:port as reported by the sentinels
// (SENTINEL GET-MASTER-ADDR-BY-NAME), once every sentinel reports the same
// address and ROLE on that server answers "master". It waits up to
// WaitTimeout (30s) for that, e.g. during a failover, and then fails the
// test.
func (s *Sentinel) MasterAddr(t testing.TB) string {
	t.Helper()
	var addr string
	s.must(t, "MasterAddr", "the sentinels to agree on a master that answers ROLE master", func() (bool, string) {
		var seen string
		addr, seen = s.agreedMaster()
		if addr == "" {
			return false, seen
		}
		return confirmMaster(addr)
	})
	return addr
}

// agreedMaster returns the master address every sentinel reports, or "" and
// what they report if they disagree or cannot be asked.
func (s *Sentinel) agreedMaster() (string, string) {
	var addrs []string
	for _, sn := range s.sentinels {
		a, err := s.sentinelMaster(sn.Addr)
		if err != nil {
			return "", fmt.Sprintf("sentinel %s: %v", sn.Addr, err)
		}
		addrs = append(addrs, a)
	}
	for _, a := range addrs[1:] {
		if a != addrs[0] {
			return "", fmt.Sprintf("sentinels %v report masters %v", s.SentinelAddrs(), addrs)
		}
	}
	return addrs[0], ""
}

// sentinelMaster asks one sentinel for the master's address.
func (s *Sentinel) sentinelMaster(addr string) (string, error) {
	var master string
	err := probeSentinel(addr, func(ctx context.Context, c *redis.SentinelClient) error {
		got, err := c.GetMasterAddrByName(ctx, s.opts.MasterName).Result()
		if err != nil {
			return err
		}
		if len(got) != 2 {
			return fmt.Errorf("GET-MASTER-ADDR-BY-NAME answered %v", got)
		}
		master = net.JoinHostPort(got[0], got[1])
		return nil
	})
	return master, err
}

// confirmMaster reports whether ROLE at addr answers "master".
func confirmMaster(addr string) (bool, string) {
	role, _, _, err := roleOf(addr)
	if err != nil {
		return false, fmt.Sprintf("ROLE on %s: %v", addr, err)
	}
	if role != "master" {
		return false, fmt.Sprintf("ROLE on %s answers %q", addr, role)
	}
	return true, ""
}

// settled reports whether every sentinel reports a master other than old,
// all the same, that ROLE confirms, and every running data server other than
// that master replicates from it with its link up. It returns the new master.
func (s *Sentinel) settled(old string) (string, bool, string) {
	addr, seen := s.agreedMaster()
	if addr == "" {
		return "", false, seen
	}
	if addr == old {
		return "", false, fmt.Sprintf("every sentinel still reports %s", old)
	}
	if ok, seen := confirmMaster(addr); !ok {
		return addr, false, seen
	}
	for _, sn := range s.sentinels {
		m, flags, pending, err := s.sentinelState(sn.Addr)
		if err != nil {
			return addr, false, fmt.Sprintf("sentinel %s: SENTINEL MASTER: %v", sn.Addr, err)
		}
		// A sentinel that has not had a PING answered by the new master
		// since it switched may still judge it down.
		if m != addr || flags != "master" || pending != "0" {
			return addr, false, fmt.Sprintf("sentinel %s: SENTINEL MASTER %s flags %q last-ping-sent %s", sn.Addr, m, flags, pending)
		}
	}
	for _, srv := range s.servers {
		if srv.Addr == addr || !srv.Running() {
			continue
		}
		if ok, seen := replicating(srv.Addr, addr); !ok {
			return addr, false, seen
		}
	}
	return addr, true, ""
}

// forcedFailoverTimeout bounds [Sentinel.Failover]: a failover of the same
// master still in progress may hold the command back for up to
// failover-timeout.
func (s *Sentinel) forcedFailoverTimeout() time.Duration {
	return s.opts.WaitTimeout + s.opts.FailoverTimeout
}

// killFailoverTimeout bounds [Sentinel.KillMaster]: after a failover attempt
// that does not complete, the sentinels wait 2×failover-timeout before the
// next one.
func (s *Sentinel) killFailoverTimeout() time.Duration {
	return s.opts.WaitTimeout + 2*s.opts.FailoverTimeout
}

// Failover forces a failover with SENTINEL FAILOVER, sent to the first
// sentinel, and returns the old and the new master's addresses once the
// failover is complete: every sentinel reports the new master (and has had a
// PING answered by it), ROLE on it answers master, and every running data
// server, the old master included, replicates from it with
// master_link_status:up.
//
// The command is retried while the sentinel answers INPROG (a failover is
// still in progress) or NOGOODSLAVE (it does not consider any replica fit
// yet, e.g. right after the previous failover), and issued again if the
// failover ends with the old master still in place (aborted, or undone by an
// automatic failover). The whole call is bounded by WaitTimeout (30s) plus
// FailoverTimeout; then the test fails, naming what was awaited, what was
// last seen and the sentinels' log tails. It can be called repeatedly (each
// call promotes a replica of the current master) and right after
// KillMaster. Sentinel closes the client connections of a server it
// reconfigures.
func (s *Sentinel) Failover(t testing.TB) (old, new string) {
	t.Helper()
	s.MasterAddr(t) // a settled starting point
	start := time.Now()
	deadline := start.Add(s.forcedFailoverTimeout())
	sn := s.sentinels[0].Addr
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("redistest: Failover: "+format+" (after %v)\n%s", append(args, time.Since(start).Round(time.Millisecond), s.logs())...)
	}

	// request sends SENTINEL FAILOVER until it is accepted and returns the
	// master it was accepted for.
	attempts := 0
	request := func() string {
		t.Helper()
		for {
			attempts++
			// The master being failed over is the one this sentinel reports.
			m, err := s.sentinelMaster(sn)
			if err == nil {
				err = probeSentinel(sn, func(ctx context.Context, c *redis.SentinelClient) error {
					return c.Failover(ctx, s.opts.MasterName).Err()
				})
			}
			if err == nil {
				return m
			}
			msg := err.Error()
			retry := strings.Contains(msg, "INPROG") || strings.Contains(msg, "NOGOODSLAVE") || isNetError(err)
			if !retry || time.Now().After(deadline) {
				fail("SENTINEL FAILOVER %s on %s, attempt %d: %v", s.opts.MasterName, sn, attempts, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	old = request()
	accepted := time.Since(start)
	var reported time.Duration
	reissued := 0
	for {
		var ok bool
		var seen string
		new, ok, seen = s.settled(old)
		if ok {
			break
		}
		if new != "" && new != old && reported == 0 {
			reported = time.Since(start)
		}
		if m, flags, _, err := s.sentinelState(sn); err == nil && m == old && !strings.Contains(flags, "failover_in_progress") {
			// The failover is over and old is still the master.
			reissued++
			if reissued > 3 {
				fail("the failover of %s ended %d times with %s still master (sentinel flags %q)", old, reissued, old, flags)
			}
			t.Logf("redistest: Failover: the failover of %s ended with it still master; asking again", old)
			request()
			reported = 0
			continue
		}
		if time.Now().After(deadline) {
			fail("timed out waiting for the failover of %s: every sentinel reporting a new master confirmed by ROLE, and every running data server (%s included) replicating from it with link up; last seen: %s", old, old, seen)
		}
		time.Sleep(pollInterval)
	}
	t.Logf("redistest: Failover %s -> %s: SENTINEL FAILOVER accepted after %v (%d attempts, %d reissues), sentinels agreed after %v, old master replicating after %v",
		old, new, accepted.Round(time.Millisecond), attempts, reissued, reported.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return old, new
}

// sentinelState asks one sentinel (SENTINEL MASTER) for the master's
// address, its flags and how long ago it sent the master a PING still
// unanswered ("0" if none).
func (s *Sentinel) sentinelState(addr string) (master, flags, pingPending string, err error) {
	err = probeSentinel(addr, func(ctx context.Context, c *redis.SentinelClient) error {
		m, err := c.Master(ctx, s.opts.MasterName).Result()
		if err != nil {
			return err
		}
		master, flags, pingPending = net.JoinHostPort(m["ip"], m["port"]), m["flags"], m["last-ping-sent"]
		return nil
	})
	return master, flags, pingPending, err
}

// isNetError reports whether err is a network-level failure (connection
// refused or reset, timeout) rather than a reply from the server.
func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) ||
		strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "EOF")
}

// KillMaster simulates a crash of the master: it sends SIGKILL to the current
// master's process (as [Server.Kill]), records the time ([Sentinel.KilledAt]),
// and waits until the sentinels have promoted a replica: every sentinel
// reports the new master (and has had a PING answered by it), ROLE on it
// answers master, and every other running data server replicates from it
// with its link up. It returns the killed master's address; use
// [Sentinel.RestartKilled] to bring it back as a replica.
//
// The automatic failover takes DownAfter plus one or two seconds (see
// [Sentinel]). The wait is bounded by WaitTimeout (30s) plus
// 2×FailoverTimeout, enough for one failed attempt and its retry; then the
// test fails, naming what was awaited, what was last seen and the sentinels'
// log tails.
func (s *Sentinel) KillMaster(t testing.TB) (old string) {
	t.Helper()
	old = s.MasterAddr(t)
	srv := s.Server(old)
	if srv == nil {
		t.Fatalf("redistest: KillMaster: master %s is not one of the data servers %v", old, s.Addrs())
	}
	at := time.Now()
	srv.Kill()
	s.mu.Lock()
	s.killed, s.killedAt = srv, at
	s.mu.Unlock()
	var new string
	d := s.mustWithin(t, s.killFailoverTimeout(), "KillMaster", fmt.Sprintf("the sentinels to promote a replica after %s was killed at %s: every sentinel reporting a new master confirmed by ROLE, every other running data server replicating from it", old, at.Format("15:04:05.000")), func() (bool, string) {
		var ok bool
		var seen string
		new, ok, seen = s.settled(old)
		return ok, seen
	})
	t.Logf("redistest: KillMaster: %s killed, %s promoted and confirmed %v later", old, new, d.Round(time.Millisecond))
	return old
}

// KilledAt returns when [Sentinel.KillMaster] last killed a master, or the
// zero time.
func (s *Sentinel) KilledAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.killedAt
}

// RestartKilled restarts the master killed by the last [Sentinel.KillMaster]
// on its port, with its directory and arguments (so it reloads what it
// persisted, if its arguments enable persistence). It comes back as a master
// of its own; the sentinels then reconfigure it as a replica of the current
// master. RestartKilled returns once it replicates from the current master
// with master_link_status:up, and fails the test after WaitTimeout (30s).
func (s *Sentinel) RestartKilled(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	srv := s.killed
	s.killed = nil
	s.mu.Unlock()
	if srv == nil {
		t.Fatalf("redistest: RestartKilled: no master was killed by KillMaster (or it was restarted already)")
	}
	srv.Restart()
	master := s.MasterAddr(t)
	d := s.must(t, "RestartKilled", fmt.Sprintf("restarted %s to replicate from master %s with link up", srv.Addr, master), func() (bool, string) {
		return replicating(srv.Addr, master)
	})
	t.Logf("redistest: RestartKilled: %s replicating from %s %v after its restart", srv.Addr, master, d.Round(time.Millisecond))
}
