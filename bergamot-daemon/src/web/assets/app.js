// Bergamot web UI: no build step, no framework. State comes from /api/state,
// live changes from /ws; only the DOM nodes of changed objects are touched.
"use strict";

const STATUSES = ["PENDING", "INFO", "OK", "WARNING", "CRITICAL", "UNKNOWN", "TIMEOUT", "ERROR", "DISCONNECTED", "ACTION"];
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
  if (r.ok) { const w = await r.json(); $("#who").textContent = w.anonymous ? "anonymous (read-only)" : w.name + " · " + w.role; }
  else $("#who").textContent = "not logged in";
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
  renderTotals();
}
function applyUpdate(u) {
  if (u.kind === "check") {
    const c = checks.get(u.check_id);
    if (!c || (c.state && c.state.version > u.state.version)) return;
    c.state = u.state;
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
function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(proto + "//" + location.host + "/ws");
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

// ---- shared rendering --------------------------------------------------
function countsOf(agg) {
  const box = el("span", { class: "counts" });
  if (!agg) return box;
  agg.counts.forEach((n, i) => { if (n > 0) box.append(el("span", { class: "count s-" + STATUSES[i], title: STATUSES[i] }, n)); });
  return box;
}
function marks(s) {
  const m = el("span", { class: "marks" });
  if (!s) return m;
  if (!s.hard) m.append(el("span", { title: "soft state" }, "SOFT"));
  if (s.acknowledged && s.acknowledged !== "none") m.append(el("span", {}, s.acknowledged === "sticky" ? "ACK (sticky)" : "ACK"));
  if (s.in_downtime) m.append(el("span", {}, "DOWNTIME"));
  if (s.flapping) m.append(el("span", {}, "FLAPPING"));
  if (s.suppressed) m.append(el("span", {}, "SUPPRESSED"));
  if (s.encompassed) m.append(el("span", {}, "ENCOMPASSED"));
  return m;
}
function renderTotals() {
  const n = new Array(10).fill(0);
  for (const c of checks.values()) n[STATUSES.indexOf(c.state.status)]++;
  const t = $("#totals"); t.textContent = "";
  t.append(checks.size + " checks");
  const counts = el("span", { class: "counts" });
  n.forEach((k, i) => { if (k) counts.append(el("span", { class: "count s-" + STATUSES[i] }, k)); });
  t.append(counts);
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
    el("span", { class: "total" }, (g.aggregate ? g.aggregate.total : 0) + " checks"),
    countsOf(g.aggregate));
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
  if (!g.aggregate) return;
  row.children[1].replaceWith(badge(g.aggregate.status));
  row.children[3].textContent = g.aggregate.total + " checks";
  row.children[4].replaceWith(countsOf(g.aggregate));
  if (!quiet) flash(row);
}
function updateGroupViews(g, quiet) {
  for (const row of view.nodes.get(g.id) || []) renderGroupRow(row, g, quiet);
  if (view.kind === "group" && view.id === g.id) renderGroupHeader(g);
}
function renderTree() {
  view.kind = "tree"; view.id = null; view.rows.clear(); view.nodes.clear();
  crumbs([]);
  const roots = [...groups.values()].filter((g) => !g.parents.length).sort((a, b) => a.name.localeCompare(b.name));
  const tree = el("ul", { class: "tree root", id: "group-tree" }, roots.map((g) => groupNode(g, 0, new Set([g.id]))));
  const problems = [...checks.values()].filter((c) => !c.state.ok).sort(worstFirst);
  const main = $("#main"); main.textContent = "";
  main.append(el("div", { class: "cols" },
    el("div", { class: "card" }, el("h2", {}, "Groups"), roots.length ? tree : el("p", { class: "muted" }, "No groups configured.")),
    el("div", { class: "card" }, el("h2", {}, "Problems"), checkTable(problems, "problems"))));
}
function worstFirst(a, b) {
  return STATUSES.indexOf(b.state.status) - STATUSES.indexOf(a.state.status) || a.display_name.localeCompare(b.display_name);
}

// ---- check tables (windowed: only the rows in view exist in the DOM, so
// a group of 10,000 checks renders as fast as one of 50) -------------------
function checkRow(c) {
  const s = c.state;
  const tr = el("tr", { class: "r", "data-check": c.id },
    el("td", {}, badge(s.status)),
    el("td", {}, el("a", { href: "#/check/" + c.id }, c.display_name)),
    el("td", { class: "out", title: s.output }, s.output),
    el("td", {}, marks(s)),
    el("td", { title: s.last_check_at || "" }, ago(s.last_check_at)));
  view.rows.set(c.id, tr);
  return tr;
}
const OVERSCAN = 15;
function checkTable(list, name) {
  const body = el("tbody");
  const table = el("table", {},
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
  h.append(el("h2", {}, badge(g.aggregate.status), " ", g.name, countsOf(g.aggregate)),
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
      kv("Acknowledged", s.acknowledged),
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
    el("div", { class: "card", id: "check-downtimes" }),
    el("div", { class: "card", id: "check-notifications" }),
    el("div", { class: "card", id: "check-history" }),
    el("div", { class: "card", id: "check-config" }));
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
  if (h[0] === "group" && h[1]) renderGroup(h[1]);
  else if (h[0] === "check" && h[1]) renderCheck(h[1]);
  else if (h[0] === "notifications") renderNotify();
  else renderTree();
}
window.addEventListener("hashchange", route);
window.addEventListener("hashchange", whoami);
$("#login-btn").onclick = () => login("Log in as an operator to use the buttons.");
setInterval(() => { for (const [id, tr] of view.rows) { const c = checks.get(id); if (c) tr.lastChild.textContent = ago(c.state.last_check_at); } }, 5000);
whoami();
loadState().then(() => { route(); connect(); }).catch((e) => { $("#main").textContent = "Cannot load state: " + e.message; connect(); });
