// Command e2erecorder is the task the runner's end-to-end tests run
// (cmd/runner/e2e_*_test.go): it records each run in a ledger LIST in
// Redis through a fencing guard, with the ledger server's time, so the
// tests can check that no two runs of an item overlapped and that every
// write carried a current token. It is built without -race by the tests'
// TestMain: the tests start thousands of them.
//
// Environment: RUNNER_ITEM, RUNNER_OWNER, RUNNER_TOKEN, RUNNER_ATTEMPT (set
// by the runner); E2E_REDIS_ADDR (the ledger's server), E2E_LEDGER (the
// ledger key; its fence HASH is E2E_LEDGER:fence), E2E_LOCK_PREFIX (the
// pool's lock key prefix, for the lease guard), E2E_SLEEP (how long a run
// lasts), E2E_GUARD ("token": check tokens only, for a ledger on another
// server than the pool).
//
// Exit codes: 0 done; 3 begin rejected; 4 end rejected; 143 SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

func main() { os.Exit(record()) }

// guardLua is the fencing guard every recorded write goes through.
// KEYS[1]: the item's lock key   KEYS[2]: ledger LIST   KEYS[3]: fence HASH item -> highest token
// ARGV[1]: event (begin|end)  ARGV[2]: lease value owner#token  ARGV[3]: item
// ARGV[4]: token  ARGV[5]: json payload without time
// ARGV[6]: "1" to require the lease to be current, empty for tokens only
// A begin is accepted only with a token above every token seen for the
// item, an end only with the item's highest token; with ARGV[6], either
// only while the lease is current too. Rejections are recorded too.
//
// The token-only guard (E2E_GUARD=token) is for a ledger living on another
// server than the pool (fault tests that restart, fail over or roll back
// the pool's Redis): it cannot read the lease, so it is the fencing check
// a real target would make.
const guardLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
local tok = tonumber(ARGV[4])
local ok = ARGV[6] ~= '1' or redis.call('GET', KEYS[1]) == ARGV[2]
if ARGV[1] == 'begin' then
  ok = ok and tok > last
  if ok then redis.call('HSET', KEYS[3], ARGV[3], ARGV[4]) end
else
  ok = ok and tok == last
end
local ev = ARGV[1]
if not ok then ev = 'rejected-' .. ARGV[1] end
redis.call('RPUSH', KEYS[2], string.format('{"ev":"%s","t":%d,%s', ev, now, ARGV[5]))
if ok then return 1 end
return 0
`

// record is the task: begin (guarded), sleep E2E_SLEEP, end
// (guarded), then exit 7 with two lines on stderr when the item is
// E2E_FAIL. SIGTERM is recorded as a "term" event with the server's time
// and ends the task.
func record() int {
	c := redis.NewClient(&redis.Options{Addr: os.Getenv("E2E_REDIS_ADDR")})
	defer c.Close()
	item, owner := os.Getenv("RUNNER_ITEM"), os.Getenv("RUNNER_OWNER")
	token, _ := strconv.ParseInt(os.Getenv("RUNNER_TOKEN"), 10, 64)
	keys := []string{os.Getenv("E2E_LOCK_PREFIX") + item, os.Getenv("E2E_LEDGER"), os.Getenv("E2E_LEDGER") + ":fence"}
	payload, _ := json.Marshal(map[string]any{"item": item, "token": token, "owner": owner, "pid": os.Getpid(), "attempt": os.Getenv("RUNNER_ATTEMPT")})
	rest := string(payload[1:]) // the guard prepends "{ev,t,"
	checkLease := "1"
	if os.Getenv("E2E_GUARD") == "token" {
		checkLease = ""
	}
	guard := func(ev string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err := c.Eval(ctx, guardLua, keys, ev, owner+"#"+strconv.FormatInt(token, 10), item, token, rest, checkLease).Int()
		if err != nil {
			fmt.Fprintln(os.Stderr, "recorder:", err)
			return false
		}
		return n == 1
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	if !guard("begin") {
		return 3
	}
	fmt.Printf("recorder: began %s token %d\n", item, token)
	d, _ := time.ParseDuration(os.Getenv("E2E_SLEEP"))
	select {
	case <-time.After(d):
	case <-term:
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ts, _ := c.Time(ctx).Result()
		c.RPush(ctx, keys[1], fmt.Sprintf(`{"ev":"term","t":%d,%s`, ts.UnixMicro(), rest))
		return 143
	}
	if !guard("end") {
		return 4
	}
	if os.Getenv("E2E_FAIL") != "" && os.Getenv("E2E_FAIL") == item {
		fmt.Fprintf(os.Stderr, "recorder: %s fails on purpose\nrecorder: exit status 7\n", item)
		return 7
	}
	return 0
}
