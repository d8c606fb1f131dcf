// The lockpool dashboard: live counts and runners from /api/events, items
// paged from /api/items, actions posted to /api/actions with the token.
const $ = (id) => document.getElementById(id);
let actions = false;
let cursor = "";
let lastRefresh = 0;

function text(s) { return s === undefined || s === null ? "" : String(s); }

function showError(msg) {
  const e = $("error");
  e.textContent = msg || "";
  e.hidden = !msg;
}

function cell(tr, value, cls) {
  const td = tr.insertCell();
  td.textContent = text(value);
  if (cls) td.className = cls;
  return td;
}

function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  return s < 60 ? s.toFixed(1) + "s ago" : Math.round(s / 60) + "m ago";
}

function renderStatus(st) {
  if (st.error) { showError(st.error); return; }
  showError("");
  $("pool").textContent = st.pool;
  const counts = [["items", st.items], ["free", st.free], ["leased", st.leased], ["cooldown", st.cooldown],
    ["quarantine", st.quarantine], ["locked by others", st.locked_other], ["errors", st.errors || 0]];
  const box = $("counts");
  box.replaceChildren(...counts.map(([k, v]) => {
    const d = document.createElement("div");
    d.className = "card";
    d.dataset.count = k;
    const b = document.createElement("b");
    b.textContent = text(v);
    d.append(b, k);
    return d;
  }));
  $("paused").hidden = !st.paused_since;
  const runners = st.runners || [];
  $("runnercount").textContent = "(" + runners.length + " alive)";
  const tb = $("runners").tBodies[0];
  tb.replaceChildren();
  for (const r of runners) {
    const tr = tb.insertRow();
    [r.id, r.host, r.pid, r.version, r.mode, r.concurrency, r.held, r.runs, r.failures, ago(r.beat)].forEach((v, i) => cell(tr, v, i === 0 ? "name" : ""));
  }
  const b = st.batch;
  $("batch").hidden = !b;
  if (b) {
    $("batchid").textContent = b.id;
    $("batchbar").max = b.total || 1;
    $("batchbar").value = (b.done || 0) + (b.failed || 0);
    let line = `${b.done} done, ${b.failed} failed, ${b.pending} pending of ${b.total}`;
    if (b.rate_per_s) line += `, ${b.rate_per_s.toFixed(1)} items/s`;
    if (b.eta_s) line += `, ETA ${Math.round(b.eta_s)}s`;
    $("batchline").textContent = line;
  }
}

async function loadItems(reset) {
  if (reset) cursor = "";
  const q = new URLSearchParams({ n: "100", cursor });
  if ($("match").value) q.set("match", $("match").value);
  if ($("state").value) q.set("state", $("state").value);
  const res = await fetch("/api/items?" + q);
  const page = await res.json();
  if (!res.ok) { showError(page.error); return; }
  const tb = $("items").tBodies[0];
  if (reset) tb.replaceChildren();
  for (const it of page.items || []) {
    const tr = tb.insertRow();
    tr.dataset.item = it.item;
    tr.dataset.status = it.status;
    cell(tr, it.item, "name");
    cell(tr, it.status);
    cell(tr, it.owner);
    cell(tr, it.ttl_ms > 0 ? (it.ttl_ms / 1000).toFixed(1) + "s" : "");
    cell(tr, it.token || "");
    cell(tr, it.last ? `${it.last.outcome} ${ago(it.last.at)}` : "");
    const td = tr.insertCell();
    for (const [name, label] of [["release", "Release"], ["quarantine", "Quarantine"], ["cancel", "Cancel"]]) {
      const btn = document.createElement("button");
      btn.textContent = label;
      btn.dataset.action = name;
      btn.dataset.item = it.item;
      btn.disabled = !actions;
      td.append(btn);
    }
  }
  cursor = page.next;
  $("more").hidden = !cursor;
}

async function act(name, item) {
  const destructive = { cancel: true, quarantine: true, pause: true, "retry-failed": true };
  if (destructive[name] && !confirm(`${name} ${item || "the pool"}?`)) return;
  const body = { action: name };
  if (item) body.item = item;
  if (name === "quarantine") body.for = "1h";
  const res = await fetch("/api/actions", {
    method: "POST",
    headers: { "Content-Type": "application/json", "Authorization": "Bearer " + $("token").value },
    body: JSON.stringify(body),
  });
  const out = await res.json();
  showError(res.ok ? "" : `${name}: ${out.error}`);
  loadItems(true);
}

document.addEventListener("click", (ev) => {
  const t = ev.target;
  if (t instanceof HTMLButtonElement && t.dataset.action) {
    ev.preventDefault();
    act(t.dataset.action, t.dataset.item);
  }
});
$("filter").addEventListener("submit", (ev) => { ev.preventDefault(); loadItems(true); });
$("more").addEventListener("click", () => loadItems(false));
$("token").value = sessionStorage.getItem("lockpool-token") || "";
$("token").addEventListener("change", () => sessionStorage.setItem("lockpool-token", $("token").value));

async function start() {
  const info = await (await fetch("/api/info")).json();
  actions = info.actions;
  $("tokenbox").hidden = !actions;
  for (const id of ["pause", "resume", "retry"]) $(id).disabled = !actions;
  await loadItems(true);
  const es = new EventSource("/api/events");
  es.addEventListener("status", (ev) => {
    $("live").textContent = "live";
    $("live").className = "badge ok";
    renderStatus(JSON.parse(ev.data));
    // The first page follows the pool live; later pages stay as read.
    if (!$("more").hidden && cursor && $("items").tBodies[0].rows.length > 100) return;
    if (Date.now() - lastRefresh > 1500) { lastRefresh = Date.now(); loadItems(true); }
  });
  es.onerror = () => { $("live").textContent = "reconnecting"; $("live").className = "badge bad"; };
}
start();
