// The snapkv explorer: datasets, lookups, scans, queries and the reader's own metrics, all from
// the reader's HTTP API. Read-only. No inline code (the page is served with a strict
// Content-Security-Policy); text is always set as text, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
let current = null;
let info = null;
let scanCursor = null;

/** A new element with attributes and children (strings become text nodes). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

/** Fetches JSON; throws an Error with the API's error code and message. */
async function api(path, options) {
  const r = await fetch(path, options);
  const text = await r.text();
  let body = text;
  try { body = JSON.parse(text); } catch (_) { /* not JSON: a raw value */ }
  if (!r.ok) {
    const e = body && body.error;
    throw new Error(e ? `${r.status} ${e.code}: ${e.message}` : `${r.status} ${text}`);
  }
  return { body, version: r.headers.get("x-snapkv-version") };
}

function showError(target, e) {
  target.replaceChildren(el("span", { class: "error" }, e.message || String(e)));
}

function ago(iso) {
  if (!iso) return "-";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 120) return `${Math.round(s)} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

function bytes(n) {
  if (n == null) return "-";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// -- Datasets ---------------------------------------------------------------------------------

async function loadDatasets() {
  const list = $("datasets");
  try {
    const { body } = await api("/v1/datasets");
    list.replaceChildren(...body.datasets.map((d) => {
      const li = el("li", { "data-name": d.name }, d.name,
        el("span", { class: "sub" }, d.ready ? `${d.version} · ${Number(d.keys).toLocaleString()} keys` : "loading"));
      li.addEventListener("click", () => select(d.name));
      if (d.name === current) li.classList.add("active");
      return li;
    }));
    if (!current && body.datasets.length) select(body.datasets[0].name);
  } catch (e) {
    showError(list, e);
  }
}

function schemaFields(i) {
  const fields = (i && i.metadata && i.metadata.schema && i.metadata.schema.fields) || [];
  return fields.map((f) => ({ name: f.name, type: typeof f.data_type === "string" ? f.data_type : Object.keys(f.data_type)[0] }));
}

async function select(name) {
  current = name;
  for (const li of $("datasets").children) li.classList.toggle("active", li.dataset.name === name);
  const card = $("info");
  try {
    info = (await api(`/v1/datasets/${enc(name)}`)).body;
  } catch (e) {
    showError(card, e);
    return;
  }
  const fields = schemaFields(info);
  const keyCols = (info.metadata && info.metadata.key_columns) || [];
  const rows = [
    ["version", info.version || "-"],
    ["built", `${ago(info.built_at)} (${info.built_at || "-"})`],
    ["keys", info.keys != null ? Number(info.keys).toLocaleString() : "-"],
    ["size", `${bytes(info.file_bytes)} in ${info.shards || 1} shard(s)`],
    ["previous version", info.previous_version || "-"],
    ["staged version", info.staged_version || "-"],
    ["source", info.source],
    ["sync", info.sync.last_error ? `failing: ${info.sync.last_error}` : `ok, ${ago(info.sync.last_success)}`],
    ["key", keyCols.join(" / ") || "-"],
    ["fields", fields.map((f) => `${f.name}: ${f.type}`).join(", ") || "-"],
  ];
  card.replaceChildren(el("h2", {}, name),
    el("dl", {}, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k }, v)])));
  // Query builder defaults from the schema: group by a text field, sum a numeric one.
  const text = fields.find((f) => !keyCols.includes(f.name) && /Utf8/.test(f.type)) || fields.find((f) => keyCols.includes(f.name));
  const num = fields.find((f) => /Int|Float|Decimal/.test(f.type) && !keyCols.includes(f.name));
  $("q-group").value = text ? text.name : "";
  $("q-agg-field").value = num ? num.name : "";
  $("q-agg").value = num ? "sum" : "count";
  $("q-filter-field").value = "";
  buildQuery();
  $("lookup-result").replaceChildren();
  $("scan-table").replaceChildren();
  $("scan-status").textContent = "";
  $("history-table").replaceChildren();
  if (!$("tab-history").hidden) loadHistory();
}

// -- Lookup -----------------------------------------------------------------------------------

$("lookup-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("lookup-result");
  const key = $("lookup-key").value;
  const fields = $("lookup-fields").value.trim();
  if (!current || !key) return;
  try {
    const q = fields ? `?fields=${enc(fields)}` : "";
    const { body, version } = await api(`/v1/datasets/${enc(current)}/keys/${enc(key)}${q}`);
    out.textContent = typeof body === "string" ? body : JSON.stringify(body, null, 2);
    out.dataset.version = version || "";
  } catch (e) {
    showError(out, e);
  }
});

// -- Scan -------------------------------------------------------------------------------------

async function scan(after) {
  const params = new URLSearchParams();
  for (const p of ["prefix", "start", "end", "limit"]) {
    const v = $(`scan-${p}`).value;
    if (v) params.set(p, v);
  }
  if (after) params.set("after", after);
  const table = $("scan-table");
  try {
    const { body } = await api(`/v1/datasets/${enc(current)}/scan?${params}`);
    table.replaceChildren(el("tr", {}, el("th", {}, "key"), el("th", {}, "value")),
      ...body.items.map((i) => el("tr", {}, el("td", {}, i.key ?? `base64:${i.key_base64}`),
        el("td", {}, el("code", {}, typeof i.value === "string" ? i.value : JSON.stringify(i.value))))));
    scanCursor = body.next;
    $("scan-next").disabled = !scanCursor;
    $("scan-status").textContent = `${body.items.length} entries from version ${body.version}${body.next ? "; more after" : ""}`;
  } catch (e) {
    showError(table, e);
  }
}

$("scan-form").addEventListener("submit", (ev) => { ev.preventDefault(); if (current) scan(null); });
$("scan-next").addEventListener("click", () => { if (scanCursor) scan(scanCursor); });

// -- Query ------------------------------------------------------------------------------------

function literal(v) {
  return v !== "" && !Number.isNaN(Number(v)) ? Number(v) : v;
}

/** The query the builder's inputs describe, written into the JSON editor. */
function buildQuery() {
  const q = {};
  const prefix = $("q-prefix").value;
  if (prefix) q.prefix = prefix;
  const ff = $("q-filter-field").value.trim();
  if (ff) q.filter = { [ff]: { [$("q-filter-op").value]: literal($("q-filter-value").value) } };
  const group = $("q-group").value.trim();
  const agg = $("q-agg").value;
  const field = $("q-agg-field").value.trim();
  if (group) q.group_by = [group];
  const name = agg === "count" ? "count" : `${agg}_${field || "value"}`;
  q.aggregates = { [name]: { [agg]: agg === "count" ? (field || "*") : field } };
  q.order_by = [{ field: name, desc: true }];
  q.limit = Number($("q-limit").value) || 20;
  $("q-json").value = JSON.stringify(q, null, 1);
}

for (const id of ["q-prefix", "q-filter-field", "q-filter-op", "q-filter-value", "q-group", "q-agg", "q-agg-field", "q-limit"]) {
  $(id).addEventListener("input", buildQuery);
  $(id).addEventListener("change", buildQuery);
}

let queryPlot = null;

/** 1234567 as 1.23M: axis labels that fit. */
function compact(n) {
  const a = Math.abs(n);
  for (const [d, u] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) if (a >= d) return `${+(n / d).toPrecision(3)}${u}`;
  return `${+n.toPrecision(3)}`;
}

function drawChart(rows, kind) {
  const box = $("query-chart");
  if (queryPlot) { queryPlot.destroy(); queryPlot = null; }
  box.replaceChildren();
  if (kind === "table" || !rows.length) return;
  const cols = Object.keys(rows[0]);
  const value = cols.find((c) => typeof rows[0][c] === "number");
  const label = cols.find((c) => c !== value) || value;
  if (!value) return;
  const labels = rows.map((r) => (typeof r[label] === "string" ? r[label] : JSON.stringify(r[label])));
  const xs = rows.map((_, i) => i);
  const ys = rows.map((r) => (typeof r[value] === "number" ? r[value] : null));
  const opts = {
    width: Math.max(320, box.clientWidth || 640),
    height: 260,
    scales: {
      x: { time: false, range: [-0.5, rows.length - 0.5] },
      // Bars start at zero.
      y: { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.05 : 1] },
    },
    axes: [
      { values: (u, splits) => splits.map((i) => (Number.isInteger(i) ? labels[i] ?? "" : "")), space: 40 },
      { size: 70, values: (u, splits) => splits.map(compact) },
    ],
    series: [{}, {
      label: value,
      stroke: "#2f6fdb",
      fill: kind === "bar" ? "#2f6fdbaa" : undefined,
      width: kind === "bar" ? 0 : 2,
      paths: kind === "bar" ? uPlot.paths.bars({ size: [0.6, 80] }) : undefined,
      points: { show: kind !== "bar" },
    }],
    legend: { show: true },
  };
  queryPlot = new uPlot(opts, [xs, ys], box);
}

$("query-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const status = $("query-status");
  const table = $("query-table");
  let q;
  try {
    q = JSON.parse($("q-json").value);
  } catch (e) {
    showError(status, new Error(`the query is not JSON: ${e.message}`));
    return;
  }
  try {
    const { body } = await api(`/v1/datasets/${enc(current)}/query`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(q),
    });
    const cols = [...new Set(body.rows.flatMap((r) => Object.keys(r)))];
    table.replaceChildren(el("tr", {}, ...cols.map((c) => el("th", {}, c))),
      ...body.rows.map((r) => el("tr", {}, ...cols.map((c) => el("td", {},
        el("code", {}, r[c] === undefined ? "" : typeof r[c] === "string" ? r[c] : JSON.stringify(r[c])))))));
    status.textContent = `${body.rows.length} rows from version ${body.version}: ` +
      `${body.stats.rows_scanned.toLocaleString()} rows read in ${body.stats.elapsed_ms.toFixed(1)} ms`;
    drawChart(body.rows, $("q-chart").value);
  } catch (e) {
    table.replaceChildren();
    drawChart([], "table");
    showError(status, e);
  }
});

// -- Metrics ----------------------------------------------------------------------------------

const history = { t: [], rate: [], p50: [], p99: [], cache: [] };
let last = null;
const plots = {};

/** Parses the Prometheus text format into [name, labels, value] triples. */
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const p of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
    out.push([m[1], labels, Number(m[4])]);
  }
  return out;
}

function quantile(buckets, total, q) {
  if (total <= 0) return null;
  for (const [le, count] of buckets) if (count >= q * total) return le === Infinity ? null : le * 1000;
  return null;
}

async function pollMetrics() {
  let samples;
  try {
    samples = parseMetrics((await (await fetch("/metrics")).text()));
  } catch (_) {
    return;
  }
  const own = (l) => l.route !== "metrics";
  let requests = 0;
  const buckets = new Map();
  let cache = null;
  for (const [name, l, v] of samples) {
    if (name === "snapkv_http_requests_total" && own(l)) requests += v;
    if (name === "snapkv_http_request_duration_seconds_bucket" && own(l)) {
      const le = l.le === "+Inf" ? Infinity : Number(l.le);
      buckets.set(le, (buckets.get(le) || 0) + v);
    }
    if (name === "snapkv_block_cache_hit_ratio" && l.dataset === current) cache = v;
  }
  const now = Date.now() / 1000;
  const sorted = [...buckets.entries()].sort((a, b) => a[0] - b[0]);
  if (last) {
    const dt = now - last.t;
    const delta = sorted.map(([le, c]) => [le, c - (last.buckets.get(le) || 0)]);
    const total = delta.length ? delta[delta.length - 1][1] : 0;
    history.t.push(now);
    history.rate.push((requests - last.requests) / dt);
    history.p50.push(quantile(delta, total, 0.5));
    history.p99.push(quantile(delta, total, 0.99));
    history.cache.push(cache);
    for (const k of Object.keys(history)) if (history[k].length > 90) history[k].shift();
    drawMetrics();
  }
  last = { t: now, requests, buckets: new Map(sorted) };
}

function drawMetrics() {
  const specs = {
    "chart-rate": [["req/s", history.rate, "#2f6fdb"]],
    "chart-latency": [["p50", history.p50, "#2f6fdb"], ["p99", history.p99, "#d9822b"]],
    "chart-cache": [["hit ratio", history.cache, "#2a9d55"]],
  };
  for (const [id, series] of Object.entries(specs)) {
    const data = [history.t, ...series.map((s) => s[1])];
    if (!plots[id]) {
      plots[id] = new uPlot({
        width: 340, height: 180,
        series: [{}, ...series.map(([label, , stroke]) => ({ label, stroke, width: 2 }))],
      }, data, $(id));
    } else {
      plots[id].setData(data);
    }
  }
}

// -- History ----------------------------------------------------------------------------------

/** The dataset's history in its store, newest first; the version served now is marked. */
async function loadHistory() {
  const status = $("history-status");
  const table = $("history-table");
  if (!current) return;
  status.textContent = "Loading…";
  try {
    const { body } = await api(`/v1/datasets/${enc(current)}/history?last=100`);
    const served = info && info.version;
    const entries = body.entries.slice().reverse();
    const n = entries.length;
    status.textContent = `${n} ${n === 1 ? "entry" : "entries"}, newest first, from ${body.source}`;
    table.replaceChildren(
      el("tr", {}, ...["when", "action", "version", "from", "by", "reason"].map((c) => el("th", {}, c))),
      ...entries.map((e) => {
        const action = e.forced ? `${e.action} (forced: ${(e.overridden || []).join(", ")})` : e.action;
        const version = e.to && e.to === served ? `${e.to} (served)` : e.to || "-";
        return el("tr", { "data-seq": e.seq },
          el("td", { title: e.at }, ago(e.at)), el("td", {}, action), el("td", {}, version),
          el("td", {}, e.from || "-"), el("td", {}, e.by), el("td", {}, e.reason || ""));
      }));
  } catch (e) {
    table.replaceChildren();
    showError(status, e);
  }
}

// -- Tabs and start -------------------------------------------------------------------------

for (const b of document.querySelectorAll(".tabs button")) {
  b.addEventListener("click", () => {
    for (const o of document.querySelectorAll(".tabs button")) o.classList.toggle("active", o === b);
    for (const t of document.querySelectorAll(".tab")) t.hidden = t.id !== `tab-${b.dataset.tab}`;
    if (b.dataset.tab === "history") loadHistory();
  });
}

$("server").textContent = location.host;
loadDatasets();
setInterval(loadDatasets, 10000);
pollMetrics();
setInterval(pollMetrics, 2000);
