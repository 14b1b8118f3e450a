// The ops page: polls GET /_lexrerank/ops every 2 s, keeps the last 5 minutes of samples in
// memory and draws them as SVG line charts; tables of workers and reindex jobs; a visible
// error while the endpoint fails (the charts keep what they had).
"use strict";

const POLL_MS = 2000;
const KEEP_S = 300;
const samples = []; // {t (unix s), p50, p95, p99, fallbackRate, queues: {name: n}, requests}
const $ = (id) => document.getElementById(id);
let lastOk = null;

const SERIES_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }

/**
 * A line chart of samples: series = [{name, value: (sample) => number|null}]. Gaps where a
 * value is null (no requests in the window). x: seconds before now; y: 0..max, nice-rounded.
 */
function lineChart(container, series, unit, fmt) {
  const W = 460, H = 180, L = 52, R = 10, T = 10, B = 24;
  const now = samples.length ? samples[samples.length - 1].t : Date.now() / 1000;
  // The x axis grows with the data kept: 1 minute at first, up to KEEP_S.
  const span = Math.min(KEEP_S, Math.max(60, samples.length ? now - samples[0].t : 0));
  const t0 = now - span;
  let max = 0;
  for (const s of samples) for (const ser of series) max = Math.max(max, num(ser.value(s)) ?? 0);
  max = niceMax(max);
  const x = (t) => L + ((t - t0) / span) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img",
                             "aria-label": series.map((s) => s.name).join(", ") });
  for (const frac of [0, 0.5, 1]) {
    const v = max * frac;
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "gridline" }),
      svgEl("text", { x: L - 6, y: y(v) + 4, class: "axis-label", "text-anchor": "end", text: fmt(v) }));
  }
  for (const frac of [1, 0.75, 0.5, 0.25, 0]) {
    const sec = Math.round(span * frac);
    const label = sec === 0 ? "now" : sec % 60 === 0 ? `-${sec / 60}m` : `-${sec}s`;
    svg.append(svgEl("text", { x: x(now - sec), y: H - 6, class: "axis-label", "text-anchor": "middle",
                               text: label }));
  }
  const legend = el("div", { class: "legend" });
  series.forEach((ser, i) => {
    const color = SERIES_COLORS[i % SERIES_COLORS.length];
    // One polyline per run of non-null values, so gaps stay gaps.
    let run = [];
    let points = 0;
    const flush = () => {
      if (run.length === 1) svg.append(svgEl("circle", { cx: run[0][0], cy: run[0][1], r: 2, fill: color }));
      if (run.length > 1) svg.append(svgEl("polyline", { points: run.map((p) => p.join(",")).join(" "),
                                                         fill: "none", stroke: color, "stroke-width": 1.8 }));
      run = [];
    };
    for (const s of samples) {
      const v = num(ser.value(s));
      if (v === null) { flush(); continue; }
      run.push([x(s.t).toFixed(1), y(Math.min(v, max)).toFixed(1)]);
      points += 1;
    }
    flush();
    const last = samples.length ? num(ser.value(samples[samples.length - 1])) : null;
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = color;
    legend.append(el("span", { class: "legend-item", dataset: { series: ser.name, points } },
      swatch, `${ser.name}: `, el("b", { text: last === null ? "–" : `${fmt(last)}${unit}` })));
  });
  container.dataset.samples = String(samples.length);
  container.replaceChildren(svg, legend);
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

const fmtMs = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const fmtPct = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
const fmtInt = (v) => (Number.isInteger(v) ? v.toString() : v.toFixed(1)); // axis halves stay exact

function formatEta(s) {
  if (typeof s !== "number" || !isFinite(s)) return "–";
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function formatTime(unix) {
  if (typeof unix !== "number") return "–";
  return new Date(unix * 1000).toLocaleTimeString();
}

function progressCell(done, total, extra) {
  if (typeof total !== "number" || total <= 0) return el("td", { text: typeof done === "number" ? String(done) : "–" });
  const value = Math.min(done || 0, total);
  return el("td", { class: "progress-cell" },
    el("progress", { max: total, value, title: `${value} / ${total}` }),
    el("span", { class: "progress-text", text: `${value} / ${total} (${((100 * value) / total).toFixed(0)}%)${extra || ""}` }));
}

function renderTables(data) {
  const reasons = Object.entries((data.gateway && data.gateway.fallbacks_by_reason) || {})
    .sort((a, b) => b[1] - a[1]);
  $("fallback-reasons").tBodies[0].replaceChildren(...(reasons.length
    ? reasons.map(([reason, n]) => el("tr", {}, el("td", { text: reason }), el("td", { class: "num", text: n })))
    : [el("tr", {}, el("td", { colspan: 2, class: "empty", text: "no fallbacks" }))]));

  const workers = Array.isArray(data.workers) ? data.workers : [];
  $("workers").tBodies[0].replaceChildren(...(workers.length
    ? workers.map((w) => el("tr", { class: w.ok === false ? "bad" : "", dataset: { worker: w.name } },
        el("td", { text: w.name }), el("td", { text: (w.queues || []).join(", ") }),
        el("td", { text: w.model ?? "–" }), el("td", { class: "model-version", text: w.model_version ?? "–" }),
        el("td", { text: w.device ?? "–" }), el("td", { text: w.pid ?? "–" }),
        el("td", { text: formatTime(w.updated_at) }),
        el("td", { class: w.ok === false ? "state-bad" : "state-ok", text: w.ok === false ? "not answering" : "ok" })))
    : [el("tr", {}, el("td", { colspan: 8, class: "empty bad", text: "no worker answers: reranked searches fall back" }))]));

  const jobs = Array.isArray(data.reindex_jobs) ? data.reindex_jobs : [];
  $("reindex-jobs").tBodies[0].replaceChildren(...(jobs.length
    ? jobs.map((j) => el("tr", { class: `job job-${j.state}`, dataset: { alias: j.alias, state: j.state } },
        el("td", { text: j.alias }), el("td", { text: j.index }),
        el("td", { text: (j.models || []).join(", ") }), el("td", { class: "job-state", text: j.state }),
        progressCell(j.documents_loaded, j.documents_total),
        progressCell(j.chunks_done, j.chunks_total, j.chunks_failed ? `, ${j.chunks_failed} failed` : ""),
        el("td", { class: "eta", text: formatEta(j.eta_s) }), el("td", { text: formatTime(j.updated_at) }),
        el("td", { class: "job-error", text: j.error || "" })))
    : [el("tr", {}, el("td", { colspan: 9, class: "empty", text: "no reindex jobs" }))]));
}

function renderCounters(data, rps) {
  const g = data.gateway || {};
  const lat = g.latency_ms || {};
  $("gateway-pid").textContent = g.pid ?? "?";
  $("c-requests").textContent = g.requests ?? "–";
  $("c-reranked").textContent = g.reranked ?? "–";
  $("c-fallbacks").textContent = g.fallbacks ?? "–";
  $("c-fallback-rate").textContent = num(g.fallback_rate) === null ? "–" : `${(100 * g.fallback_rate).toFixed(1)} %`;
  $("c-p95").textContent = num(lat.p95) === null ? "–" : `${fmtMs(lat.p95)} ms`;
  $("c-rps").textContent = rps === null ? "–" : rps.toFixed(2);
}

function renderCharts() {
  lineChart($("chart-latency"), [
    { name: "p50", value: (s) => s.p50 }, { name: "p95", value: (s) => s.p95 },
    { name: "p99", value: (s) => s.p99 }], " ms", fmtMs);
  lineChart($("chart-fallback"), [{ name: "fallback rate", value: (s) => s.fallbackRate }], " %", fmtPct);
  const names = new Set();
  for (const s of samples) for (const q of Object.keys(s.queues)) names.add(q);
  lineChart($("chart-queues"), [...names].sort().map((q) => ({ name: q, value: (s) => s.queues[q] ?? null })),
    "", fmtInt);
}

function addSample(data) {
  const g = data.gateway || {};
  const lat = g.latency_ms || {};
  const t = num(data.time) ?? Date.now() / 1000;
  const prev = samples[samples.length - 1];
  const rate = num(g.fallback_rate);
  samples.push({ t, p50: num(lat.p50), p95: num(lat.p95), p99: num(lat.p99),
                 fallbackRate: rate === null ? null : 100 * rate,
                 queues: Object.fromEntries(Object.entries(data.queues || {}).filter(([, v]) => num(v) !== null)),
                 requests: num(g.requests), pid: g.pid });
  while (samples.length && samples[0].t < t - KEEP_S) samples.shift();
  // Counters are per gateway process: a rate needs two samples from the same one.
  if (!prev || prev.pid !== g.pid || prev.requests === null || num(g.requests) === null ||
      t <= prev.t) return null;
  // A gateway restart resets the counter: no negative rates.
  return Math.max(0, (g.requests - prev.requests) / (t - prev.t));
}

async function poll() {
  try {
    const data = await apiJson("/_lexrerank/ops");
    const rps = addSample(data);
    lastOk = new Date();
    $("ops-error").hidden = true;
    const problems = Array.isArray(data.errors) ? data.errors : [];
    $("ops-warnings").textContent = problems.length ? `The gateway could not read everything: ${problems.join("; ")}` : "";
    $("ops-warnings").hidden = !problems.length;
    $("last-update").textContent = lastOk.toLocaleTimeString();
    $("sample-count").textContent = String(samples.length);
    renderCounters(data, rps);
    renderTables(data);
    renderCharts();
    document.body.dataset.polls = String((parseInt(document.body.dataset.polls || "0", 10) || 0) + 1);
  } catch (e) {
    const box = $("ops-error");
    box.textContent = `Cannot read /_lexrerank/ops: ${e.message}` +
      (lastOk ? ` (last good update ${lastOk.toLocaleTimeString()}; the charts show data up to then)` : "");
    box.hidden = false;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  bindApiKeyField($("api-key"));
  renderCharts();
  poll();
});
