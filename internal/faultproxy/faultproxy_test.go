package faultproxy_test

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lockpool/lockpool/internal/faultproxy"
	"github.com/lockpool/lockpool/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// start returns a proxy to the shared Redis, closed when the test ends.
func start(t *testing.T) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(redistest.Addr(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// client is a go-redis client through the proxy that never retries and
// gives up on a read after readTimeout, with one pooled connection.
func client(t *testing.T, addr string, readTimeout time.Duration) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:        addr,
		MaxRetries:  -1,
		PoolSize:    1,
		DialTimeout: time.Second,
		ReadTimeout: readTimeout,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// eventually retries op every 20ms until it succeeds or within passes.
func eventually(t *testing.T, what string, within time.Duration, op func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := op()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestFaultProxyCutResetsAndRefusesUntilHealed(t *testing.T) {
	t.Parallel()
	p := start(t)
	ctx := context.Background()
	const readTimeout = 2 * time.Second
	c := client(t, p.Addr(), readTimeout)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the healthy proxy: %v", err)
	}
	if n := p.Conns(); n != 1 {
		t.Fatalf("proxy forwards %d connections, want 1", n)
	}
	p.Cut()
	// Every command fails fast: the pooled connection was reset and new
	// ones are reset at once, so nothing waits for the read timeout.
	for i := range 3 {
		began := time.Now()
		err := c.Ping(ctx).Err()
		if err == nil {
			t.Fatalf("PING %d through a cut proxy succeeded", i)
		}
		if took := time.Since(began); took >= readTimeout/2 {
			t.Fatalf("PING %d through a cut proxy took %v (%v), want a fast failure", i, took, err)
		}
	}
	if n := p.Conns(); n != 0 {
		t.Fatalf("a cut proxy forwards %d connections, want 0", n)
	}
	p.Heal()
	eventually(t, "PING after Heal", 2*time.Second, func() error { return c.Ping(ctx).Err() })
}

func TestFaultProxyStallHoldsBytesAndDeliversThemOnHeal(t *testing.T) {
	t.Parallel()
	p := start(t)
	ctx := context.Background()
	direct := redistest.Client(t)
	key := redistest.Prefix(t) + "k"
	const readTimeout = 300 * time.Millisecond
	c := client(t, p.Addr(), readTimeout)
	if err := c.Ping(ctx).Err(); err != nil { // warm the one pooled connection
		t.Fatal(err)
	}
	p.Stall()
	began := time.Now()
	err := c.Set(ctx, key, "late", time.Minute).Err()
	took := time.Since(began)
	var nerr net.Error
	if !errors.As(err, &nerr) || !nerr.Timeout() {
		t.Fatalf("SET through a stalled proxy: got %v, want a read timeout", err)
	}
	if took < readTimeout-50*time.Millisecond {
		t.Fatalf("SET through a stalled proxy failed after %v, before the read timeout %v", took, readTimeout)
	}
	// A new connection is held too: the connection is made, no answer comes.
	c2 := client(t, p.Addr(), readTimeout)
	if err := c2.Ping(ctx).Err(); !errors.As(err, &nerr) || !nerr.Timeout() {
		t.Fatalf("PING on a new connection through a stalled proxy: got %v, want a read timeout", err)
	}
	time.Sleep(200 * time.Millisecond)
	if n, err := direct.Exists(ctx, key).Result(); err != nil || n != 0 {
		t.Fatalf("during the stall the SET reached Redis (exists=%d, err=%v)", n, err)
	}
	p.Heal()
	// The documented choice: the held request is delivered late, although
	// its client gave up.
	eventually(t, "the held SET delivered after Heal", 2*time.Second, func() error {
		v, err := direct.Get(ctx, key).Result()
		if err == nil && v != "late" {
			err = errors.New("value " + v)
		}
		return err
	})
	eventually(t, "PING after Heal", 2*time.Second, func() error { return c.Ping(ctx).Err() })
	direct.Del(ctx, key)
}

func TestFaultProxyCloseEndsConnectionsAndGoroutines(t *testing.T) {
	t.Parallel()
	p, err := faultproxy.New(redistest.Addr(t))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "+PONG\r\n" {
		t.Fatalf("PING through the proxy: %q %v", buf[:n], err)
	}
	// Leave a pump holding bytes at the shut gate and a second connection
	// waiting to be dialled: Close must still end every goroutine.
	p.Stall()
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	waiting, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	time.Sleep(50 * time.Millisecond)
	closed := make(chan struct{})
	go func() {
		p.Close() // waits for every goroutine of the proxy
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not return within 3s: a proxy goroutine is stuck")
	}
	for _, c := range []net.Conn{conn, waiting} {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(buf); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a connection through a closed proxy: read %v, want it closed", err)
		}
	}
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("a closed proxy still accepts connections")
	}
	p.Close() // a second Close does nothing
}

func TestFaultProxyConcurrentFaults(t *testing.T) {
	t.Parallel()
	p := start(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := range 3 {
		wg.Go(func() {
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				switch (i + j) % 3 {
				case 0:
					p.Cut()
				case 1:
					p.Stall()
				default:
					p.Heal()
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	for range 4 {
		c := client(t, p.Addr(), 50*time.Millisecond)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = c.Ping(ctx).Err() // fails or not: only the proxy's state is tested
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	p.Heal()
	c := client(t, p.Addr(), time.Second)
	eventually(t, "PING after the storm and Heal", 2*time.Second, func() error { return c.Ping(ctx).Err() })
}
