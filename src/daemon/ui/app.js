// The zerogpu dashboard (docs/dashboard.md): one page, no dependencies. It draws what
// GET /v1/events sends, a snapshot first and every change after, and today's usage from
// GET /v1/usage. Text from the daemon goes into the page as text, never as markup.
"use strict";

const HOUR_MS = 3600 * 1000;
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  lanes: [],            // {gpu, slot, slots, device, name}
  held: new Map(),      // lease id -> lease (granted, attached)
  queue: new Map(),     // lease id -> queued lease (position, reason)
  history: [],          // ended leases of the last hour (with ended_ms)
  counters: {},
  visitors: new Map(),  // visitor -> {visitor, tier, used_s, reserved_s, daily_s}
  usage: null,          // GET /v1/usage's reply, or {error}
  skew: 0,              // the daemon's clock minus this browser's, ms
};

const now = () => Date.now() + state.skew;

// ---------------------------------------------------------------------------
// Small helpers.

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// A colour per app that stays the same across reloads and machines.
function appColour(app) {
  let h = 0;
  for (const ch of app) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${h % 360}, 58%, ${38 + (h >> 9) % 14}%)`;
}

function fmtSeconds(s) {
  if (!isFinite(s)) return "–";
  const sign = s < 0 ? "−" : "";
  s = Math.abs(s);
  if (s < 60) return `${sign}${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${sign}${Math.floor(s / 60)} min ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
  return `${sign}${Math.floor(s / 3600)} h ${String(Math.floor(s % 3600 / 60)).padStart(2, "0")} min`;
}

function laneName(lane) {
  const half = lane.slots > 1 ? ` ${"ABCDEFGH"[lane.slot]}` : "";
  return `GPU ${lane.gpu}${half}`;
}

function tierBadge(tier) {
  return el("span", {class: `tier ${tier}`}, tier);
}

function swatch(app) {
  const s = el("span", {class: "swatch"});
  s.style.background = appColour(app);
  return s;
}

// A bar share full; a quota's bar warns past 80 % and when spent.
function bar(share, quota) {
  const level = !quota ? "" : share >= 1 ? " full" : share >= 0.8 ? " warn" : "";
  const b = el("div", {class: "bar" + level});
  const fill = el("span");
  fill.style.width = `${Math.min(100, Math.max(0, share * 100)).toFixed(1)}%`;
  b.append(fill);
  return b;
}

function replaceRows(table, rows, emptyId) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows);
  document.getElementById(emptyId).hidden = rows.length > 0;
  table.hidden = rows.length === 0;
}

// ---------------------------------------------------------------------------
// The event stream.

function applySnapshot(s) {
  state.skew = s.now_ms - Date.now();
  state.lanes = s.lanes;
  state.held = new Map(s.leases.map((l) => [l.id, l]));
  state.queue = new Map(s.queue.map((l) => [l.id, l]));
  state.history = s.history;
  state.counters = s.counters;
  state.visitors = new Map((s.visitors || []).map((v) => [v.visitor, v]));
  document.getElementById("node").textContent = `${s.node} · zerogpud ${s.version}`;
}

// Ended leases by final state, as the daemon counts them (expired: past the grace too).
const countEnd = {released: "released", expired: "expired", failed: "failed", cancelled: "cancelled"};

function applyLease(kind, l) {
  const c = state.counters;
  switch (kind) {
  case "queued":
    state.queue.set(l.id, l);
    break;
  case "granted":
    state.queue.delete(l.id);
    state.held.set(l.id, l);
    c.granted++;
    if (l.warm) c.warm++; else c.cold++;
    break;
  case "expired": {  // past its deadline: the grace runs, then its process is killed
    const held = state.held.get(l.id);
    if (held) held.expired = true;
    break;
  }
  case "killed":
    c.killed++;
    break;
  case "ended": {
    const held = state.held.get(l.id);
    state.queue.delete(l.id);
    state.held.delete(l.id);
    if (l.granted_ms) {
      l.expired = l.state === "expired" || (held && held.expired);
      state.history.push(l);
    }
    if (countEnd[l.state]) c[countEnd[l.state]]++;
    break;
  }
  }
}

function applyQuota(q) {
  state.visitors.set(q.visitor, q);
  if (q.kind === "settled") refreshUsageSoon();
}

function connect() {
  const link = document.getElementById("link");
  const es = new EventSource("/v1/events");
  es.addEventListener("snapshot", (e) => {
    applySnapshot(JSON.parse(e.data));
    link.textContent = "live";
    link.className = "link up";
    refreshUsageSoon();
    render();
  });
  es.addEventListener("lease", (e) => {
    const ev = JSON.parse(e.data);
    applyLease(ev.kind, ev.lease);
    render();
  });
  es.addEventListener("quota", (e) => { applyQuota(JSON.parse(e.data)); render(); });
  es.addEventListener("resident", (e) => {
    if (JSON.parse(e.data).kind === "evicted") state.counters.evictions++;
    render();
  });
  es.onerror = () => {
    link.textContent = "reconnecting…";
    link.className = "link down";
    // EventSource retries by itself; a stream the daemon refused (signed out, 401)
    // is closed for good: back to the token page.
    if (es.readyState === EventSource.CLOSED) {
      fetch("/ui/", {redirect: "manual"}).then((r) => {
        if (r.status === 401) location.reload();
        else setTimeout(connect, 2000);
      }, () => setTimeout(connect, 2000));
    }
  };
}

// ---------------------------------------------------------------------------
// Usage: today's, from the ledger (every node's, with a shared ledger).

let usageTimer = null;

function refreshUsageSoon() {
  if (usageTimer) return;
  usageTimer = setTimeout(refreshUsage, 250);
}

async function refreshUsage() {
  usageTimer = null;
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  try {
    const r = await fetch(`/v1/usage?since=${Math.floor(midnight.getTime() / 1000)}`);
    const body = await r.json();
    state.usage = r.ok ? body : {error: body.error ? body.error.message : `HTTP ${r.status}`};
  } catch (err) {
    state.usage = {error: String(err)};
  }
  render();
}

// ---------------------------------------------------------------------------
// Rendering.

let renderQueued = false;

function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderCounters();
    renderTimeline();
    renderHeld();
    renderQueue();
    renderUsage();
    renderVisitors();
  });
}

function renderCounters() {
  const c = state.counters;
  const items = [
    ["held", state.held.size], ["waiting", state.queue.size], ["grants", c.granted],
    ["expiries", c.expired], ["kills", c.killed], ["released", c.released],
    ["failed", c.failed], ["cancelled", c.cancelled], ["warm", c.warm], ["cold", c.cold],
    ["evictions", c.evictions],
  ];
  const dl = document.getElementById("counters");
  dl.replaceChildren(...items.map(([name, v]) =>
    el("div", {}, el("dt", {}, name), el("dd", {id: `counter-${name}`}, v ?? 0))));
}

// The timeline's spans: the last hour by default, or closer; a sixth more to the right
// of "now" shows what the held leases have left.
const RANGES = [["1 h", HOUR_MS, 10 * 60000], ["10 min", 10 * 60000, 2 * 60000], ["1 min", 60000, 10000]];
let range = RANGES[0];

function tickLabel(ms) {
  return ms === 0 ? "now" : ms % 60000 === 0 ? `−${ms / 60000} min` : `−${ms / 1000} s`;
}

function renderTimeline() {
  const box = document.getElementById("timeline");
  const width = Math.max(280, box.clientWidth);
  const narrow = width < 600;
  const labelW = narrow ? 46 : 64, laneH = 24, top = 4, axisH = 16;
  const [, span, tick] = range;
  const t1 = now(), t0 = t1 - span, tEnd = t1 + span / 6;
  const x = (t) => labelW + (Math.min(Math.max(t, t0), tEnd) - t0) / (tEnd - t0) * (width - labelW - 2);
  const laneIndex = new Map(state.lanes.map((l, i) => [`${l.gpu}.${l.slot}`, i]));
  const height = top + state.lanes.length * laneH + axisH;
  const root = svg("svg", {viewBox: `0 0 ${width} ${height}`, height});

  const step = narrow ? tick * 2 : tick;
  for (let ago = span; ago >= 0; ago -= step) {
    const gx = x(t1 - ago);
    root.append(svg("line", {x1: gx, x2: gx, y1: top, y2: height - axisH, class: "grid"}));
    root.append(svg("text", {x: gx, y: height - 4, class: "axis",
      "text-anchor": ago === span ? "start" : "middle"}, tickLabel(ago)));
  }
  state.lanes.forEach((lane, i) => {
    const label = svg("text", {x: 2, y: top + i * laneH + 16, class: "lane-label"}, laneName(lane));
    label.append(svg("title", {}, `${lane.name} (device ${lane.device})`));
    root.append(label);
  });

  state.history = state.history.filter((l) => l.ended_ms >= t1 - HOUR_MS);
  const drawn = [...state.history, ...state.held.values()];
  const labels = [];
  for (const l of drawn) {
    const live = !l.ended_ms;
    const x0 = x(l.granted_ms), x1 = x(live ? t1 : l.ended_ms);
    const left = live ? (l.deadline_ms - t1) / 1000 : 0;
    for (const [gpu, slot] of l.slots || []) {
      const i = laneIndex.get(`${gpu}.${slot}`);
      if (i === undefined || (!live && l.ended_ms < t0)) continue;
      const y = top + i * laneH + 2;
      const r = svg("rect", {x: x0, y, width: Math.max(2, x1 - x0), height: laneH - 4, rx: 2,
        fill: appColour(l.app), "data-lease": l.id, "data-app": l.app,
        class: (live ? "live" : "ended") + (l.expired ? " expired" : "")});
      const how = live ? `${fmtSeconds(left)} left` : l.state;
      r.append(svg("title", {}, `${l.app} (${l.tier}) · ${l.visitor || "anonymous"} · ${how}`));
      root.append(r);
      if (!live) continue;
      // What it has left, up to its deadline, and a label by "now" that says so.
      const ahead = x(l.deadline_ms) - x1;
      if (ahead > 0) {
        root.append(svg("rect", {x: x1, y, width: ahead, height: laneH - 4, rx: 2,
          fill: appColour(l.app), class: "ahead"}));
      }
      const text = `${l.app} · ${l.tier} · ${left < 0 ? "expired" : fmtSeconds(left)}`;
      const inside = ahead >= 7 * text.length;  // the time left is wide enough to hold it
      labels.push(svg("text", {x: inside ? x1 + 4 : x1 - 4, y: y + 14, class: "lease-label",
        "text-anchor": inside ? "start" : "end"}, text));
    }
  }
  root.append(svg("line", {x1: x(t1), x2: x(t1), y1: top, y2: height - axisH, class: "now-line"}));
  root.append(...labels);
  box.replaceChildren(root);

  const apps = [...new Set(drawn.map((l) => l.app))].sort();
  document.getElementById("legend").replaceChildren(...apps.map((a) => el("span", {}, swatch(a), a)));
}

function renderRangeButtons() {
  const box = document.getElementById("ranges");
  box.replaceChildren(...RANGES.map((r) => {
    const b = el("button", {type: "button", "aria-pressed": String(r === range)}, r[0]);
    b.addEventListener("click", () => { range = r; renderRangeButtons(); render(); });
    return b;
  }));
}

function lanesOf(l) {
  const byKey = new Map(state.lanes.map((lane) => [`${lane.gpu}.${lane.slot}`, lane]));
  return (l.slots || []).map(([g, s]) => byKey.get(`${g}.${s}`)).filter(Boolean)
    .map(laneName).join(", ");
}

function renderHeld() {
  const t = now();
  const rows = [...state.held.values()].sort((a, b) => a.granted_ms - b.granted_ms).map((l) => {
    const left = (l.deadline_ms - t) / 1000;
    return el("tr", {"data-lease": l.id, class: l.expired ? "expired" : ""},
      el("td", {}, lanesOf(l)), el("td", {}, swatch(l.app), l.app), el("td", {}, tierBadge(l.tier)),
      el("td", {}, l.visitor || "—"), el("td", {class: "left"}, l.expired || left < 0 ? `expired (${fmtSeconds(left)})` : fmtSeconds(left)));
  });
  document.getElementById("held-count").textContent = rows.length ? `(${rows.length})` : "";
  replaceRows(document.getElementById("leases"), rows, "leases-empty");
}

function renderQueue() {
  const t = now();
  const why = {node: "no GPU free for it", concurrency: "its app holds as many as it may"};
  const rows = [...state.queue.values()].sort((a, b) => a.position - b.position).map((l) =>
    el("tr", {"data-lease": l.id},
      el("td", {}, l.position), el("td", {}, swatch(l.app), l.app), el("td", {}, tierBadge(l.tier)),
      el("td", {}, l.visitor || "—"), el("td", {}, fmtSeconds((t - l.created_ms) / 1000)),
      el("td", {}, why[l.reason] || l.reason)));
  document.getElementById("queue-count").textContent = rows.length ? `(${rows.length})` : "";
  replaceRows(document.getElementById("queue"), rows, "queue-empty");
}

function renderUsage() {
  const table = document.getElementById("usage");
  const empty = document.getElementById("usage-empty");
  const u = state.usage;
  if (u && u.error) {
    replaceRows(table, [], "usage-empty");
    empty.textContent = `Usage cannot be read now: ${u.error}`;
    return;
  }
  // The ledger has a lease's time once it ends: add what the held ones have run so far.
  const t = now(), running = new Map();
  for (const l of state.held.values()) {
    running.set(l.app, (running.get(l.app) || 0) + Math.max(0, t - l.granted_ms) / 1000 * l.gpus);
  }
  const apps = u ? u.apps.map((a) => ({...a, used_s: a.used_s + (running.get(a.app) || 0)}))
    .sort((a, b) => b.used_s - a.used_s) : [];
  const most = Math.max(1e-9, ...apps.map((a) => a.used_s));
  const rows = apps.map((a) => el("tr", {"data-app": a.app},
    el("td", {}, swatch(a.app), a.app), el("td", {}, a.leases),
    el("td", {}, fmtSeconds(a.used_s)), el("td", {}, bar(a.used_s / most))));
  empty.textContent = "No GPU time used today.";
  replaceRows(table, rows, "usage-empty");
}

function renderVisitors() {
  const share = (v) => (v.used_s + v.reserved_s) / v.daily_s;
  const list = [...state.visitors.values()].filter((v) => v.daily_s > 0)
    .sort((a, b) => share(b) - share(a)).slice(0, 10);
  const rows = list.map((v) => el("tr", {"data-visitor": v.visitor},
    el("td", {}, v.visitor), el("td", {}, tierBadge(v.tier)),
    el("td", {}, `${fmtSeconds(v.used_s)} of ${fmtSeconds(v.daily_s)}` +
      (v.reserved_s > 0 ? ` (${fmtSeconds(v.reserved_s)} held)` : "")),
    el("td", {}, bar(share(v), true))));
  replaceRows(document.getElementById("visitors"), rows, "visitors-empty");
}

renderRangeButtons();
setInterval(render, 1000); // the clocks: time left, time waited, the timeline's edge
window.addEventListener("resize", render);
connect();
