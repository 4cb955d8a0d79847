// The smartproxy dashboard: polls /stats every second and updates the
// page in place. Per route it keeps the last five minutes of byte totals
// to draw the throughput line. With an admin token, the page asks for it
// once and keeps it for this tab only (sessionStorage).
"use strict";

const HISTORY = 300; // samples (seconds) of throughput kept per route
const history = new Map(); // route -> [{t, bytes}]
let token = sessionStorage.getItem("smartproxy-token") || "";

const $ = (id) => document.getElementById(id);

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
}
const fmtRate = (n) => fmtBytes(n) + "/s";
const fmtNum = (n) => Number(n).toLocaleString("en-US");

// row replaces a table body's rows, each a list of cells; a cell is text,
// or a Node.
function rows(table, list) {
  const body = $(table).tBodies[0];
  const out = list.map((cells) => {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c); else td.textContent = c;
      tr.appendChild(td);
    }
    return tr;
  });
  body.replaceChildren(...out);
}

function spark(points) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 " + HISTORY + " 24");
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1, ...points);
  const line = document.createElementNS(ns, "polyline");
  const off = HISTORY - points.length;
  line.setAttribute("points", points.map((v, i) => (off + i) + "," + (23 - 22 * v / max).toFixed(1)).join(" "));
  svg.appendChild(line);
  const title = document.createElementNS(ns, "title");
  title.textContent = "now " + fmtRate(points.length ? points[points.length - 1] : 0) + ", peak " + fmtRate(max);
  svg.appendChild(title);
  const cell = document.createElement("span");
  cell.className = "rate";
  const now = document.createElement("span");
  now.textContent = fmtRate(points.length ? points[points.length - 1] : 0);
  cell.append(svg, now);
  return cell;
}

// rates turns a route's byte totals into per-second rates.
function rates(name, t, bytes) {
  let h = history.get(name);
  if (!h) { h = []; history.set(name, h); }
  h.push({ t, bytes });
  while (h.length > HISTORY + 1) h.shift();
  const out = [];
  for (let i = 1; i < h.length; i++) {
    const dt = (h[i].t - h[i - 1].t) / 1000;
    out.push(dt > 0 ? Math.max(0, h[i].bytes - h[i - 1].bytes) / dt : 0);
  }
  return out;
}

function render(s) {
  const t = Date.parse(s.time);
  $("active").textContent = fmtNum(s.active);
  $("total").textContent = fmtNum(s.total);
  $("tin").textContent = fmtRate(s.throughput.in[0]) + " / " + fmtRate(s.throughput.in[2]);
  $("tout").textContent = fmtRate(s.throughput.out[0]) + " / " + fmtRate(s.throughput.out[2]);
  $("tls").textContent = fmtNum(s.tls.full) + " / " + fmtNum(s.tls.resumed) + " / " + fmtNum(s.tls.failures);
  rows("routes", s.routes.map((r) => [r.name || "(no route)", fmtNum(r.active), fmtNum(r.connections),
    fmtNum(r.requests), fmtBytes(r.bytesIn), fmtBytes(r.bytesOut), spark(rates(r.name, t, r.bytesIn + r.bytesOut))]));
  rows("targets", s.targets.map((x) => {
    const state = document.createElement("span");
    state.className = x.up ? "up" : "down";
    state.textContent = x.up ? "up" : "down";
    return [x.addr, state, fmtNum(x.activeConnections), fmtNum(x.connectErrors)];
  }));
  const rej = Object.entries(s.rejections || {}).sort((a, b) => b[1] - a[1]);
  rows("rejections", rej.map(([k, v]) => [k, fmtNum(v)]));
  rows("clients", (s.topClients || []).map((c) => [c.ip, fmtNum(c.active)]));
  $("updated").textContent = "Last update " + new Date(t).toLocaleTimeString();
}

async function poll() {
  try {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const resp = await fetch("/stats", { headers, cache: "no-store" });
    if (resp.status === 401 || resp.status === 403) {
      $("status").textContent = resp.status === 401 ? "token required" : "wrong token";
      $("status").className = "status bad";
      $("tokenform").hidden = false;
      return;
    }
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    render(await resp.json());
    $("status").textContent = "live";
    $("status").className = "status";
  } catch (e) {
    $("status").textContent = "unreachable: " + e.message;
    $("status").className = "status bad";
  }
}

$("tokenform").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value;
  sessionStorage.setItem("smartproxy-token", token);
  $("tokenform").hidden = true;
  poll();
});

poll();
setInterval(poll, 1000);
