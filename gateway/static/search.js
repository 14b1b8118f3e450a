// The search page: lists indexes and aliases, runs a (reranked) _search through the gateway,
// shows hits with caption, article text and the evidence sentences marked by their attention
// weight, first-stage vs reranked rank, per-stage timings and a fallback notice.
"use strict";

const $ = (id) => document.getElementById(id);
let inFlight = null; // AbortController of the running search
const HEADING_LEVELS = ["law", "part", "chapter", "section", "subsection", "division"];

/** Indexes and aliases a user may search (system indexes, named ".…", are hidden). */
async function loadIndexes() {
  const select = $("index");
  const wanted = new URLSearchParams(location.search).get("index") || select.value || "statutes";
  const [indices, aliases] = await Promise.all([
    apiJson("/_cat/indices?format=json&h=index,docs.count"),
    apiJson("/_cat/aliases?format=json&h=alias,index").catch(() => []),
  ]);
  const names = new Map(); // name -> label
  for (const row of indices) {
    if (!row.index || row.index.startsWith(".")) continue;
    names.set(row.index, `${row.index} (${row["docs.count"] ?? "?"} docs)`);
  }
  for (const row of aliases) {
    if (!row.alias || row.alias.startsWith(".") || (row.index || "").startsWith(".")) continue;
    names.set(row.alias, `${row.alias} → ${row.index} (alias)`);
  }
  const sorted = [...names.keys()].sort();
  select.replaceChildren(...sorted.map((name) => el("option", { value: name, text: names.get(name) })));
  if (names.has(wanted)) select.value = wanted;
  else if (names.has("statutes")) select.value = "statutes";
}

function searchRequest(query, reranker, size, windowSize) {
  const body = {
    size,
    // The stored article vectors are large and useless to a reader.
    _source: { excludes: ["vectors"] },
    // The first stage of lexrerank/index_fields.py FIRST_STAGE_FIELDS: words, and for Japanese
    // also character bigrams (an index without the bigram sub-field ignores it).
    query: { multi_match: { query, fields: ["content", "content.bigram"], type: "most_fields" } },
  };
  if (reranker === "none") return { params: "", body };
  body.ext = { rerank: { query_context: { query_text: query }, model: reranker,
                         window_size: windowSize, explain: true } };
  return { params: "?search_pipeline=lexrerank", body };
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function showFallback(info) {
  const box = $("fallback");
  if (info && info.status === "fallback") {
    box.replaceChildren(
      el("strong", { text: "Reranking fell back: " }),
      `these hits are in first-stage (BM25) order. Reason: `,
      el("span", { class: "reason", text: info.reason || "unknown" }),
      " ", el("code", { class: "reason-code", text: info.reason_code || "" }));
    box.hidden = false;
  } else {
    box.replaceChildren();
    box.hidden = true;
  }
}

/** Timing bars: one row per stage, widths relative to the total. */
function timingsBlock(info, roundTripMs) {
  const took = info.took_ms || {};
  const total = took.total || Math.max(1, ...Object.values(took).filter((v) => typeof v === "number"));
  const rows = [["first_stage", "first stage"], ["rerank", "rerank"], ["merge", "merge"],
                ["total", "total"]];
  const table = el("table", { class: "timings", id: "timings" },
    el("caption", { text: "Per-stage timings (gateway)" }));
  for (const [key, label] of rows) {
    const value = took[key];
    const bar = el("span", { class: `bar bar-${key}` });
    bar.style.width = `${Math.max(0, Math.min(100, ((value || 0) / total) * 100))}%`;
    table.append(el("tr", { dataset: { stage: key } },
      el("th", { text: label }), el("td", { class: "num", text: formatMs(value) }),
      el("td", { class: "barcell" }, bar)));
  }
  if (typeof info.worker_ms === "number") {
    table.append(el("tr", { dataset: { stage: "worker" } }, el("th", { text: "worker compute" }),
      el("td", { class: "num", text: formatMs(info.worker_ms) }), el("td")));
  }
  table.append(el("tr", { dataset: { stage: "browser" } }, el("th", { text: "round trip (browser)" }),
    el("td", { class: "num", text: formatMs(roundTripMs) }), el("td")));
  return table;
}

function renderSummary(resp, reranker, roundTripMs) {
  const box = $("summary");
  const total = resp.hits && resp.hits.total;
  const count = typeof total === "object" && total ? `${total.relation === "gte" ? "≥ " : ""}${total.value}` : total;
  const info = resp.ext && resp.ext.rerank;
  const facts = el("dl", { class: "facts" },
    el("dt", { text: "matches" }), el("dd", { id: "total-hits", text: count ?? "?" }),
    el("dt", { text: "reranker" }), el("dd", { id: "rerank-model", text: info ? info.model : "none" }));
  if (info) {
    facts.append(
      el("dt", { text: "status" }), el("dd", { id: "rerank-status", class: `status-${info.status}`, text: info.status }),
      el("dt", { text: "model version" }), el("dd", { id: "model-version", text: info.model_version || "–" }),
      el("dt", { text: "window" }), el("dd", { text: `${info.reranked ?? "?"} of ${info.window_size}` }));
    if (info.query_truncated) {
      facts.append(el("dt", { text: "note" }), el("dd", { text: "the model read only the start of this long query" }));
    }
    box.replaceChildren(facts, timingsBlock(info, roundTripMs));
  } else {
    facts.append(el("dt", { text: "took" }), el("dd", { text: formatMs(resp.took) }),
      el("dt", { text: "round trip" }), el("dd", { text: formatMs(roundTripMs) }));
    box.replaceChildren(facts);
  }
  box.hidden = false;
}

/** The article's sentences, the evidence ones wrapped in <mark> shaded by weight. */
function articleBody(source, evidence) {
  const sentences = Array.isArray(source.sentences) && source.sentences.length
    ? source.sentences : String(source.text || source.content || "").split("\n").filter(Boolean);
  const byIndex = new Map();
  const byText = new Map();
  for (const e of evidence || []) {
    if (Number.isInteger(e.sentence_index)) byIndex.set(e.sentence_index, e);
    else byText.set(e.sentence, e);
  }
  const maxWeight = Math.max(1e-9, ...(evidence || []).map((e) => e.weight || 0));
  const body = el("div", { class: "article-text" });
  sentences.forEach((sentence, i) => {
    const e = byIndex.get(i) || byText.get(sentence);
    if (!e) {
      body.append(el("p", { class: "sentence", text: sentence }));
      return;
    }
    const weight = Number(e.weight) || 0;
    const mark = el("mark", { class: "evidence", dataset: { weight: weight.toFixed(4), sentenceIndex: i },
                              title: `attention weight ${weight.toFixed(3)}` }, sentence);
    // Shade by weight relative to this article's strongest sentence (sparsemax weights sum to 1).
    mark.style.setProperty("--w", (0.25 + 0.75 * (weight / maxWeight)).toFixed(3));
    body.append(el("p", { class: "sentence has-evidence" },
      el("span", { class: "weight", text: weight.toFixed(2) }), mark));
  });
  return body;
}

function rankBadge(rank, firstStageRank) {
  if (!firstStageRank) return el("span", { class: "rank-move same", text: "" });
  const delta = firstStageRank - rank;
  const text = delta > 0 ? `▲ ${delta}` : delta < 0 ? `▼ ${-delta}` : "=";
  return el("span", { class: `rank-move ${delta > 0 ? "up" : delta < 0 ? "down" : "same"}`,
                      title: "places moved by the reranker", text });
}

function renderHits(resp) {
  const list = $("results");
  const hits = (resp.hits && resp.hits.hits) || [];
  if (!hits.length) {
    list.replaceChildren(el("li", { class: "empty", text: "No article matches this query." }));
    return;
  }
  list.replaceChildren(...hits.map((hit, i) => {
    const rank = i + 1;
    const src = hit._source || {};
    const rr = hit._rerank;
    const headings = HEADING_LEVELS.map((level) => (src.headings || {})[level]).filter(Boolean).join(" › ");
    const ranks = el("div", { class: "ranks" },
      el("span", { class: "rank", title: "rank shown", text: `#${rank}` }));
    if (rr) {
      ranks.append(
        el("span", { class: "first-stage-rank", dataset: { rank: rr.first_stage_rank },
                     text: `BM25 #${rr.first_stage_rank}` }),
        rankBadge(rank, rr.first_stage_rank));
    }
    const scores = el("div", { class: "scores" },
      el("span", { text: `score ${typeof hit._score === "number" ? hit._score.toFixed(3) : "–"}` }));
    if (rr) {
      scores.append(el("span", { text: `BM25 ${rr.first_stage_score.toFixed(3)}` }),
        el("span", { text: `model ${rr.model_score.toFixed(3)}` }));
    }
    return el("li", { class: "hit", dataset: { id: hit._id, rank, firstStageRank: rr ? rr.first_stage_rank : null } },
      el("div", { class: "hit-head" }, ranks,
        el("div", { class: "title" },
          el("span", { class: "article-id", text: `Article ${src.article_id || src.doc_id || hit._id}` }),
          src.caption ? el("span", { class: "caption", text: src.caption }) : null,
          headings ? el("div", { class: "headings", text: headings }) : null),
        scores),
      articleBody(src, rr && rr.evidence));
  }));
}

async function runSearch(event) {
  if (event) event.preventDefault();
  const query = $("query").value.trim();
  if (!query) { showError("Type a query first."); return; }
  const index = $("index").value;
  if (!index) { showError("No index to search: index a corpus first (lexrerank index)."); return; }
  const reranker = $("reranker").value;
  const size = Math.max(1, Math.min(100, parseInt($("size").value, 10) || 10));
  const windowSize = Math.max(1, Math.min(1000, parseInt($("window").value, 10) || 100));
  const { params, body } = searchRequest(query, reranker, size, windowSize);
  history.replaceState(null, "", `?${new URLSearchParams({ q: query, index, reranker })}`);
  if (inFlight) inFlight.abort();
  inFlight = new AbortController();
  document.body.classList.add("busy");
  $("search-button").disabled = true;
  const started = performance.now();
  try {
    const resp = await apiJson(`/${encodeURIComponent(index)}/_search${params}`,
                               { method: "POST", body, signal: inFlight.signal });
    const roundTrip = performance.now() - started;
    showError("");
    showFallback(resp.ext && resp.ext.rerank);
    renderSummary(resp, reranker, roundTrip);
    renderHits(resp);
  } catch (e) {
    if (e.name === "AbortError") return;
    showError(`Search failed: ${e.message}`);
  } finally {
    document.body.classList.remove("busy");
    $("search-button").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  bindApiKeyField($("api-key"));
  // A new key: list the indexes again; their success clears an earlier "key needed" error.
  $("api-key").addEventListener("change", () => loadIndexes().then(() => showError(""))
    .catch((e) => showError(`Cannot list indexes: ${e.message}`)));
  $("search-form").addEventListener("submit", runSearch);
  const params = new URLSearchParams(location.search);
  if (params.get("reranker")) $("reranker").value = params.get("reranker");
  if (params.get("q")) $("query").value = params.get("q");
  try {
    await loadIndexes();
    document.body.dataset.ready = "1";
    if (params.get("q")) runSearch();
  } catch (e) {
    showError(`Cannot list indexes: ${e.message}`);
  }
});
