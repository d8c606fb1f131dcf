package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

const (
	// pollInterval is the pause between two checks of a condition awaited
	// by the topology helpers.
	pollInterval = 100 * time.Millisecond
	// probeTimeout bounds one probe command (dial included).
	probeTimeout = 2 * time.Second
)

// poll calls check every pollInterval until it reports done or timeout has
// passed. It returns how long it waited, or an error naming what was
// awaited and what check saw last.
func poll(timeout time.Duration, what string, check func() (done bool, seen string)) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		done, seen := check()
		if done {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return time.Since(start), fmt.Errorf("timed out after %v waiting for %s; last seen: %s",
				timeout, what, seen)
		}
		time.Sleep(pollInterval)
	}
}

// probeOptions are the options of the short-lived clients the helpers use to
// look at servers: one connection, no retries, short timeouts, so that a
// probe of a dead server fails fast and a probe never sees a stale pooled
// connection (Sentinel kills client connections when it reconfigures a
// server).
func probeOptions(addr string) *redis.Options {
	return &redis.Options{
		Addr:                     addr,
		DialTimeout:              time.Second,
		DialerRetries:            1,
		ReadTimeout:              probeTimeout,
		WriteTimeout:             probeTimeout,
		ContextTimeoutEnabled:    true,
		MaxRetries:               -1,
		PoolSize:                 1,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
}

// probe runs f with a fresh client connected to addr and a context bounded by
// probeTimeout.
func probe(addr string, f func(ctx context.Context, c *redis.Client) error) error {
	c := redis.NewClient(probeOptions(addr))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	return f(ctx, c)
}

// probeSentinel is probe for a Sentinel.
func probeSentinel(addr string, f func(ctx context.Context, c *redis.SentinelClient) error) error {
	c := redis.NewSentinelClient(probeOptions(addr))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	return f(ctx, c)
}

// roleOf returns the first element of ROLE at addr ("master", "slave" or
// "sentinel") and, for a replica, the address of its master and the state of
// its link ("connected" once it replicates).
func roleOf(addr string) (role, master, state string, err error) {
	err = probe(addr, func(ctx context.Context, c *redis.Client) error {
		v, err := c.Do(ctx, "ROLE").Slice()
		if err != nil {
			return err
		}
		if len(v) == 0 {
			return errors.New("empty ROLE reply")
		}
		role = fmt.Sprint(v[0])
		if role == "slave" && len(v) >= 4 {
			master = net.JoinHostPort(fmt.Sprint(v[1]), fmt.Sprint(v[2]))
			state = fmt.Sprint(v[3])
		}
		return nil
	})
	return role, master, state, err
}

// infoFields returns the fields of one INFO section at addr.
func infoFields(addr, section string) (map[string]string, error) {
	var m map[string]string
	err := probe(addr, func(ctx context.Context, c *redis.Client) error {
		s, err := c.Info(ctx, section).Result()
		if err != nil {
			return err
		}
		m = parseInfo(s)
		return nil
	})
	return m, err
}

// parseInfo parses the "key:value" lines of an INFO reply.
func parseInfo(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = v
		}
	}
	return m
}

// replicating reports whether the server at addr is a replica of master whose
// link is up (INFO replication: role:slave, master_host/master_port equal to
// master, master_link_status:up), and otherwise what it reports instead.
func replicating(addr, master string) (bool, string) {
	m, err := infoFields(addr, "replication")
	if err != nil {
		return false, fmt.Sprintf("%s: INFO replication: %v", addr, err)
	}
	got := net.JoinHostPort(m["master_host"], m["master_port"])
	if m["role"] != "slave" || got != master || m["master_link_status"] != "up" {
		return false, fmt.Sprintf("%s: role:%s master:%s master_link_status:%s", addr, m["role"], got, m["master_link_status"])
	}
	return true, ""
}
