package main

// The dashboard's server end to end through the built binary: its page,
// its API against Redis, and the security of its actions. (Its page in a
// real browser is not tested yet: see issue 13.)

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// post sends an action with the given headers and returns the status code.
func post(t *testing.T, url, body string, header map[string]string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// startUI starts runner ui on cfg with env, and returns its base URL.
func startUI(t *testing.T, cfg string, env []string) string {
	t.Helper()
	return startUIWith(t, cfg, procOpts{env: env})
}

// startUIWith is startUI with the process's options (the binary).
func startUIWith(t *testing.T, cfg string, o procOpts) string {
	t.Helper()
	p := startProc(t, "runner ui", o, "ui", "-c", cfg, "--listen", "127.0.0.1:0")
	var base string
	re := regexp.MustCompile(`dashboard on (http://\S+)/`)
	waitFor(t, "runner ui listening", 20*time.Second, func() (bool, string) {
		if m := re.FindStringSubmatch(p.stdout.String()); m != nil {
			base = m[1]
		}
		return base != "", p.out.String()
	})
	return base
}

func TestE2EDashboardServer(t *testing.T) {
	parallel(t)
	e := newE2E(t)
	cfg := e.config("ui", itemNames(3), "", time.Second)
	if res := runnerCmd(t, procOpts{}, append([]string{"pool", "add", "-c", cfg, "--"}, itemNames(3)...)...); res.code != 0 {
		t.Fatalf("pool add: %d %s", res.code, res.out)
	}
	control(t, cfg, "quarantined", "quarantine", "item-01")

	ro := startUI(t, cfg, nil)
	code, page := httpGet(t, ro+"/")
	if code != 200 || !strings.Contains(page, `<script type="module" src="app.js">`) {
		t.Fatalf("GET /: %d\n%s", code, page)
	}
	for _, asset := range []string{"/app.js", "/style.css"} {
		if code, _ := httpGet(t, ro+asset); code != 200 {
			t.Errorf("GET %s: %d", asset, code)
		}
	}
	// The counts are pool status's.
	code, body := httpGet(t, ro+"/api/status")
	var st statusReport
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil || st.Items != 3 || st.Quarantine != 1 {
		t.Fatalf("GET /api/status: %d %v %+v", code, err, st)
	}
	if want := statusJSON(t, cfg); want.Free != st.Free || want.Quarantine != st.Quarantine {
		t.Errorf("/api/status %+v differs from pool status --json %+v", st, want)
	}
	code, body = httpGet(t, ro+"/api/items?state=quarantine")
	var pageOf struct {
		Items []itemInfo `json:"items"`
	}
	if err := json.Unmarshal([]byte(body), &pageOf); code != 200 || err != nil || len(pageOf.Items) != 1 || pageOf.Items[0].Item != "item-01" {
		t.Fatalf("GET /api/items?state=quarantine: %d %v %s", code, err, body)
	}
	// The pool's gauges on /metrics.
	waitFor(t, "the pool's gauges on runner ui's /metrics", 10*time.Second, func() (bool, string) {
		_, body := httpGet(t, ro+"/metrics")
		return strings.Contains(body, `lockpool_pool_items{state="quarantine"} 1`), body
	})
	// One item's page; a name not in the pool is 404.
	code, body = httpGet(t, ro+"/api/item?name=item-01")
	var one itemInfo
	if err := json.Unmarshal([]byte(body), &one); code != 200 || err != nil || one.Item != "item-01" || one.Status != "quarantine" {
		t.Fatalf("GET /api/item?name=item-01: %d %v %s", code, err, body)
	}
	for _, q := range []string{"name=item-99", "name=", ""} {
		if code, body := httpGet(t, ro+"/api/item?"+q); code != http.StatusNotFound || !strings.Contains(body, "no such item") {
			t.Errorf("GET /api/item?%s: %d %s, want 404", q, code, body)
		}
	}
	// Read-only without a token: refused, nothing changed.
	if code := post(t, ro+"/api/actions", `{"action":"pause"}`, map[string]string{"Content-Type": "application/json"}); code != http.StatusForbidden {
		t.Errorf("pause on a read-only dashboard: %d, want 403", code)
	}
	if !statusJSON(t, cfg).PausedSince.IsZero() {
		t.Fatalf("a refused action paused the pool")
	}

	// With a token: only a JSON POST bearing it, from no other origin.
	// ui.token, when set, is the dashboard's token instead of admin.token.
	const token = "s3cret-token"
	rw := startUI(t, cfg, []string{"RUNNER_ADMIN_TOKEN=admin-token", "RUNNER_UI_TOKEN=" + token})
	auth := "Bearer " + token
	for _, c := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"no token", map[string]string{"Content-Type": "application/json"}, 403},
		{"wrong token", map[string]string{"Content-Type": "application/json", "Authorization": "Bearer nope"}, 403},
		{"admin.token when ui.token is set", map[string]string{"Content-Type": "application/json", "Authorization": "Bearer admin-token"}, 403},
		{"a form", map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Authorization": auth}, 415},
		{"another origin", map[string]string{"Content-Type": "application/json", "Authorization": auth, "Origin": "http://evil.example"}, 403},
	} {
		if code := post(t, rw+"/api/actions", `{"action":"pause"}`, c.header); code != c.want {
			t.Errorf("pause with %s: %d, want %d", c.name, code, c.want)
		}
	}
	if !statusJSON(t, cfg).PausedSince.IsZero() {
		t.Fatalf("a refused action paused the pool")
	}
	h := map[string]string{"Content-Type": "application/json", "Authorization": auth, "Origin": rw}
	if code := post(t, rw+"/api/actions", `{"action":"pause"}`, h); code != 200 {
		t.Fatalf("pause with the token: %d", code)
	}
	if statusJSON(t, cfg).PausedSince.IsZero() {
		t.Fatalf("pause with the token did not pause the pool")
	}
	if code := post(t, rw+"/api/actions", `{"action":"release","item":"item-01"}`, h); code != 200 {
		t.Fatalf("release with the token: %d", code)
	}
	if st := statusJSON(t, cfg); st.Quarantine != 0 {
		t.Errorf("after release: %d quarantined", st.Quarantine)
	}
	if code := post(t, rw+"/api/actions", `{"action":"explode"}`, h); code != 400 {
		t.Errorf("an unknown action: %d, want 400", code)
	}
	if code := post(t, rw+"/api/actions", `{"action":"resume"}`, h); code != 200 {
		t.Fatalf("resume with the token: %d", code)
	}

	// The live view: server-sent status events.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, rw+"/api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	events := 0
	for sc.Scan() && events < 2 {
		if strings.HasPrefix(sc.Text(), "data: ") && strings.Contains(sc.Text(), `"items":3`) {
			events++
		}
	}
	if events < 2 {
		t.Errorf("saw %d status events with the pool's counts, want 2 (%v)", events, sc.Err())
	}
}
