"""``POST /_lexrerank/rerank``: the rerank service the OpenSearch plugin calls.

The contract (request, answer, version, errors) is :mod:`worker.service_protocol`; the prose
is docs/search-pipeline.md. The caller has already run the first stage: the request carries
the window's hits. The endpoint runs the same worker call as a reranked ``_search``
(:func:`gateway.rerank_pipeline.rerank_window`), the same merge
(:func:`gateway.rerank_pipeline.merge_outcome`, i.e. :func:`gateway.merge.merge_reranked`)
and the same report (:func:`gateway.rerank_pipeline.report`: metrics, request log), so a
window reranked here gets the order, fused ``_score``, ``_rerank`` blocks and ``ext.rerank``
block a gateway search would.

The deadline is the request's ``timeout_ms`` (default ``LEXRERANK_RERANK_TIMEOUT_MS``),
counted from arrival; a rerank that fails or misses it is a 200 with ``status:
"fallback"``, the reason code and the reason. A body the protocol or the gateway's limits
refuse is a 400 in OpenSearch's error shape; the API key (:mod:`gateway.auth`) applies as to
any request.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.limits import BodyError, Limits, parse_search_body
from gateway.proxy import opensearch_error
from gateway.request_body import is_unicode
from gateway.rerank_pipeline import (
    close_pending,
    json_response,
    merge_outcome,
    report,
    rerank_window,
)
from gateway.rerank_request import RerankOptions
from lexrerank.config import Settings
from worker.service_protocol import ServiceRequest, ServiceRequestError, service_answer


def plan_rerank(request: ServiceRequest, settings: Settings, limits: Limits) -> RerankOptions:
    """The options of a checked request under the gateway's limits (the same limits a
    reranked ``_search`` meets); :class:`ServiceRequestError` naming the first one broken."""
    model = request.model or settings.default_model
    if model not in limits.models:
        raise ServiceRequestError(f"unknown model {model[:100]!r}: use one of "
                                  f"{sorted(limits.models)} (more via LEXRERANK_MODELS)")
    if not is_unicode(request.query_text):
        raise ServiceRequestError("query_text has a lone UTF-16 surrogate: it is not Unicode "
                                  "text; send valid UTF-8")
    if len(request.query_text) > limits.max_query_chars:
        raise ServiceRequestError(f"query_text has {len(request.query_text)} characters, more "
                                  f"than {limits.max_query_chars} (limit: "
                                  "LEXRERANK_MAX_QUERY_CHARS)")
    window = request.window_size or max(len(request.hits), 1)
    if window > limits.max_window:
        raise ServiceRequestError(f"window_size {window} is more than {limits.max_window} "
                                  "(limit: LEXRERANK_MAX_WINDOW)")
    timeout_ms = request.timeout_ms or settings.rerank_timeout_ms
    if timeout_ms > limits.max_timeout_ms:
        raise ServiceRequestError(f"timeout_ms {timeout_ms:g} is more than "
                                  f"{limits.max_timeout_ms} (limit: LEXRERANK_MAX_TIMEOUT_MS)")
    # Pages are the caller's: the whole window comes back, reranked.
    return RerankOptions(query_text=request.query_text, window=window, model=model,
                         timeout_ms=round(timeout_ms), explain=request.explain, from_=0,
                         size=len(request.hits))


async def rerank_endpoint(request: Request, settings: Settings, limits: Limits,
                          started: float) -> Response:
    """Answer one ``POST /_lexrerank/rerank`` (``started``: ``time.perf_counter()`` on
    arrival)."""
    raw = await request.body()
    try:
        body = parse_search_body(raw, limits.max_json_depth,
                                 request.headers.get("content-encoding"), limits.max_body_bytes)
        checked = ServiceRequest.from_json(body)
        opts = plan_rerank(checked, settings, limits)
    except BodyError as exc:
        return exc.response()
    except ServiceRequestError as exc:
        return opensearch_error(400, "illegal_argument_exception", str(exc))
    timeout_ms = checked.timeout_ms or settings.rerank_timeout_ms
    # The window as the first stage answered it: the merge reads and rewrites these hits.
    response: dict[str, Any] = {"hits": {"hits": [
        {"_id": h.doc_id, "_score": h.score, **({"_index": h.index} if h.index else {})}
        for h in checked.hits]}}
    pending = request.app.state.rerank_client.begin_rerank(
        opts.query_text or "", opts.model, opts.explain,
        timeout_ms / 1000 - (time.perf_counter() - started))
    try:
        t_rerank_start = time.perf_counter()
        outcome = await rerank_window(response, checked.index, opts, pending)
        t_rerank = time.perf_counter()
        merged = merge_outcome(response, outcome, opts)
        t_merge = time.perf_counter()
    finally:
        await close_pending(pending)
    took = {"rerank": (t_rerank - t_rerank_start) * 1000, "merge": (t_merge - t_rerank) * 1000,
            "total": (time.perf_counter() - started) * 1000}
    info = report(checked.index, opts, outcome, took)
    hits = merged["hits"]["hits"] if outcome.status == "ok" else []
    for hit in hits:
        hit.pop("_index", None)  # the caller's hit keeps its own
    return json_response(service_answer(outcome.status, hits, info))
