// Bergamot web UI: no build step, no framework. State comes from /api/state,
// live changes from /ws; only the DOM nodes of changed objects are touched.
"use strict";

const STATUSES = ["PENDING", "INFO", "OK", "WARNING", "CRITICAL", "UNKNOWN", "TIMEOUT", "ERROR", "DISCONNECTED", "ACTION"];
// Best to worst, as Status::BY_RANK (docs/decisions.md "Severity order");
// STATUSES above is the code order that indexes `counts`.
const RANK = ["PENDING", "INFO", "OK", "WARNING", "UNKNOWN", "TIMEOUT", "ERROR", "ACTION", "DISCONNECTED", "CRITICAL"];
const checks = new Map();   // id -> check view (with .state)
const groups = new Map();   // id -> {id, name, parents, children, aggregate}
const locations = new Map();
const view = { kind: "tree", id: null, rows: new Map(), nodes: new Map(), detail: null };
const pending = new Map();  // coalesced updates waiting for the next frame
let site = "";
let ws = null;

const $ = (sel) => document.querySelector(sel);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}
function badge(status) { return el("span", { class: "badge s-" + status }, status); }
function fmtTime(t) { return t ? new Date(t).toLocaleTimeString() : "—"; }
function ago(t) {
  if (!t) return "never";
  const s = Math.max(0, Math.round((Date.now() - new Date(t)) / 1000));
  return s < 60 ? s + "s ago" : s < 3600 ? Math.round(s / 60) + "m ago" : Math.round(s / 3600) + "h ago";
}
function toast(msg, err) {
  const t = el("div", { class: err ? "err" : "" }, msg);
  $("#toast").append(t);
  setTimeout(() => t.remove(), 4000);
}
// Web Animations: no forced layout per flashed row (class toggling needs one).
function flash(node) {
  if (node.animate) node.animate([{ background: "#fff2b3" }, { background: "transparent" }], { duration: 1200, easing: "ease-out" });
}

// ---- auth --------------------------------------------------------------
function authHeader() { return sessionStorage.getItem("bergamot.auth"); }
async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  const a = authHeader();
  if (a) headers.authorization = a;
  const r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const data = await r.json().catch(() => ({}));
  if (r.status === 401 || r.status === 403) {
    const ok = await login(data.error || "This needs an operator account.");
    if (ok) return api(method, path, body);
  }
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
function login(why) {
  return new Promise((resolve) => {
    const d = $("#login");
    $("#login-why").textContent = why || "";
    d.returnValue = "";
    d.onclose = async () => {
      if (d.returnValue !== "ok") return resolve(false);
      sessionStorage.setItem("bergamot.auth", "Basic " + btoa($("#login-user").value + ":" + $("#login-pass").value));
      await whoami();
      resolve(true);
    };
    $("#login-cancel").onclick = () => d.close("cancel");
    d.showModal();
  });
}
async function whoami() {
  const h = {}; const a = authHeader(); if (a) h.authorization = a;
  const r = await fetch("/api/whoami", { headers: h });
  let loggedIn = false;
  if (r.ok) { const w = await r.json(); loggedIn = !w.anonymous; $("#who").textContent = w.anonymous ? "anonymous (read-only)" : w.name + " · " + w.role; }
  else $("#who").textContent = "not logged in";
  $("#login-btn").hidden = loggedIn;
  $("#logout-btn").hidden = !loggedIn;
}
function logout() {
  sessionStorage.removeItem("bergamot.auth");
  toast("Logged out");
  whoami();
}

// ---- data --------------------------------------------------------------
async function loadState() {
  const s = await api("GET", "/api/state");
  site = s.site;
  $("#site").textContent = site;
  // A live update may have arrived while this snapshot was in flight: keep
  // whichever check state is newer.
  const old = new Map(checks);
  checks.clear(); groups.clear(); locations.clear();
  for (const c of s.checks) {
    const o = old.get(c.id);
    if (o && o.state && c.state && o.state.version > c.state.version) c.state = o.state;
    checks.set(c.id, c);
  }
  for (const g of s.groups) groups.set(g.id, g);
  for (const l of s.locations) locations.set(l.id, l);
  rebuildCounts();
  renderTotals();
}
function applyUpdate(u) {
  if (u.kind === "check") {
    const c = checks.get(u.check_id);
    if (!c || (c.state && c.state.version > u.state.version)) return;
    const before = c.state;
    c.state = u.state;
    moveCounts(c, before, c.state);
    updateCheckViews(c);
  } else if (u.kind === "group") {
    const g = groups.get(u.group_id);
    if (!g) return;
    g.aggregate = u.aggregate;
    updateGroupViews(g);
  } else if (u.kind === "location") {
    const l = locations.get(u.location_id);
    if (l) l.aggregate = u.aggregate;
  } else if (u.kind === "alert") {
    const c = checks.get(u.check_id);
    // One toast per few seconds at most: a busy site must not bury the page.
    if (c && u.event === "alert" && Date.now() - (applyUpdate.lastToast || 0) > 3000) {
      applyUpdate.lastToast = Date.now();
      toast(c.display_name + ": alert " + u.status, true);
    }
  }
}
// Updates are applied once per animation frame, at most ~8 ms of work per
// frame; the rest waits for the next frame (the page never freezes, however
// many updates arrive at once).
function scheduleFlush() {
  if (scheduleFlush.queued) return;
  scheduleFlush.queued = true;
  requestAnimationFrame(() => {
    scheduleFlush.queued = false;
    const t0 = performance.now();
    let n = 0;
    for (const [key, u] of pending) {
      pending.delete(key);
      applyUpdate(u);
      if (++n % 64 === 0 && performance.now() - t0 > 8) break;
    }
    for (const gid of dirtyGroups) { const g = groups.get(gid); if (g) updateGroupViews(g); else if (gid === UNGROUPED) updateUngrouped(); }
    dirtyGroups.clear();
    renderTotals();
    if (pending.size) scheduleFlush();
  });
}
// Every server frame is a JSON array of messages (replies and updates).
let subscribedOnce = false;
function onMessage(m) {
  if (m.subscribed) {
    // Catch up on what changed before the subscription. The first time, the
    // page was just rendered: refresh it in place (keeps the scroll position);
    // after a reconnect, render it again (the model may have changed).
    const first = !subscribedOnce;
    subscribedOnce = true;
    loadState().then(first ? refreshView : route);
    return;
  }
  if (m.error) { toast(m.error, true); return; }
  if (!m.kind) return;
  // Latest per object until the next animation frame; alerts are events and all kept.
  const key = m.kind === "alert" ? "a" + m.seq : m.kind + (m.check_id || m.group_id || m.location_id);
  const prev = pending.get(key);
  if (!prev || m.kind !== "check" || prev.state.version < m.state.version) pending.set(key, m);
}
// A browser sends no Authorization header on a websocket: a logged-in page
// asks /api/whoami for a short-lived ticket and opens /ws?ticket=...
// (the password never goes into a URL).
async function wsTicket() {
  const a = authHeader();
  if (!a) return "";
  try {
    const r = await fetch("/api/whoami", { headers: { authorization: a } });
    const w = r.ok ? await r.json() : {};
    return w.ws_ticket ? "?ticket=" + encodeURIComponent(w.ws_ticket) : "";
  } catch (e) { return ""; }
}
async function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const q = await wsTicket();
  ws = new WebSocket(proto + "//" + location.host + "/ws" + q);
  ws.onopen = () => {
    $("#conn").textContent = "live"; $("#conn").className = "conn up";
    ws.send(JSON.stringify({ subscribe: { all: true } }));
  };
  ws.onclose = () => {
    $("#conn").textContent = "offline"; $("#conn").className = "conn down";
    setTimeout(() => connect(), 2000);
  };
  ws.onmessage = (ev) => {
    const data = JSON.parse(ev.data);
    for (const m of Array.isArray(data) ? data : [data]) onMessage(m);
    if (pending.size) scheduleFlush();
  };
}

// ---- local counts ------------------------------------------------------
// The tree and the header count the same way, from the check states the page
// holds: a check that is acknowledged, in downtime, suppressed or
// encompassed ("ignored") counts under its own mark, not under a status;
// every other check under its status. The group badge is the server's
// aggregate status (the worst status of the checks not ignored).
const local = new Map();    // group id (or UNGROUPED) -> counts
const UNGROUPED = "ungrouped";
let ancestorsOf = new Map(); // check id -> [group ids, itself and above]
function isIgnored(s) { return s.suppressed || s.in_downtime || (s.acknowledged && s.acknowledged !== "none") || s.encompassed; }
function emptyCounts() { return { total: 0, n: new Array(STATUSES.length).fill(0), ack: 0, downtime: 0, suppressed: 0, encompassed: 0, ignored: 0 }; }
function addTo(a, s, k) {
  a.total += k;
  if (isIgnored(s)) {
    a.ignored += k;
    if (s.acknowledged && s.acknowledged !== "none") a.ack += k;
    if (s.in_downtime) a.downtime += k;
    if (s.suppressed) a.suppressed += k;
    if (s.encompassed) a.encompassed += k;
  } else a.n[STATUSES.indexOf(s.status)] += k;
}
function rebuildCounts() {
  const up = new Map();
  const upOf = (gid, seen) => {
    if (up.has(gid)) return up.get(gid);
    const out = new Set([gid]);
    const g = groups.get(gid);
    if (g) for (const p of g.parents) if (!seen.has(p)) for (const x of upOf(p, new Set([...seen, p]))) out.add(x);
    up.set(gid, out);
    return out;
  };
  ancestorsOf = new Map(); local.clear();
  local.set(UNGROUPED, emptyCounts());
  for (const g of groups.values()) local.set(g.id, emptyCounts());
  for (const c of checks.values()) {
    const all = new Set();
    for (const gid of c.groups) if (groups.has(gid)) for (const x of upOf(gid, new Set([gid]))) all.add(x);
    const list = all.size ? [...all] : [UNGROUPED];
    ancestorsOf.set(c.id, list);
    for (const gid of list) addTo(local.get(gid), c.state, 1);
  }
}
const dirtyGroups = new Set();
function moveCounts(c, before, after) {
  for (const gid of ancestorsOf.get(c.id) || []) {
    const a = local.get(gid); if (!a) continue;
    addTo(a, before, -1); addTo(a, after, 1); dirtyGroups.add(gid);
  }
}
function totalsOf(list) { const a = emptyCounts(); for (const c of list) addTo(a, c.state, 1); return a; }
// Status pills, then the ignored checks as marks of their own.
function summary(a) {
  const box = el("span", { class: "counts" });
  if (!a) return box;
  a.n.forEach((k, i) => { if (k > 0) box.append(el("span", { class: "count s-" + STATUSES[i], title: k + " " + STATUSES[i] }, k)); });
  for (const [key, label, title] of [["ack", "ACK", "acknowledged"], ["downtime", "DT", "in downtime"], ["suppressed", "SUP", "suppressed"], ["encompassed", "ENC", "encompassed (a dependency is down)"]]) {
    if (a[key] > 0) box.append(el("span", { class: "count mark m-" + key, title: a[key] + " " + title }, label + " " + a[key]));
  }
  return box;
}

// ---- shared rendering --------------------------------------------------
// The marks of a check's state; `short` for table rows (the title says it all).
function marks(s, short) {
  const m = el("span", { class: "marks" });
  if (!s) return m;
  const add = (long, brief, title) => m.append(el("span", { title: title || long.toLowerCase() }, short ? brief : long));
  if (!s.hard) add("SOFT", "SOFT", "soft state");
  if (s.acknowledged && s.acknowledged !== "none") add(s.acknowledged === "sticky" ? "ACK (sticky)" : "ACK", "ACK", "acknowledged " + ackText(s));
  if (s.in_downtime) add("DOWNTIME", "DT", "in downtime");
  if (s.flapping) add("FLAPPING", "FLAP", "flapping");
  if (s.suppressed) add("SUPPRESSED", "SUP", "suppressed");
  if (s.encompassed) add("ENCOMPASSED", "ENC", "encompassed: a dependency is down");
  return m;
}
function ackText(s) {
  if (!s.acknowledged || s.acknowledged === "none") return "no";
  const a = s.ack;
  return (s.acknowledged === "sticky" ? "sticky" : "yes") + (a ? " by " + a.author + " at " + fmtTime(a.at) + ": " + a.comment : "");
}
function renderTotals() {
  const t = $("#totals"); t.textContent = "";
  t.append(el("span", { class: "total" }, checks.size + " checks"), summary(totalsOf(checks.values())));
}
function crumbs(parts) {
  const c = $("#crumbs"); c.textContent = "";
  parts.forEach((p, i) => { if (i) c.append(" / "); c.append(p.href ? el("a", { href: p.href }, p.text) : p.text); });
}

// ---- group tree --------------------------------------------------------
function groupNode(g, depth, seen) {
  const open = depth < 2;
  const kids = el("ul", { class: "tree" });
  const toggle = el("span", { class: "toggle" }, g.children.length ? (open ? "▾" : "▸") : "");
  const row = el("div", { class: "node", "data-group": g.id },
    toggle, badge(g.aggregate ? g.aggregate.status : "PENDING"),
    el("a", { class: "name", href: "#/group/" + g.id }, g.name),
    el("span", { class: "total" }, (local.get(g.id) || emptyCounts()).total + " checks"),
    summary(local.get(g.id)));
  const li = el("li", {}, row, kids);
  const nodes = view.nodes.get(g.id) || [];
  nodes.push(row); view.nodes.set(g.id, nodes);
  let filled = false;
  const fill = () => {
    if (filled) return; filled = true;
    for (const cid of g.children) {
      const c = groups.get(cid);
      if (c && !seen.has(cid)) kids.append(groupNode(c, depth + 1, new Set([...seen, cid])));
    }
  };
  if (open) fill(); else kids.hidden = true;
  toggle.onclick = () => { fill(); kids.hidden = !kids.hidden; toggle.textContent = kids.hidden ? "▸" : "▾"; };
  return li;
}
function renderGroupRow(row, g, quiet) {
  const a = local.get(g.id) || emptyCounts();
  row.children[1].replaceWith(badge(g.aggregate ? g.aggregate.status : "PENDING"));
  row.children[3].textContent = a.total + " checks";
  row.children[4].replaceWith(summary(a));
  if (!quiet) flash(row);
}
function ungroupedNode() {
  const a = local.get(UNGROUPED) || emptyCounts();
  const worst = a.n.reduce((w, k, i) => (k > 0 ? i : w), 0);
  return el("li", {}, el("div", { class: "node", "data-group": UNGROUPED, id: "ungrouped-node" },
    el("span", { class: "toggle" }), badge(STATUSES[worst]),
    el("a", { class: "name", href: "#/ungrouped" }, "Ungrouped"),
    el("span", { class: "total" }, a.total + " checks"), summary(a)));
}
function updateUngrouped() {
  const row = $("#ungrouped-node"); if (!row) return;
  row.parentNode.replaceWith(ungroupedNode());
}
function updateGroupViews(g, quiet) {
  for (const row of view.nodes.get(g.id) || []) renderGroupRow(row, g, quiet);
  if (view.kind === "group" && view.id === g.id) renderGroupHeader(g);
}
function renderTree() {
  view.kind = "tree"; view.id = null; view.rows.clear(); view.nodes.clear();
  crumbs([]);
  const roots = [...groups.values()].filter((g) => !g.parents.length).sort((a, b) => a.name.localeCompare(b.name));
  const ungrouped = (local.get(UNGROUPED) || emptyCounts()).total;
  const tree = el("ul", { class: "tree root", id: "group-tree" }, roots.map((g) => groupNode(g, 0, new Set([g.id]))), ungrouped ? ungroupedNode() : null);
  const problems = [...checks.values()].filter((c) => !c.state.ok).sort(worstFirst);
  const main = $("#main"); main.textContent = "";
  main.append(el("div", { class: "cols" },
    el("div", { class: "card" }, el("h2", {}, "Groups"), roots.length || ungrouped ? tree : el("p", { class: "muted" }, "No groups configured.")),
    el("div", { class: "card" }, el("h2", {}, "Problems ", el("span", { class: "muted small" }, problems.length + " not OK")), checkTable(problems, "problems"))));
}
function worstFirst(a, b) {
  return RANK.indexOf(b.state.status) - RANK.indexOf(a.state.status) || a.display_name.localeCompare(b.display_name);
}

// ---- check tables (windowed: only the rows in view exist in the DOM, so
// a group of 10,000 checks renders as fast as one of 50) -------------------
function checkRow(c) {
  const s = c.state;
  const tr = el("tr", { class: "r", "data-check": c.id },
    el("td", {}, badge(s.status)),
    el("td", { class: "name", title: c.display_name }, el("a", { href: "#/check/" + c.id }, c.display_name)),
    el("td", { class: "out", title: s.output }, s.output),
    el("td", { class: "marks-cell" }, marks(s, true)),
    el("td", { class: "last", title: s.last_check_at || "" }, ago(s.last_check_at)));
  view.rows.set(c.id, tr);
  return tr;
}
const OVERSCAN = 15;
function checkTable(list, name) {
  const body = el("tbody");
  const table = el("table", { class: "fixed checks" },
    el("colgroup", {}, ["c-status", "c-name", "c-out", "c-marks", "c-last"].map((k) => el("col", { class: k }))),
    el("thead", {}, el("tr", {}, ["Status", "Check", "Output", "", "Last check"].map((h) => el("th", {}, h)))), body);
  const wrap = el("div", { class: "vt", "data-table": name, "data-rows": list.length }, table);
  if (!list.length) {
    body.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "Nothing here: all fine.")));
    return wrap;
  }
  let rowH = 33, start = -1, end = -1, shown = [];
  const spacer = (h) => { const tr = el("tr", { class: "spacer", "aria-hidden": "true" }, el("td", { colspan: 5 })); tr.style.height = h + "px"; return tr; };
  const render = () => {
    const top = wrap.scrollTop, h = wrap.clientHeight || 800;
    const s = Math.max(0, Math.floor(top / rowH) - OVERSCAN);
    const e = Math.min(list.length, Math.ceil((top + h) / rowH) + OVERSCAN);
    if (s === start && e === end) return;
    start = s; end = e;
    for (const id of shown) view.rows.delete(id);
    shown = [];
    const frag = document.createDocumentFragment();
    frag.append(spacer(s * rowH));
    for (let i = s; i < e; i++) { frag.append(checkRow(list[i])); shown.push(list[i].id); }
    frag.append(spacer((list.length - e) * rowH));
    body.replaceChildren(frag);
  };
  let queued = false;
  wrap.addEventListener("scroll", () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; render(); });
  }, { passive: true });
  render();
  // Once in the document: measure the real row height and fill the window.
  requestAnimationFrame(() => {
    const r = body.querySelector("tr.r");
    const h = r ? r.getBoundingClientRect().height : 0;
    if (h > 0 && Math.abs(h - rowH) > 0.5) { rowH = h; start = -1; }
    render();
  });
  return wrap;
}
function updateCheckViews(c, quiet) {
  const tr = view.rows.get(c.id);
  if (tr) { const n = checkRow(c); tr.replaceWith(n); if (!quiet) flash(n); }
  if (view.kind === "check" && view.id === c.id) renderCheckDetail(c, !quiet);
}
// Shows the current data in the rendered page without rebuilding it.
function refreshView() {
  for (const id of [...view.rows.keys()]) { const c = checks.get(id); if (c) updateCheckViews(c, true); }
  for (const g of groups.values()) updateGroupViews(g, true);
}

// ---- group page --------------------------------------------------------
function descendants(gid) {
  const out = new Set(); const stack = [gid];
  while (stack.length) { const id = stack.pop(); if (out.has(id)) continue; out.add(id); const g = groups.get(id); if (g) stack.push(...g.children); }
  return out;
}
function renderGroupHeader(g) {
  const h = $("#group-head"); if (!h || !g.aggregate) return;
  h.textContent = "";
  h.append(el("h2", {}, badge(g.aggregate.status), " ", g.name, summary(local.get(g.id))),
    el("p", { class: "muted" }, g.aggregate.total + " checks · " + g.aggregate.acknowledged + " acknowledged · " +
      g.aggregate.in_downtime + " in downtime · " + g.aggregate.suppressed + " suppressed"));
}
function renderGroup(id) {
  const g = groups.get(id);
  if (!g) return notFound("group");
  view.kind = "group"; view.id = id; view.rows.clear(); view.nodes.clear();
  const path = []; let p = g;
  while (p) { path.unshift({ text: p.name, href: "#/group/" + p.id }); p = p.parents.length ? groups.get(p.parents[0]) : null; }
  crumbs(path);
  const under = descendants(id);
  const list = [...checks.values()].filter((c) => c.groups.some((x) => under.has(x))).sort(worstFirst);
  const main = $("#main"); main.textContent = "";
  const sub = el("ul", { class: "tree root" }, g.children.map((cid) => groups.get(cid)).filter(Boolean).map((c) => groupNode(c, 1, new Set([c.id]))));
  main.append(el("div", { class: "card", id: "group-head" }),
    g.children.length ? el("div", { class: "card" }, el("h3", {}, "Subgroups"), sub) : "",
    el("div", { class: "card" }, el("h3", {}, "Checks (this group and below)"), checkTable(list, "group")));
  renderGroupHeader(g);
}

// ---- search, hosts, ungrouped -------------------------------------------
// Filters live in the URL (#/search?q=&status=&host=&group=&ack=&downtime=),
// so a filtered view can be bookmarked; they run over the checks the page
// holds (the API offers the same: GET /api/checks).
function hashParams() {
  const i = location.hash.indexOf("?");
  return new URLSearchParams(i < 0 ? "" : location.hash.slice(i + 1));
}
function searchHref(p) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(p)) if (v) q.set(k, v);
  return "#/search?" + q.toString();
}
function matches(c, f, under) {
  const s = c.state;
  if (f.q && !(c.display_name.toLowerCase().includes(f.q) || (s.output || "").toLowerCase().includes(f.q))) return false;
  if (f.host && c.host !== f.host) return false;
  if (under && !c.groups.some((x) => under.has(x))) return false;
  if (f.status === "problems" && s.ok) return false;
  if (f.status && f.status !== "problems" && s.status !== f.status) return false;
  const acked = !!s.acknowledged && s.acknowledged !== "none";
  if (f.ack && (f.ack === "yes") !== acked) return false;
  if (f.downtime && (f.downtime === "yes") !== !!s.in_downtime) return false;
  return true;
}
function select(id, value, options) {
  const e = el("select", { id, name: id }, options.map(([v, t]) => el("option", { value: v }, t)));
  e.value = value || "";
  return e;
}
function renderSearch() {
  view.kind = "search"; view.id = null; view.rows.clear(); view.nodes.clear();
  crumbs([{ text: "Search" }]);
  const p = hashParams();
  const f = { q: (p.get("q") || "").trim().toLowerCase(), status: p.get("status") || "", host: p.get("host") || "",
    group: p.get("group") || "", ack: p.get("ack") || "", downtime: p.get("downtime") || "" };
  $("#q").value = p.get("q") || "";
  const under = f.group ? descendants(f.group) : null;
  const list = [...checks.values()].filter((c) => matches(c, f, under)).sort(worstFirst);
  const hosts = [...new Set([...checks.values()].map((c) => c.host))].sort();
  const form = el("form", { class: "filters", id: "filters" },
    el("input", { id: "f-q", name: "q", type: "search", placeholder: "name or output", value: p.get("q") || "" }),
    select("f-status", f.status, [["", "any status"], ["problems", "not OK"], ...STATUSES.map((x) => [x, x])]),
    select("f-host", f.host, [["", "any host"], ...hosts.map((h) => [h, h])]),
    select("f-group", f.group, [["", "any group"], ...[...groups.values()].sort((a, b) => a.name.localeCompare(b.name)).map((g) => [g.id, g.name])]),
    select("f-ack", f.ack, [["", "ack: any"], ["yes", "acknowledged"], ["no", "not acknowledged"]]),
    select("f-downtime", f.downtime, [["", "downtime: any"], ["yes", "in downtime"], ["no", "not in downtime"]]),
    el("button", { type: "submit" }, "Filter"));
  const apply = (ev) => {
    if (ev) ev.preventDefault();
    location.hash = searchHref({ q: $("#f-q").value.trim(), status: $("#f-status").value, host: $("#f-host").value,
      group: $("#f-group").value, ack: $("#f-ack").value, downtime: $("#f-downtime").value });
  };
  form.addEventListener("submit", apply);
  for (const sel of form.querySelectorAll("select")) sel.addEventListener("change", apply);
  const main = $("#main"); main.textContent = "";
  main.append(el("div", { class: "card" }, el("h2", {}, "Checks ", el("span", { class: "muted small", id: "search-count" }, list.length + " of " + checks.size)),
    form, summary(totalsOf(list)), checkTable(list, "search")));
}
function renderHosts() {
  view.kind = "hosts"; view.id = null; view.rows.clear(); view.nodes.clear();
  crumbs([{ text: "Hosts" }]);
  const byHost = new Map();
  for (const c of checks.values()) { if (!byHost.has(c.host)) byHost.set(c.host, []); byHost.get(c.host).push(c); }
  const rows = [...byHost.entries()].map(([h, list]) => {
    const worst = list.filter((c) => !isIgnored(c.state)).sort(worstFirst)[0];
    return { h, list, worst: worst ? worst.state.status : "PENDING" };
  }).sort((a, b) => STATUSES.indexOf(b.worst) - STATUSES.indexOf(a.worst) || a.h.localeCompare(b.h));
  const body = el("tbody", {}, rows.map((r) => el("tr", { "data-host": r.h },
    el("td", {}, badge(r.worst)), el("td", {}, el("a", { href: searchHref({ host: r.h }) }, r.h)),
    el("td", { class: "num" }, r.list.length), el("td", {}, summary(totalsOf(r.list))))));
  const main = $("#main"); main.textContent = "";
  main.append(el("div", { class: "card" }, el("h2", {}, "Hosts ", el("span", { class: "muted small" }, rows.length + " hosts")),
    el("div", { class: "vt" }, el("table", { id: "host-table", class: "fixed hosts" },
      el("colgroup", {}, el("col", { class: "c-status" }), el("col", { class: "c-host" }), el("col", { class: "c-num" }), el("col", {})),
      el("thead", {}, el("tr", {}, ["Status", "Host", "Checks", "Counts"].map((x) => el("th", {}, x)))), body))));
}
function renderUngrouped() {
  view.kind = "ungrouped"; view.id = null; view.rows.clear(); view.nodes.clear();
  crumbs([{ text: "Ungrouped" }]);
  const list = [...checks.values()].filter((c) => (ancestorsOf.get(c.id) || [])[0] === UNGROUPED).sort(worstFirst);
  const main = $("#main"); main.textContent = "";
  main.append(el("div", { class: "card" }, el("h2", {}, "Checks in no group ", el("span", { class: "muted small" }, String(list.length))),
    summary(local.get(UNGROUPED)), checkTable(list, "ungrouped")));
}

// ---- check page --------------------------------------------------------
function attemptText(s, policy) {
  if (!policy) return (s.hard ? "HARD " : "SOFT ") + s.attempt;
  const max = s.ok ? policy.recovers_after : policy.failed_after;
  return (s.hard ? "HARD " : "SOFT ") + s.attempt + "/" + max;
}
function kv(k, v, id) { return el("div", { class: "kv" }, el("div", {}, k), el("div", id ? { id } : {}, v)); }
function renderCheckDetail(c, changed) {
  const box = $("#check-state"); if (!box) return;
  const s = c.state; const d = view.detail || {};
  box.textContent = "";
  box.append(
    el("h2", {}, badge(s.status), " ", c.display_name, " ", marks(s)),
    el("pre", { id: "check-output" }, s.output + (s.long_output ? "\n" + s.long_output : "")),
    el("div", { class: "grid", style: "margin-top:12px" },
      kv("Attempt", attemptText(s, d.config && d.config.policy), "check-attempt"),
      kv("Last check", fmtTime(s.last_check_at) + " (" + ago(s.last_check_at) + ")", "check-last"),
      kv("Last state change", fmtTime(s.last_state_change_at)),
      kv("Last hard change", fmtTime(s.last_hard_change_at)),
      kv("Flapping", (s.flapping ? "yes" : "no") + " (" + Math.round(s.flap_percent) + "%)"),
      kv("Acknowledged", ackText(s), "check-ack"),
      kv("Alert open", s.current_alert ? "since " + fmtTime(s.current_alert.opened_at) : "no"),
      kv("Version", String(s.version), "check-version")));
  if (s.perfdata && s.perfdata.length) {
    box.append(el("h3", { style: "margin-top:14px" }, "Performance data"),
      el("table", {}, el("thead", {}, el("tr", {}, ["Label", "Value", "Warn", "Crit", "Min", "Max"].map((h) => el("th", {}, h)))),
        el("tbody", {}, s.perfdata.map((p) => el("tr", {}, el("td", {}, p.label), el("td", {}, (p.value ?? "U") + " " + p.uom),
          el("td", {}, p.warn ?? ""), el("td", {}, p.crit ?? ""), el("td", {}, p.min ?? ""), el("td", {}, p.max ?? ""))))));
  }
  if (changed) { flash(box); loadHistory(c.id); loadNotifications(c.id); }
}
function notificationTable(items) {
  if (!items.length) return el("p", { class: "muted" }, "No notifications.");
  return el("table", { class: "notifications" },
    el("thead", {}, el("tr", {}, ["Planned", "Kind", "Status", "Recipient", "Channel", "Attempts", "Last error"].map((x) => el("th", {}, x)))),
    el("tbody", {}, items.map((n) => el("tr", { class: "job-" + n.status },
      el("td", {}, fmtTime(n.created_at)), el("td", {}, n.kind + (n.escalation ? " (esc " + n.escalation + ")" : "") + (n.sequence ? " #" + n.sequence : "")),
      el("td", {}, n.status), el("td", {}, n.recipient), el("td", {}, n.channel), el("td", {}, String(n.attempts)),
      el("td", { class: "out", title: n.last_error || "" }, n.last_error || "")))));
}
async function loadNotifications(id) {
  const r = await api("GET", "/api/checks/" + id + "/notifications?limit=50").catch(() => null);
  const box = $("#check-notifications"); if (!r || !box || view.id !== id) return;
  box.textContent = "";
  box.append(el("h3", {}, "Notifications"), notificationTable(r.items));
}
async function renderNotify() {
  view.kind = "notify"; view.id = null; view.rows.clear(); view.nodes.clear(); view.detail = null;
  crumbs([{ text: "notifications" }]);
  const main = $("#main"); main.textContent = "";
  const [c, t, f] = await Promise.all([api("GET", "/api/contacts"), api("GET", "/api/teams"),
    api("GET", "/api/notifications?status=failed&limit=50")].map((p) => p.catch(() => null)));
  const contacts = c ? c.contacts : [], channels = c ? c.channels : [];
  main.append(el("div", { class: "card", id: "notify-contacts" }, el("h3", {}, "Contacts"),
    contacts.length ? el("table", {}, el("thead", {}, el("tr", {}, ["Name", "E-mail", "Phone", "Chat", "Period", "Teams"].map((x) => el("th", {}, x)))),
      el("tbody", {}, contacts.map((k) => el("tr", {}, el("td", {}, k.name), el("td", {}, k.email || ""), el("td", {}, k.phone || ""),
        el("td", {}, k.chat || ""), el("td", {}, k.period || "always"), el("td", {}, k.teams.join(", "))))))
      : el("p", { class: "muted" }, "No contacts configured.")));
  main.append(el("div", { class: "card", id: "notify-teams" }, el("h3", {}, "Teams"),
    t && t.teams.length ? el("ul", {}, t.teams.map((x) => el("li", {}, x.name + ": " + x.members.join(", "))))
      : el("p", { class: "muted" }, "No teams configured.")));
  const who = el("select", { id: "test-contact" }, contacts.map((k) => el("option", { value: k.name }, k.name)));
  const via = el("select", { id: "test-channel" }, channels.map((k) => el("option", { value: k.name }, k.name + " (" + k.type + ")")));
  main.append(el("div", { class: "card", id: "notify-test" }, el("h3", {}, "Send a test notification (admins)"),
    el("div", { class: "buttons" }, who, via, el("button", { id: "btn-test-notification", class: "primary", onclick: () =>
      act(() => api("POST", "/api/notifications/test", { contact: who.value, channel: via.value }), "Test notification queued") }, "Send test notification"))));
  main.append(el("div", { class: "card", id: "notify-failed" }, el("h3", {}, "Failed notifications"), notificationTable(f ? f.items : [])));
}
async function loadHistory(id) {
  const h = await api("GET", "/api/checks/" + id + "/history?limit=30").catch(() => null);
  const box = $("#check-history"); if (!h || !box || view.id !== id) return;
  box.textContent = "";
  box.append(el("h3", {}, "History"), el("table", {},
    el("thead", {}, el("tr", {}, ["Time", "Status", "State", "Output", "Events"].map((x) => el("th", {}, x)))),
    el("tbody", {}, h.items.map((e) => el("tr", {}, el("td", {}, fmtTime(e.at)), el("td", {}, badge(e.status)),
      el("td", {}, (e.hard ? "HARD " : "SOFT ") + e.attempt), el("td", { class: "out", title: e.output }, e.output),
      el("td", {}, e.events.join(", ")))))));
}
function actionDialog(title, opts) {
  return new Promise((resolve) => {
    const d = $("#action");
    $("#action-title").textContent = title;
    $("#action-sticky-row").hidden = !opts.sticky;
    $("#action-duration-row").hidden = !opts.duration;
    $("#action-comment").value = "";
    d.returnValue = "";
    d.onclose = () => resolve(d.returnValue === "ok" ? {
      comment: $("#action-comment").value, sticky: $("#action-sticky").checked,
      duration: parseInt($("#action-duration").value, 10) || 60,
    } : null);
    $("#action-cancel").onclick = () => d.close("cancel");
    d.showModal();
  });
}
async function act(fn, okMsg) {
  try { await fn(); toast(okMsg); } catch (e) { toast(e.message, true); }
}
// The cards below the check's state, in order; each is filled by its own
// loader (a new section: add its id here and fill it in renderCheck).
const CHECK_SECTIONS = ["check-downtimes", "check-notifications", "check-history", "check-config"];
async function renderCheck(id) {
  const c = checks.get(id);
  if (!c) return notFound("check");
  view.kind = "check"; view.id = id; view.rows.clear(); view.nodes.clear(); view.detail = null;
  const g = c.groups.length ? groups.get(c.groups[0]) : null;
  crumbs([g ? { text: g.name, href: "#/group/" + g.id } : { text: "checks" }, { text: c.display_name }]);
  const base = "/api/checks/" + id;
  const buttons = el("div", { class: "buttons" },
    el("button", { id: "btn-execute", class: "primary", onclick: () => act(() => api("POST", base + "/execute"), "Execution requested") }, "Execute now"),
    el("button", { id: "btn-ack", onclick: async () => {
      if (c.state.acknowledged !== "none") return act(() => api("DELETE", base + "/acknowledge"), "Acknowledgement removed");
      const r = await actionDialog("Acknowledge " + c.display_name, { sticky: true });
      if (r) act(() => api("POST", base + "/acknowledge", { comment: r.comment, sticky: r.sticky }), "Acknowledged");
    } }, "Acknowledge / remove ack"),
    el("button", { id: "btn-downtime", onclick: async () => {
      const r = await actionDialog("Downtime for " + c.display_name, { duration: true });
      if (r) act(() => api("POST", base + "/downtimes", { comment: r.comment, duration_seconds: r.duration * 60 }), "Downtime scheduled");
    } }, "Schedule downtime"),
    el("button", { id: "btn-suppress", onclick: () => act(() => api(c.state.suppressed ? "DELETE" : "POST", base + "/suppress"),
      c.state.suppressed ? "Unsuppressed" : "Suppressed") }, "Suppress / unsuppress"));
  const main = $("#main"); main.textContent = "";
  main.append(el("div", { class: "card" }, el("div", { id: "check-state" }), buttons),
    ...CHECK_SECTIONS.map((id) => el("div", { class: "card", id })));
  renderCheckDetail(c, false);
  loadHistory(id);
  loadNotifications(id);
  const d = await api("GET", base).catch(() => null);
  if (!d || view.id !== id) return;
  view.detail = d;
  renderCheckDetail(c, false);
  const dt = $("#check-downtimes");
  dt.append(el("h3", {}, "Downtimes"), d.downtimes.length ? el("ul", {}, d.downtimes.map((x) => el("li", {},
    fmtTime(x.starts_at) + " – " + fmtTime(x.ends_at) + " by " + x.author + ": " + x.comment + " ",
    el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); act(() => api("DELETE", "/api/downtimes/" + x.id), "Downtime cancelled").then(() => route()); } }, "cancel"))))
    : el("p", { class: "muted" }, "None scheduled."));
  $("#check-config").append(el("h3", {}, "Configuration"), el("pre", {}, JSON.stringify(d.config, null, 2)));
}
function notFound(what) { $("#main").textContent = ""; $("#main").append(el("div", { class: "card" }, "No such " + what + ". ", el("a", { href: "#/" }, "Back"))); }

// ---- routing -----------------------------------------------------------
function route() {
  const h = location.hash.replace(/^#\/?/, "").split("/");
  const page = h[0].split("?")[0];
  if (page === "group" && h[1]) renderGroup(h[1]);
  else if (page === "check" && h[1]) renderCheck(h[1]);
  else if (page === "search") renderSearch();
  else if (page === "hosts") renderHosts();
  else if (page === "ungrouped") renderUngrouped();
  else if (page === "notifications") renderNotify();
  else renderTree();
}
window.addEventListener("hashchange", route);
window.addEventListener("hashchange", whoami);
$("#login-btn").onclick = () => login("Log in as an operator to use the buttons.");
$("#logout-btn").onclick = logout;
$("#search-form").addEventListener("submit", (ev) => { ev.preventDefault(); location.hash = searchHref({ q: $("#q").value.trim() }); });
setInterval(() => { for (const [id, tr] of view.rows) { const c = checks.get(id); if (c) tr.lastChild.textContent = ago(c.state.last_check_at); } }, 5000);
whoami();
loadState().then(() => { route(); connect(); }).catch((e) => { $("#main").textContent = "Cannot load state: " + e.message; connect(); });
