"""`search` and `eval` through the gateway (``--via-gateway``): the whole serving pipeline.

The requests are what any OpenSearch client would send: the first-stage BM25 query of
:func:`lexrerank.bm25.bm25_body`, plus ``search_pipeline=lexrerank`` and ``ext.rerank``
when a reranker is named. Results are shaped like the in-process path's, so `eval` scores
both the same way (and they must agree).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx
from tqdm import tqdm

from lexrerank.bm25 import bm25_body
from lexrerank.errors import LexrerankError
from lexrerank.evaluation import FIRST_STAGE_DEPTH, QueryResult
from reranker.datasets import Query

# Offline evaluation waits for every rerank: a fallback would silently measure BM25.
EVAL_TIMEOUT_MS = 60_000


def search_body(query: str, size: int, reranker: str, window: int, timeout_ms: int | None,
                explain: bool, source: bool = True) -> dict[str, Any]:
    """The request body for ``query`` (with ``ext.rerank`` unless ``reranker`` is none)."""
    body = bm25_body(query, size)
    if not source:
        body["_source"] = False
    if reranker != "none":
        options: dict[str, Any] = {"query_context": {"query_text": query},
                                   "window_size": window, "model": reranker,
                                   "explain": explain}
        if timeout_ms is not None:
            options["timeout_ms"] = timeout_ms
        body["ext"] = {"rerank": options}
    return body


def gateway_search(http: httpx.Client, url: str, index: str, body: dict[str, Any],
                   rerank: bool) -> dict[str, Any]:
    """POST ``body`` to ``{url}/{index}/_search``; a clear error when the gateway is down."""
    params = {"search_pipeline": "lexrerank"} if rerank else {}
    try:
        resp = http.post(f"{url.rstrip('/')}/{index}/_search", params=params, json=body)
    except httpx.HTTPError as exc:
        raise LexrerankError(f"the gateway is not reachable at {url}: start it with "
                             f"`lexrerank serve` (or `lexrerank up --serve`) ({exc})") from exc
    if resp.status_code != 200:
        raise LexrerankError(f"the gateway answered {resp.status_code}: {resp.text[:500]}")
    return resp.json()


def rows_from_response(resp: dict[str, Any]) -> list[dict[str, Any]]:
    """Hits as `lexrerank search` rows (rank, doc_id, score, caption, text, rerank info)."""
    rows = []
    for i, hit in enumerate(resp["hits"]["hits"], start=1):
        src = hit.get("_source") or {}
        row = {"rank": i, "doc_id": hit["_id"], "score": hit["_score"],
               "caption": src.get("caption"), "text": src.get("text")}
        if "_rerank" in hit:
            info = hit["_rerank"]
            row.update(first_stage_rank=info["first_stage_rank"],
                       model_score=info["model_score"], evidence=info.get("evidence", []))
        rows.append(row)
    return rows


def fallback_reason(resp: dict[str, Any]) -> str | None:
    """The reason when the gateway fell back to first-stage order, else None."""
    info = resp.get("ext", {}).get("rerank")
    if info and info.get("status") != "ok":
        return info.get("reason") or "unknown"
    return None


def run_queries_via_gateway(url: str, index: str, queries: Sequence[Query], reranker: str,
                            window: int = 100, depth: int = FIRST_STAGE_DEPTH,
                            show_progress: bool = True) -> tuple[list[QueryResult], str | None]:
    """Like :func:`lexrerank.evaluation.run_queries`, through the gateway.

    Returns the results and the model version the workers reported. A query that falls back
    is an error: the numbers would not be the reranker's.
    """
    results, version = [], None
    rerank = reranker != "none"
    with httpx.Client(timeout=EVAL_TIMEOUT_MS / 1000 + 30) as http:
        for query in tqdm(queries, desc="queries", unit="q", file=sys.stderr,
                          disable=not show_progress):
            body = search_body(query.text, max(depth, window), reranker, window,
                               EVAL_TIMEOUT_MS if rerank else None, explain=False,
                               source=False)
            start = time.perf_counter()
            resp = gateway_search(http, url, index, body, rerank)
            elapsed = (time.perf_counter() - start) * 1000
            hits = resp["hits"]["hits"]
            ranking = [(h["_id"], float(h["_score"])) for h in hits]
            first = ranking
            if rerank:
                reason = fallback_reason(resp)
                if reason:
                    raise LexrerankError(f"query {query.qid}: the gateway fell back to BM25 "
                                         f"order ({reason})")
                version = resp["ext"]["rerank"].get("model_version") or version
                head = sorted((h for h in hits if "_rerank" in h),
                              key=lambda h: h["_rerank"]["first_stage_rank"])
                first = [(h["_id"], float(h["_rerank"]["first_stage_score"])) for h in head]
                first += [(h["_id"], float(h["_score"])) for h in hits if "_rerank" not in h]
            results.append(QueryResult(query.qid, ranking, first, elapsed))
    return results, version
