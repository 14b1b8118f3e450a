// Shared by the search and ops pages: DOM building from text nodes only, the optional API key
// (kept in localStorage, sent as X-API-Key), and JSON requests to this gateway.
"use strict";

const API_KEY_STORAGE = "lexrerank.apiKey";

/**
 * Build an element. attrs: {class, text, dataset: {...}, on: {event: fn}, other: value}.
 * Children are nodes or strings (strings become text nodes: never parsed as HTML).
 */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An SVG element (charts); attribute values are set as attributes, never parsed. */
function svgEl(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "text") node.textContent = String(value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

function getApiKey() {
  try { return localStorage.getItem(API_KEY_STORAGE) || ""; } catch (e) { return ""; }
}

function setApiKey(value) {
  try {
    if (value) localStorage.setItem(API_KEY_STORAGE, value);
    else localStorage.removeItem(API_KEY_STORAGE);
  } catch (e) { /* storage disabled: the key lasts for this page only */ }
}

/** Wire an <input type=password> to the stored API key. */
function bindApiKeyField(input) {
  input.value = getApiKey();
  input.addEventListener("change", () => setApiKey(input.value.trim()));
}

/** An error a request met: HTTP status (0 = network) and a one-line reason. */
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** The reason inside an OpenSearch-shaped (or other JSON) error body, else the raw text. */
function errorReason(status, text) {
  try {
    const body = JSON.parse(text);
    const err = body && body.error;
    if (err && typeof err === "object") {
      const root = (err.root_cause && err.root_cause[0]) || err;
      return `${root.type || "error"}: ${root.reason || err.reason || JSON.stringify(err)}`;
    }
    if (typeof err === "string") return err;
    if (body && body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (e) { /* not JSON */ }
  return text ? text.slice(0, 300) : `HTTP ${status}`;
}

/** Request JSON from this gateway; throws ApiError with a readable reason. */
async function apiJson(path, options) {
  const opts = options || {};
  const headers = { "accept": "application/json" };
  const key = getApiKey();
  if (key) headers["X-API-Key"] = key;
  let body;
  if (opts.body !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  let resp;
  try {
    resp = await fetch(path, { method: opts.method || "GET", headers, body, cache: "no-store",
                               signal: opts.signal });
  } catch (e) {
    if (e.name === "AbortError") throw e; // superseded by a newer request
    throw new ApiError(0, `the gateway did not answer (${e.message})`);
  }
  const text = await resp.text();
  if (!resp.ok) {
    let hint = "";
    if (resp.status === 401 || resp.status === 403) hint = " (set the API key above)";
    throw new ApiError(resp.status, `HTTP ${resp.status}: ${errorReason(resp.status, text)}${hint}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(resp.status, `HTTP ${resp.status}: the answer is not JSON`);
  }
}

/** "12.3 ms" / "1.20 s" for a number of milliseconds; "–" when missing. */
function formatMs(ms) {
  if (typeof ms !== "number" || !isFinite(ms)) return "–";
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 2 : 1)} ms`;
}
