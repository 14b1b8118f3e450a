"""The ``lexrerank`` search pipeline: first stage in OpenSearch, rerank on a worker, merge.

The rerank task is published when the request arrives, so a worker encodes the query while
OpenSearch runs the first stage; the candidates follow when OpenSearch answers
(:meth:`gateway.rerank_client.RerankClient.begin_rerank`). ``took_ms.rerank`` is the wait for
the worker after the first stage.

The deadline (``ext.rerank.timeout_ms``, default ``LEXRERANK_RERANK_TIMEOUT_MS``) counts
from the request's arrival and covers the first stage and the wait for the worker; the
answer leaves within it plus the merge, whatever OpenSearch, Redis or the workers do:

- a first stage OpenSearch has not answered by the deadline is abandoned (its connection
  closed) and the search is a 504 ``gateway_timeout_exception`` in OpenSearch's shape;
- whatever goes wrong on the rerank side (timeout, no worker, worker error, Redis down, an
  answer that does not fit), the response is the first-stage order with
  ``ext.rerank.status = "fallback"`` and the reason, HTTP 200;
- calling the rerank off afterwards (:meth:`PendingRerank.close`) waits at most
  :data:`CLOSE_WAIT_S`, then goes on in the background.

Errors of OpenSearch itself (a bad query, a missing index) come back as OpenSearch returned
them; OpenSearch unreachable is a 503. The first stage goes upstream as JSON the gateway
wrote, so the client's ``content-encoding`` (a gzip body the gateway decoded) is not
forwarded with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from gateway import fast_json
from gateway.hit_index import hits_index
from gateway.merge import (
    MergeError,
    merge_fallback,
    merge_reranked,
    rerank_info,
    window_candidates,
    with_ext,
)
from gateway.metrics import record_rerank
from gateway.opensearch_upstream import UPSTREAM_ERRORS, OpenSearchUpstream, failed_to_connect
from gateway.proxy import opensearch_error, request_headers, upstream_failure
from gateway.request_log import annotate
from gateway.rerank_client import PendingRerank, RerankClient, RerankUnavailable
from gateway.rerank_request import PlannedSearch
from lexrerank.config import Settings

log = logging.getLogger("lexrerank.gateway.pipeline")
JSON_TYPE = "application/json; charset=UTF-8"
# Longest an answer waits for its rerank to be called off (Redis slow or gone).
CLOSE_WAIT_S = 0.05
_CLOSING: set[asyncio.Future[None]] = set()


def json_response(payload: dict[str, Any], status: int = 200) -> Response:
    """Compact JSON like OpenSearch's (no ``JSONResponse`` re-validation of floats)."""
    return Response(fast_json.dumps(payload), status_code=status, media_type=JSON_TYPE)


async def run_pipeline(request: Request, index: str, plan: PlannedSearch,
                       upstream: OpenSearchUpstream, workers: RerankClient,
                       settings: Settings, started: float) -> Response:
    """Answer one reranked ``_search`` (``started``: ``time.perf_counter()`` on arrival)."""
    opts = plan.rerank
    # Published before the first stage: the worker encodes the query meanwhile.
    pending = workers.begin_rerank(opts.query_text or "", opts.model, opts.explain,
                                   opts.timeout_ms / 1000 - (time.perf_counter() - started))
    try:
        return await _first_stage_then_rerank(request, index, plan, upstream, pending,
                                              settings, started)
    finally:
        # Past CLOSE_WAIT_S the close goes on in the background; only the answer stops
        # waiting for it (the set holds the task until it is done).
        closing = asyncio.ensure_future(pending.close())
        _CLOSING.add(closing)
        closing.add_done_callback(_CLOSING.discard)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(closing), CLOSE_WAIT_S)


def first_stage_timeout(timeout_ms: int) -> Response:
    """The 504 for a first stage OpenSearch did not answer within the search's deadline."""
    return opensearch_error(504, "gateway_timeout_exception",
                            f"OpenSearch did not answer the first stage within the search's "
                            f"deadline (ext.rerank.timeout_ms={timeout_ms})")


async def _first_stage_then_rerank(request: Request, index: str, plan: PlannedSearch,
                                   upstream: OpenSearchUpstream, pending: PendingRerank,
                                   settings: Settings, started: float) -> Response:
    opts = plan.rerank
    headers = [(k, v) for k, v in request_headers(request.scope)
               if k.lower() not in ("content-type", "accept-encoding", "content-encoding")]
    headers.append(("content-type", "application/json"))
    # The client's own encoding of the path (index patterns, aliases) goes upstream.
    path = (request.scope.get("raw_path") or f"/{index}/_search".encode()).decode("latin-1")
    target = f"{path}?{urlencode(plan.params)}" if plan.params else path
    deadline = started + opts.timeout_ms / 1000
    try:
        first = await upstream.request("POST", target, headers, fast_json.dumps(plan.body),
                                       timeout_s=max(deadline - time.perf_counter(), 0.001))
    except UPSTREAM_ERRORS as exc:
        # Only the deadline bounds the exchange this tightly (the silence limit is minutes):
        # a timeout is the deadline's unless a connect failed early on its own 2 s limit.
        if isinstance(exc, asyncio.TimeoutError) and (
                not failed_to_connect(exc) or time.perf_counter() >= deadline - 0.01):
            return first_stage_timeout(opts.timeout_ms)
        return upstream_failure(exc, settings)
    t_first = time.perf_counter()
    if first.status != 200:
        # OpenSearch's own error (bad query, missing index): returned as it is.
        return Response(first.body, status_code=first.status,
                        media_type=first.header(b"content-type", JSON_TYPE.encode()).decode())
    response = fast_json.loads(first.body)
    status, reason, result = "ok", None, None
    t_rerank_start = time.perf_counter()
    try:
        candidates = window_candidates(response, opts.window)
        if candidates:
            # The concrete index of the hits, not the alias: its vectors score them.
            result = await pending.finish(hits_index(response, opts.window, index),
                                          candidates)
    except (RerankUnavailable, MergeError) as exc:
        status, reason = "fallback", str(exc)
    except Exception as exc:  # noqa: BLE001 - a rerank-side bug must not become a 5xx
        log.exception("rerank call failed")
        status, reason = "fallback", f"gateway error: {type(exc).__name__}: {exc}"
    t_rerank = time.perf_counter()
    if result is not None:
        try:
            response = merge_reranked(response, result, opts.window, opts.from_, opts.size,
                                      opts.explain)
        except Exception as exc:  # noqa: BLE001 - MergeError or a malformed answer
            status, reason, result = "fallback", f"bad worker answer: {exc!r}", None
    if result is None:
        response = merge_fallback(response, opts.from_, opts.size)
    t_merge = time.perf_counter()
    reranked = len(result.get("hits", [])) if result is not None else 0
    took = {"first_stage": (t_first - started) * 1000,
            "rerank": (t_rerank - t_rerank_start) * 1000,
            "merge": (t_merge - t_rerank) * 1000,
            "total": (time.perf_counter() - started) * 1000}
    worker_ms = (result or {}).get("timing_ms", {}).get("rerank")
    info = rerank_info(status, reason, (result or {}).get("model", opts.model),
                       (result or {}).get("model_version"), opts.window, reranked, took,
                       worker_ms, bool((result or {}).get("query_truncated")))
    record_rerank(status, reason, took, opts.window, info["model"], info["model_version"])
    annotate(index=index, rerank=status, reason=reason, window=opts.window,
             rerank_ms=round(took["rerank"], 2))
    if status == "fallback":
        log.warning("rerank fallback: %s", reason, extra={"fields": {"index": index}})
    return json_response(with_ext(response, info))
