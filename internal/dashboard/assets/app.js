// The lockpool dashboard: live counts, throughput and runners from
// /api/events, items paged from /api/items, one item from /api/item,
// actions posted to /api/actions with the token. Times shown are aged by
// the Redis server's clock (status.now), whatever the browser's.
const $ = (id) => document.getElementById(id);
const state = {
  actions: false, // whether the server takes actions (a token is configured)
  cursor: "", // the items table's next page
  paged: false, // whether "More" was asked since the last reset
  loading: 0, // the items read in progress (a newer one stops an older)
  lastRefresh: 0,
  skew: 0, // server ms - browser ms, from the last status
  chart: null,
  item: "", // the item whose page is open, "" for the overview
};
const bucketSec = 10;
const windowSec = 3600;

function text(s) { return s === undefined || s === null ? "" : String(s); }
function serverNow() { return Date.now() + state.skew; }

function dur(ms) {
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return s.toFixed(1) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + Math.floor(s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
}
function ago(iso) { return iso ? dur(serverNow() - Date.parse(iso)) + " ago" : ""; }

// showError shows (or, with "", clears) the error of one source: the
// status stream, the items, the item page or the last action. Each clears
// only its own, so a status that reads fine does not hide a refused action.
const errors = new Map();
function showError(msg, source = "status") {
  if (msg) errors.set(source, msg);
  else errors.delete(source);
  const e = $("error");
  e.textContent = [...errors.values()].join("\n");
  e.hidden = errors.size === 0;
}

function cell(tr, value, cls) {
  const td = tr.insertCell();
  td.textContent = text(value);
  if (cls) td.className = cls;
  return td;
}

function itemLink(name) {
  const a = document.createElement("a");
  a.href = "#item/" + encodeURIComponent(name);
  a.textContent = name;
  return a;
}

// A TTL cell counts down from the lock's expiry (ttl_ms at the read).
function ttlCell(tr, ttlMs) {
  const td = tr.insertCell();
  if (ttlMs > 0) td.dataset.expires = String(Date.now() + ttlMs);
  else if (ttlMs < 0) td.textContent = "no expiry";
  return td;
}
function tickTTLs() {
  for (const td of document.querySelectorAll("td[data-expires]")) {
    td.textContent = dur(Number(td.dataset.expires) - Date.now());
  }
}

function renderCounts(st) {
  const counts = [["items", st.items], ["free", st.free], ["leased", st.leased], ["cooldown", st.cooldown],
    ["quarantine", st.quarantine], ["locked by others", st.locked_other], ["errors", st.errors || 0]];
  $("counts").replaceChildren(...counts.map(([k, v]) => {
    const d = document.createElement("div");
    d.className = "card";
    d.dataset.count = k;
    const b = document.createElement("b");
    b.textContent = text(v);
    d.append(b, k);
    return d;
  }));
}

// The chart's data: every 10 s bucket of the last hour, per second.
function series(points, nowMs) {
  const last = Math.floor(nowMs / 1000 / bucketSec);
  const first = last - windowSec / bucketSec + 1;
  const xs = [], grants = [], runs = [];
  const byBucket = new Map();
  for (const p of points || []) byBucket.set(Math.floor(Date.parse(p.at) / 1000 / bucketSec), p);
  for (let b = first; b <= last; b++) {
    const p = byBucket.get(b);
    xs.push(b * bucketSec);
    grants.push(p ? p.grants / bucketSec : 0);
    runs.push(p ? p.runs / bucketSec : 0);
  }
  return [xs, grants, runs];
}

function renderChart(st) {
  const data = series(st.throughput, Date.parse(st.now));
  const box = $("chart");
  box.dataset.points = String((st.throughput || []).length);
  const width = Math.max(300, box.clientWidth || 800);
  if (!state.chart) {
    state.chart = new window.uPlot({
      width, height: 180,
      scales: { x: { time: true } },
      axes: [{}, { label: "per second", size: 60 }],
      series: [{}, { label: "grants/s", stroke: "#0969da", width: 2 }, { label: "runs/s", stroke: "#1a7f37", width: 2 }],
    }, data, box);
    window.addEventListener("resize", () => state.chart.setSize({ width: Math.max(300, box.clientWidth), height: 180 }));
  } else {
    state.chart.setData(data);
  }
}

function renderRunners(st) {
  const runners = st.runners || [];
  $("runnercount").textContent = "(" + runners.length + " alive)";
  const tb = $("runners").tBodies[0];
  tb.replaceChildren();
  const sel = $("runner");
  const chosen = sel.value;
  sel.replaceChildren(new Option("any runner", ""));
  for (const r of runners) {
    const tr = tb.insertRow();
    tr.dataset.runner = r.id;
    // A registration lasts three heartbeats: a runner that missed more
    // than one and a half is stale (hung, or cut off from Redis).
    const beatAge = serverNow() - Date.parse(r.beat);
    const every = (Date.parse(r.expires) - Date.parse(r.beat)) / 3;
    const stale = beatAge > 1.5 * every;
    tr.dataset.state = stale ? "stale" : "alive";
    cell(tr, r.id, "name");
    const badge = document.createElement("span");
    badge.className = "badge " + (stale ? "warn" : "ok");
    badge.textContent = stale ? "stale" : "alive";
    tr.insertCell().append(badge);
    [r.host, r.pid, r.version, r.mode + (r.batch ? " " + r.batch : ""), r.concurrency, r.held, r.runs,
      (r.runs_per_s || 0).toFixed(1), r.failures, r.leases_lost,
      r.oldest_lease_ms ? dur(r.oldest_lease_ms + beatAge) : "", ago(r.beat)].forEach((v) => cell(tr, v));
    sel.add(new Option(r.id, r.id));
  }
  if (chosen && ![...sel.options].some((o) => o.value === chosen)) sel.add(new Option(chosen + " (gone)", chosen));
  sel.value = chosen;
}

function renderBatch(st) {
  const b = st.batch;
  $("batch").hidden = !b;
  if (!b) return;
  $("batchid").textContent = b.id;
  $("batchbar").max = b.total || 1;
  $("batchbar").value = (b.done || 0) + (b.failed || 0);
  let line = `${b.done} done, ${b.failed} failed, ${b.pending} pending of ${b.total}`;
  if (b.rate_per_s) line += `, ${b.rate_per_s.toFixed(1)} items/s`;
  if (b.eta_s) line += `, ETA ${dur(b.eta_s * 1000)}`;
  $("batchline").textContent = line;
  const failed = b.failed_items || [];
  $("failed").hidden = failed.length === 0;
  const tb = $("failed").tBodies[0];
  tb.replaceChildren();
  for (const f of failed) {
    const tr = tb.insertRow();
    tr.insertCell().append(itemLink(f.item));
    cell(tr, f.error);
  }
  if (b.failed_more) cell(tb.insertRow(), `... and ${b.failed_more} more`);
}

function renderStatus(st) {
  if (st.error) { showError(st.error); return; }
  showError("");
  // When the page first showed the pool's state (ms since navigation).
  if (!document.body.dataset.statusMs) document.body.dataset.statusMs = String(Math.round(performance.now()));
  state.skew = Date.parse(st.now) - Date.now();
  $("pool").textContent = st.pool;
  $("paused").hidden = !st.paused_since;
  renderCounts(st);
  renderChart(st);
  renderRunners(st);
  renderBatch(st);
}

async function getJSON(url) {
  const res = await fetch(url);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

// loadItems reads a page of items (the first when reset) into the table.
// A page holds what the server found within its time budget (maybe more
// than asked, maybe none of a sparse search yet): a search that found
// fewer than a page goes on reading for up to a second.
async function loadItems(reset) {
  if (reset) { state.cursor = ""; state.paged = false; } else state.paged = true;
  const mine = ++state.loading;
  const started = performance.now();
  const tb = $("items").tBodies[0];
  const want = tb.rows.length + 100;
  let first = true;
  do {
    const q = new URLSearchParams({ n: "100", cursor: state.cursor });
    for (const id of ["match", "state", "runner"]) if ($(id).value) q.set(id, $(id).value);
    let page;
    try {
      page = await getJSON("/api/items?" + q);
    } catch (err) {
      if (mine === state.loading) { showError("items: " + err.message, "items"); state.loading = 0; }
      return;
    }
    if (mine !== state.loading) return; // a newer read took over
    showError("", "items");
    if (reset && first) {
      tb.replaceChildren();
      // How long the first answer took, and when the page first showed items.
      $("itemsinfo").dataset.firstMs = String(Math.round(performance.now() - started));
      if (!document.body.dataset.itemsMs) document.body.dataset.itemsMs = String(Math.round(performance.now()));
    }
    first = false;
    addItemRows(tb, page.items || []);
    state.cursor = page.next;
  } while (state.cursor && tb.rows.length < (reset ? 100 : want) && performance.now() - started < 1000);
  state.loading = 0;
  $("more").hidden = !state.cursor;
  $("itemsinfo").textContent = `${tb.rows.length} shown, read in ${Math.round(performance.now() - started)} ms` + (state.cursor ? ", more to read" : "");
  tickTTLs();
}

function addItemRows(tb, items) {
  for (const it of items) {
    const tr = tb.insertRow();
    tr.dataset.item = it.item;
    tr.dataset.status = it.status;
    tr.insertCell().append(itemLink(it.item));
    tr.cells[0].className = "name";
    cell(tr, it.status);
    cell(tr, it.owner);
    cell(tr, it.token || "");
    ttlCell(tr, it.ttl_ms || 0);
    cell(tr, it.last ? it.last.attempts : "");
    cell(tr, it.last ? `${it.last.outcome} ${ago(it.last.at)}` : "");
    const td = tr.insertCell();
    for (const [name, label] of [["release", "Release"], ["quarantine", "Quarantine"], ["cancel", "Cancel"]]) {
      const btn = document.createElement("button");
      btn.textContent = label;
      btn.dataset.action = name;
      btn.dataset.item = it.item;
      btn.disabled = !state.actions;
      td.append(btn);
    }
  }
}

function kv(table, rows) {
  const tb = table.tBodies[0];
  tb.replaceChildren();
  for (const [k, v] of rows) {
    if (v === undefined || v === null || v === "") continue;
    const tr = tb.insertRow();
    tr.dataset.key = k;
    cell(tr, k, "key");
    if (k === "ttl") ttlCell(tr, v);
    else cell(tr, v);
  }
}

async function loadItem() {
  const name = state.item;
  let it;
  try {
    it = await getJSON("/api/item?name=" + encodeURIComponent(name));
  } catch (err) {
    if (name === state.item) showError(`item ${name}: ${err.message}`, "item");
    return;
  }
  if (name !== state.item) return;
  showError("", "item");
  state.skew = Date.parse(it.now) - Date.now();
  $("itemname").textContent = it.item;
  $("itempage").dataset.status = it.status;
  kv($("itemstate"), [["status", it.status], ["holder", it.owner], ["token", it.token], ["ttl", it.ttl_ms], ["error", it.error]]);
  const h = it.last;
  kv($("itemlast"), h ? [["outcome", h.outcome], ["when", `${ago(h.at)} (${h.at})`], ["runner", h.runner], ["token", h.token],
    ["attempts in a row", h.attempts], ["exit status", h.exit_status >= 0 ? h.exit_status : ""], ["error", h.error]]
    : [["outcome", "no run recorded within the history's retention"]]);
  $("stderr").textContent = h && h.stderr ? h.stderr : "(none recorded)";
  $("stderr").dataset.token = h && h.stderr_token ? String(h.stderr_token) : "";
  for (const b of $("itemactions").querySelectorAll("button")) {
    b.dataset.item = it.item;
    b.disabled = !state.actions;
  }
  tickTTLs();
}

function route() {
  const m = location.hash.match(/^#item\/(.*)$/);
  state.item = m ? decodeURIComponent(m[1]) : "";
  $("overview").hidden = !!state.item;
  $("itempage").hidden = !state.item;
  showError("", "item");
  showError("", "action");
  if (state.item) {
    $("stderr").textContent = "";
    loadItem();
  }
}

async function act(name, item) {
  const destructive = { cancel: true, quarantine: true, pause: true, "retry-failed": true };
  const body = { action: name };
  if (item) body.item = item;
  if (name === "quarantine") body.for = state.item ? $("qfor").value : "1h";
  if (destructive[name] && !confirm(`${name} ${item || "the pool"}${body.for ? " for " + body.for : ""}?`)) return;
  const res = await fetch("/api/actions", {
    method: "POST",
    headers: { "Content-Type": "application/json", "Authorization": "Bearer " + $("token").value },
    body: JSON.stringify(body),
  });
  const out = await res.json();
  showError(res.ok ? "" : `${name}: ${out.error}`, "action");
  if (state.item) loadItem();
  else loadItems(true);
}

document.addEventListener("click", (ev) => {
  const t = ev.target;
  if (t instanceof HTMLButtonElement && t.dataset.action) {
    ev.preventDefault();
    act(t.dataset.action, t.dataset.item);
    return;
  }
  const row = t instanceof Element && t.closest("#runners tr[data-runner]");
  if (row) {
    $("runner").value = row.dataset.runner;
    $("state").value = "";
    loadItems(true);
  }
});
$("filter").addEventListener("submit", (ev) => { ev.preventDefault(); loadItems(true); });
$("more").addEventListener("click", () => loadItems(false));
$("token").value = sessionStorage.getItem("lockpool-token") || "";
$("token").addEventListener("change", () => sessionStorage.setItem("lockpool-token", $("token").value));
window.addEventListener("hashchange", route);
setInterval(tickTTLs, 250);

async function start() {
  const info = await getJSON("/api/info");
  state.actions = info.actions;
  $("tokenbox").hidden = !state.actions;
  for (const id of ["pause", "resume", "retry"]) $(id).disabled = !state.actions;
  route();
  await loadItems(true);
  const es = new EventSource("/api/events");
  es.addEventListener("status", (ev) => {
    $("live").textContent = "live";
    $("live").className = "badge ok";
    renderStatus(JSON.parse(ev.data));
    if (Date.now() - state.lastRefresh < 1500) return;
    state.lastRefresh = Date.now();
    if (state.item) { loadItem(); return; }
    // The first page follows the pool live; once more is read, the table
    // stays as read.
    if (!state.paged && !state.loading) loadItems(true);
  });
  es.onerror = () => { $("live").textContent = "reconnecting"; $("live").className = "badge bad"; };
}
start();
