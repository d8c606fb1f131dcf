package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// readyTimeout bounds one /healthz check, so a hung Redis makes the probe
// fail instead of hang.
const readyTimeout = time.Second

// errReadyTimeout is why /healthz failed when the check outlived
// readyTimeout.
var errReadyTimeout = fmt.Errorf("no answer within %v", readyTimeout)

// adminServer serves the runner's admin endpoint (admin.listen):
//
//	/metrics  Prometheus metrics of the registry it was given
//	/healthz  200 "ok" when the readiness check passes, 503 otherwise
//	/status   the status value as indented JSON
//	/         the dashboard (admin.ui: true; see serveUI)
//
// Only GET and HEAD are served (405 otherwise); other paths are 404. It
// has no pprof or other debug handlers. What /status shows is exactly what
// the status function returns: the caller must build it from runtime state
// (workers, items), never from the config, so no secret can reach it.
type adminServer struct {
	ln     net.Listener
	mux    *http.ServeMux
	srv    *http.Server
	logger hclog.Logger
	done   chan struct{} // closed when Serve has returned
}

// newAdminServer listens on addr at once, so a bad or busy address fails
// here with an error naming admin.listen, then serves in the background
// until Shutdown.
//
// ready is called by /healthz with a context that ends after 1 s: nil
// answers 200 "ok\n", an error (or no answer in time) 503 "not ready:
// <err>\n". status is called by each /status request and its result is
// written as indented JSON. logger may be nil.
func newAdminServer(addr string, reg *prometheus.Registry, ready func(ctx context.Context) error, status func() any, logger hclog.Logger) (*adminServer, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if addr == "" {
		// net.Listen would take "" as "any port on every interface":
		// an empty admin.listen means "off", which the caller decides.
		return nil, errors.New("admin.listen: address is empty")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin.listen %q: %w", addr, err)
	}

	errLog := logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn})
	mux := http.NewServeMux()
	// A "GET" pattern also matches HEAD; the mux answers other methods
	// with 405 (and an Allow header) and unknown paths with 404.
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      errLog,
		ErrorHandling: promhttp.ContinueOnError,
		// Counts failed scrapes as promhttp_metric_handler_errors_total.
		Registry: reg,
		// Scrapes are cheap; more than this at once is a misbehaving
		// client.
		MaxRequestsInFlight: 4,
	}))
	mux.HandleFunc("GET /healthz", healthzHandler(ready, logger))
	mux.HandleFunc("GET /status", statusHandler(status, logger))

	s := &adminServer{
		ln:  ln,
		mux: mux,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          errLog,
		},
		logger: logger,
		done:   make(chan struct{}),
	}
	go s.serve()
	return s, nil
}

func (s *adminServer) serve() {
	defer close(s.done)
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.logger.Error("admin endpoint stopped", "error", err)
	}
}

// serveUI serves the dashboard's pages and API (admin.ui) at every path
// the endpoint's own do not take: 503 until ui is set, as the admin
// server starts before Redis answers.
func (s *adminServer) serveUI() (set func(http.Handler)) {
	var ui atomic.Pointer[http.Handler]
	s.mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := ui.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		w.Header().Set("Retry-After", "1")
		http.Error(w, "dashboard: connecting to redis", http.StatusServiceUnavailable)
	}))
	return func(h http.Handler) { ui.Store(&h) }
}

// Addr is the address the server listens on, with the port the system
// chose when admin.listen asked for port 0.
func (s *adminServer) Addr() string { return s.ln.Addr().String() }

// Shutdown stops accepting connections and waits for open requests to end,
// or for ctx to end, in which case it closes them and returns ctx's error.
// The server is stopped when Shutdown returns.
func (s *adminServer) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return err
}

func healthzHandler(ready func(ctx context.Context) error, logger hclog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := checkReady(r.Context(), ready); err != nil {
			logger.Debug("healthz: not ready", "error", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprint(w, "ok\n")
	}
}

// checkReady runs ready, giving up after readyTimeout even if ready
// ignores its context. Such a ready call is left to finish on its own; one
// that honours its context (a Redis PING does) ends with the check.
func checkReady(ctx context.Context, ready func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeoutCause(ctx, readyTimeout, errReadyTimeout)
	defer cancel()
	res := make(chan error, 1) // buffered: a late answer must not block
	go func() { res <- ready(ctx) }()
	select {
	case err := <-res:
		if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			// ready gave up because of our deadline: say so plainly
			// rather than "context deadline exceeded".
			return context.Cause(ctx)
		}
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func statusHandler(status func() any, logger hclog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// Encode to a buffer first so a value that cannot be encoded
		// gives a 500, not a 200 with half a document.
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if err := enc.Encode(status()); err != nil {
			logger.Error("status: cannot encode", "error", err)
			http.Error(w, "cannot encode status", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(buf.Bytes())
	}
}
