// Package dashboard serves the pool's live web view: the pool's counts,
// the fleet's runners and the items, live over server-sent events, and the
// fleet-wide controls as POST actions. Everything it shows and does comes
// from a Source (the runner implements it over Redis); its page is
// embedded in the binary and loads nothing from elsewhere.
//
// Security: GETs only read. An action is a POST of a JSON body with
// "Authorization: Bearer <token>"; without a configured token every action
// is refused (403) and the view is read-only. A cross-site form cannot send
// a JSON body, a cross-site script cannot read a response nor set the
// header without a preflight the server never grants, and a request whose
// Origin is not the server's own is refused: actions are CSRF-safe.
package dashboard

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ErrBadAction is the error of an action the dashboard does not know, or
// one missing what it needs (an item, a duration).
var ErrBadAction = errors.New("dashboard: bad action")

// ErrNoItem is the error of Source.Item for a name that is not one of the
// pool's items.
var ErrNoItem = errors.New("dashboard: no such item")

// Source is what the dashboard shows and acts on.
type Source interface {
	// Status is the pool's state now, as JSON-encodable data.
	Status(ctx context.Context) (any, error)
	// Items returns a page of items matching q.
	Items(ctx context.Context, q Query) (Page, error)
	// Item returns one item's state and history, or an error wrapping
	// ErrNoItem.
	Item(ctx context.Context, name string) (any, error)
	// Act carries out an action (see Action), fleet-wide.
	Act(ctx context.Context, a Action) error
}

// Query asks for a page of items: from Cursor ("" for the first page),
// about N of them, those in any of States (all when empty), leased by
// Runner's workers when set (a runner's ID: its leases' owners are
// "<Runner>/w<N>"), and with names matching Match (a Redis glob; all when
// ""; a name without glob characters is looked up, not searched). A page
// may hold fewer than N items, even none before the end, when the walk
// behind it ran out of time, and more than N (no item is skipped to cut
// a page short).
type Query struct {
	Cursor string
	N      int
	States []string
	Match  string
	Runner string
}

// ErrBadQuery is the error of a Query a Source cannot answer as asked (a
// malformed cursor, an unknown state): the request's fault, not the
// pool's.
var ErrBadQuery = errors.New("dashboard: bad query")

// Page is a page of items; Next is "" after the last.
type Page struct {
	Items any    `json:"items"`
	Next  string `json:"next"`
}

// Action is an operator's action: Name is one of pause, resume (the pool),
// release, quarantine, cancel (an item: Item), retry-failed (the batch);
// For is a quarantine's duration ("1h").
type Action struct {
	Name string `json:"action"`
	Item string `json:"item,omitempty"`
	For  string `json:"for,omitempty"`
}

// Options configure the handler.
type Options struct {
	// Token authorizes actions; "" makes the view read-only.
	Token string
	// Interval is how often the live view is pushed. Default 1s.
	Interval time.Duration
	// Logger receives the handler's errors. Default: none.
	Logger hclog.Logger
}

//go:embed assets
var assets embed.FS

// maxBody bounds an action's body.
const maxBody = 8 << 10

// Handler serves the dashboard:
//
//	GET  /              the page (assets/index.html, app.js, style.css)
//	GET  /api/status    the pool's state (Source.Status) as JSON
//	GET  /api/items     a page of items: ?cursor=&n=&state=&runner=&match=
//	GET  /api/item      one item: ?name=
//	GET  /api/events    server-sent events: "status" every Interval
//	GET  /api/info      {"actions": true|false}: whether actions are enabled
//	POST /api/actions   an Action as JSON (see the package comment)
func Handler(src Source, o Options) http.Handler {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	static, _ := fs.Sub(assets, "assets")
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := src.Status(r.Context())
		if err != nil {
			o.fail(w, http.StatusBadGateway, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /api/info", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"actions": o.Token != ""})
	})
	mux.HandleFunc("GET /api/items", func(w http.ResponseWriter, r *http.Request) {
		q := Query{Cursor: r.URL.Query().Get("cursor"), Match: r.URL.Query().Get("match"), Runner: r.URL.Query().Get("runner"), N: 100}
		if n, err := strconv.Atoi(r.URL.Query().Get("n")); err == nil && n > 0 {
			q.N = min(n, 1000)
		}
		for _, s := range r.URL.Query()["state"] {
			if s != "" {
				q.States = append(q.States, s)
			}
		}
		p, err := src.Items(r.Context(), q)
		if err != nil {
			code := http.StatusBadGateway
			if errors.Is(err, ErrBadQuery) {
				code = http.StatusBadRequest
			}
			o.fail(w, code, err)
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	mux.HandleFunc("GET /api/item", func(w http.ResponseWriter, r *http.Request) {
		it, err := src.Item(r.Context(), r.URL.Query().Get("name"))
		switch {
		case errors.Is(err, ErrNoItem):
			o.fail(w, http.StatusNotFound, err)
		case err != nil:
			o.fail(w, http.StatusBadGateway, err)
		default:
			writeJSON(w, http.StatusOK, it)
		}
	})
	mux.HandleFunc("GET /api/events", func(w http.ResponseWriter, r *http.Request) { o.events(w, r, src) })
	mux.HandleFunc("POST /api/actions", func(w http.ResponseWriter, r *http.Request) { o.act(w, r, src) })
	return secure(mux)
}

// secure adds the headers every answer carries: no framing, no sniffing,
// scripts and styles from this server only.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func (o Options) act(w http.ResponseWriter, r *http.Request, src Source) {
	if o.Token == "" {
		o.fail(w, http.StatusForbidden, errors.New("read-only: no token is configured"))
		return
	}
	auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(auth), []byte(o.Token)) != 1 {
		o.fail(w, http.StatusForbidden, errors.New("missing or wrong token"))
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		if u, err := url.Parse(origin); err != nil || u.Host != r.Host {
			o.fail(w, http.StatusForbidden, fmt.Errorf("cross-origin request from %q", origin))
			return
		}
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		o.fail(w, http.StatusUnsupportedMediaType, errors.New("an action is a JSON body"))
		return
	}
	var a Action
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		o.fail(w, http.StatusBadRequest, fmt.Errorf("%w: %v", ErrBadAction, err))
		return
	}
	if err := src.Act(r.Context(), a); err != nil {
		code := http.StatusConflict
		if errors.Is(err, ErrBadAction) {
			code = http.StatusBadRequest
		}
		o.fail(w, code, err)
		return
	}
	o.Logger.Info("action", "action", a.Name, "item", a.Item, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]string{"ok": a.Name})
}

// events pushes the status every Interval until the client goes.
func (o Options) events(w http.ResponseWriter, r *http.Request, src Source) {
	fl, ok := w.(http.Flusher)
	if !ok {
		o.fail(w, http.StatusInternalServerError, errors.New("streaming unsupported"))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		st, err := src.Status(r.Context())
		var data []byte
		if err == nil {
			data, err = json.Marshal(st)
		}
		if err != nil {
			if r.Context().Err() != nil {
				return
			}
			data, _ = json.Marshal(map[string]string{"error": err.Error()})
		}
		if _, err := fmt.Fprintf(w, "event: status\ndata: %s\n\n", data); err != nil {
			return
		}
		fl.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
	}
}

func (o Options) fail(w http.ResponseWriter, code int, err error) {
	if code >= 500 {
		o.Logger.Warn("dashboard request failed", "error", err)
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
