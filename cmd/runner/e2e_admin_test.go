package main

// The admin endpoint end to end: /healthz, /status and /metrics of a
// running runner, no secret in them, and no listening socket at all
// unless admin.listen is set.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestE2EAdminEndpointAndSecrets runs a runner that authenticates as an ACL
// user with a password and serves its admin endpoint, then checks
// /healthz, /status and /metrics, and that the password appears nowhere:
// not in the logs, /status or /metrics.
func TestE2EAdminEndpointAndSecrets(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	const password = "s3cret-Pw-9d1f"
	user := e.userName("runner")
	aclUser(t, e.client, user, password, "~*", "&*", "+@all")
	cfg := writeFile(t, e.dir, "admin.yaml", fmt.Sprintf(`redis:
  addr: %q
  username: %q
  password: %q
pool:
  prefix: %q
  items: [a, b, c]
worker:
  concurrency: 2
task:
  command: ["sleep", "0.05"]
admin:
  listen: 127.0.0.1:0
log:
  level: debug
`, e.addr, user, password, e.prefix))
	r := startRunner(t, "runner", nil, "run", "-c", cfg)
	base := r.adminBase()
	waitFor(t, "/healthz ready", 10*time.Second, func() (bool, string) {
		code, body := httpGet(t, base+"/healthz")
		return code == 200, fmt.Sprintf("%d %q", code, body)
	})
	var metrics string
	successes := regexp.MustCompile(`lockpool_task_runs_total\{outcome="success"\} [1-9]`)
	waitFor(t, "successful runs in /metrics", 20*time.Second, func() (bool, string) {
		_, metrics = httpGet(t, base+"/metrics")
		return successes.MatchString(metrics), "none"
	})
	for _, name := range []string{"lockpool_leases_held", `lockpool_acquires_total{result="ok"}`, "lockpool_refreshes_total", "lockpool_leases_lost_total", "lockpool_task_duration_seconds_bucket"} {
		if !strings.Contains(metrics, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	code, status := httpGet(t, base+"/status")
	var st struct {
		Backend string `json:"backend"`
		Workers []struct {
			ID    int    `json:"id"`
			State string `json:"state"`
		} `json:"workers"`
	}
	if err := json.Unmarshal([]byte(status), &st); code != 200 || err != nil || st.Backend != "redis" || len(st.Workers) != 2 {
		t.Fatalf("/status = %d %s (%v)", code, status, err)
	}
	stopRunners(t, 10*time.Second, r)
	for what, text := range map[string]string{"logs": r.out.String(), "/status": status, "/metrics": metrics} {
		assertNoSecret(t, what, text, password)
	}
}

// TestE2ESecurityAdminOffUnlessConfigured checks, from the kernel's socket
// tables, that a runner without admin.listen has no listening socket, nor
// do its task processes, while one with admin.listen has exactly the one
// it logged (the control showing the check sees sockets at all).
func TestE2ESecurityAdminOffUnlessConfigured(t *testing.T) {
	parallel(t)
	if runtime.GOOS != "linux" {
		t.Fatalf("this test reads /proc and needs Linux, got %s", runtime.GOOS)
	}
	off, on := newE2E(t), newE2E(t)
	items := itemNames(3)
	rOff := startRunner(t, "runner-admin-off", nil, "run", "-c", off.config("off", items, "worker:\n  concurrency: 2\n", 300*time.Millisecond))
	rOn := startRunner(t, "runner-admin-on", nil, "run", "-c", on.config("on", items, "worker:\n  concurrency: 2\nadmin:\n  listen: 127.0.0.1:0\n", 300*time.Millisecond))
	base := rOn.adminBase()
	for _, r := range []*runnerProc{rOff, rOn} {
		waitFor(t, r.name+" running tasks", 30*time.Second, r.untilLogged("recorder: began"))
	}
	// Sampled while tasks run, so their processes are checked too.
	offSocks := processTreeSockets(t, rOff.pid())
	onSocks := processTreeSockets(t, rOn.pid())
	if len(offSocks.listening) != 0 {
		t.Errorf("runner without admin.listen listens on %v", offSocks.listening)
	}
	if offSocks.connected == 0 {
		t.Errorf("no connected socket found for the runner without admin.listen: the check cannot see its sockets")
	}
	wantOn := []string{"tcp " + strings.TrimPrefix(base, "http://")}
	if fmt.Sprint(onSocks.listening) != fmt.Sprint(wantOn) {
		t.Errorf("runner with admin.listen listens on %v, want %v", onSocks.listening, wantOn)
	}
	stopRunners(t, 20*time.Second, rOff, rOn)
	off.checkLedger(off.events())
}

// socketSummary is what a process tree holds: its listening sockets as
// "tcp host:port", "udp host:port" or "unix path", and how many connected
// sockets it has (the control that the check sees anything at all).
type socketSummary struct {
	listening []string
	connected int
}

// processTreeSockets reads the sockets of pid and of its descendants from
// /proc/<pid>/fd and the kernel's socket tables. Processes that exit
// meanwhile are skipped.
func processTreeSockets(t *testing.T, root int) socketSummary {
	t.Helper()
	inodes := map[string]bool{}
	for _, pid := range processTree(root) {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue // exited
		}
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if ino, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
				inodes[strings.TrimSuffix(ino, "]")] = true
			}
		}
	}
	var s socketSummary
	for _, table := range []string{"tcp", "tcp6", "udp", "udp6"} {
		for _, f := range procTable(t, root, table) {
			if len(f) < 10 || !inodes[f[9]] {
				continue
			}
			proto := strings.TrimSuffix(table, "6")
			listening := f[3] == "0A" // TCP_LISTEN
			if proto == "udp" {
				listening = strings.HasSuffix(f[2], ":0000") // bound, not connected
			}
			if listening {
				s.listening = append(s.listening, proto+" "+procAddr(t, f[1]))
			} else {
				s.connected++
			}
		}
	}
	for _, f := range procTable(t, root, "unix") {
		// Num RefCount Protocol Flags Type St Inode [Path]
		if len(f) < 7 || !inodes[f[6]] {
			continue
		}
		flags, _ := strconv.ParseUint(f[3], 16, 32)
		if flags&0x10000 != 0 { // __SO_ACCEPTCON: listening
			path := "(unnamed)"
			if len(f) > 7 {
				path = f[7]
			}
			s.listening = append(s.listening, "unix "+path)
		}
	}
	return s
}

// procTable returns the fields of each row of /proc/<pid>/net/<name>.
func procTable(t *testing.T, pid int, name string) [][]string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, name))
	if errors.Is(err, os.ErrNotExist) && strings.HasSuffix(name, "6") {
		return nil // no IPv6 in this kernel
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows [][]string
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		rows = append(rows, strings.Fields(sc.Text()))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// procAddr decodes a /proc/net address ("0100007F:1F90": IPv4 as a
// little-endian word, or IPv6 as four of them) to host:port.
func procAddr(t *testing.T, s string) string {
	t.Helper()
	hexIP, hexPort, _ := strings.Cut(s, ":")
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil || len(hexIP)%8 != 0 {
		t.Fatalf("bad /proc/net address %q", s)
	}
	ip := make(net.IP, 0, len(hexIP)/2)
	for w := 0; w < len(hexIP); w += 8 {
		v, err := strconv.ParseUint(hexIP[w:w+8], 16, 32)
		if err != nil {
			t.Fatalf("bad /proc/net address %q", s)
		}
		ip = append(ip, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
	}
	return net.JoinHostPort(ip.String(), strconv.FormatUint(port, 10))
}
