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
  ``ext.rerank.status = "fallback"``, the reason code (:class:`worker.protocol.ReasonCode`,
  also the fallback metric's label) and the human-readable reason, HTTP 200;
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
from dataclasses import dataclass
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
from gateway.opensearch_upstream import (
    UPSTREAM_ERRORS,
    OpenSearchUpstream,
    UpstreamAnswer,
    failed_to_connect,
)
from gateway.prometheus_metrics import record_rerank
from gateway.proxy import opensearch_error, request_headers, upstream_failure
from gateway.request_log import annotate
from gateway.rerank_client import PendingRerank, RerankClient
from gateway.rerank_request import PlannedSearch, RerankOptions
from lexrerank.config import Settings
from worker.protocol import ReasonCode, RerankAnswer, RerankFailed

log = logging.getLogger("lexrerank.gateway.pipeline")
JSON_TYPE = "application/json; charset=UTF-8"
# Longest an answer waits for its rerank to be called off (Redis slow or gone).
CLOSE_WAIT_S = 0.05
_CLOSING: set[asyncio.Future[None]] = set()


def json_response(payload: dict[str, Any], status: int = 200) -> Response:
    """Compact JSON like OpenSearch's (no ``JSONResponse`` re-validation of floats)."""
    return Response(fast_json.dumps(payload), status_code=status, media_type=JSON_TYPE)


async def run_pipeline(request: Request, index: str, plan: PlannedSearch,
                       upstream: OpenSearchUpstream, rerank_client: RerankClient,
                       settings: Settings, started: float) -> Response:
    """Answer one reranked ``_search`` (``started``: ``time.perf_counter()`` on arrival)."""
    opts = plan.rerank
    # Published before the first stage: the worker encodes the query meanwhile.
    pending = rerank_client.begin_rerank(opts.query_text or "", opts.model, opts.explain,
                                   opts.timeout_ms / 1000 - (time.perf_counter() - started))
    try:
        return await _first_stage_then_rerank(request, index, plan, upstream, pending,
                                              settings, started)
    finally:
        await close_pending(pending)


async def close_pending(pending: PendingRerank) -> None:
    """Call ``pending`` off, waiting at most :data:`CLOSE_WAIT_S`; past it the close goes on
    in the background and only the answer stops waiting for it (the set holds the task
    until it is done)."""
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


@dataclass
class Outcome:
    """How the rerank side of one search went: ``ok``, or a fallback with code and reason."""

    status: str = "ok"
    code: ReasonCode | None = None
    reason: str | None = None
    answer: RerankAnswer | None = None

    def fall_back(self, code: ReasonCode, reason: str) -> None:
        self.status, self.code, self.reason, self.answer = "fallback", code, reason, None


async def _first_stage_then_rerank(request: Request, index: str, plan: PlannedSearch,
                                   upstream: OpenSearchUpstream, pending: PendingRerank,
                                   settings: Settings, started: float) -> Response:
    opts = plan.rerank
    first = await _first_stage(request, index, plan, upstream, settings, started)
    if isinstance(first, Response):
        return first
    t_first = time.perf_counter()
    response = fast_json.loads(first.body)
    t_rerank_start = time.perf_counter()
    outcome = await rerank_window(response, index, opts, pending)
    t_rerank = time.perf_counter()
    response = merge_outcome(response, outcome, opts)
    t_merge = time.perf_counter()
    took = {"first_stage": (t_first - started) * 1000,
            "rerank": (t_rerank - t_rerank_start) * 1000,
            "merge": (t_merge - t_rerank) * 1000,
            "total": (time.perf_counter() - started) * 1000}
    return json_response(with_ext(response, report(index, opts, outcome, took)))


async def _first_stage(request: Request, index: str, plan: PlannedSearch,
                       upstream: OpenSearchUpstream, settings: Settings, started: float
                       ) -> UpstreamAnswer | Response:
    """OpenSearch's 200 answer to the first stage, or the response to send instead (a 504
    past the deadline, a 503 when unreachable, OpenSearch's own error as it is)."""
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
    if first.status != 200:
        # OpenSearch's own error (bad query, missing index): returned as it is.
        return Response(first.body, status_code=first.status,
                        media_type=first.header(b"content-type", JSON_TYPE.encode()).decode())
    return first


async def rerank_window(response: dict[str, Any], index: str, opts: RerankOptions,
                        pending: PendingRerank) -> Outcome:
    """Hand the window's candidates to the waiting worker and await its answer (shared by
    the pipeline and :mod:`gateway.rerank_endpoint`: one worker call for both)."""
    outcome = Outcome()
    try:
        candidates = window_candidates(response, opts.window)
        if candidates:
            # The concrete index of the hits, not the alias: its vectors score them.
            outcome.answer = await pending.finish(hits_index(response, opts.window, index),
                                                  candidates)
    except RerankFailed as exc:
        outcome.fall_back(exc.code, str(exc))
    except MergeError as exc:
        outcome.fall_back(exc.code, str(exc))
    except Exception as exc:  # noqa: BLE001 - a rerank-side bug must not become a 5xx
        log.exception("rerank call failed")
        outcome.fall_back(ReasonCode.GATEWAY_ERROR,
                          f"gateway error: {type(exc).__name__}: {exc}")
    return outcome


def merge_outcome(response: dict[str, Any], outcome: Outcome, opts: RerankOptions
                  ) -> dict[str, Any]:
    """The page to answer: reranked when there is an answer that fits, else first-stage."""
    if outcome.answer is not None:
        try:
            return merge_reranked(response, outcome.answer, opts.window, opts.from_, opts.size,
                                  opts.explain)
        except Exception as exc:  # noqa: BLE001 - MergeError or a malformed answer
            outcome.fall_back(ReasonCode.BAD_ANSWER, f"bad worker answer: {exc!r}")
    return merge_fallback(response, opts.from_, opts.size)


def report(index: str, opts: RerankOptions, outcome: Outcome, took: dict[str, float]
           ) -> dict[str, Any]:
    """The ``ext.rerank`` block, recorded in the metrics and the request log (``took``: the
    stages timed, at least ``total``; :mod:`gateway.rerank_endpoint` has no first stage)."""
    answer: dict[str, Any] = dict(outcome.answer or {})
    info = rerank_info(outcome.status, outcome.code, outcome.reason,
                       answer.get("model", opts.model), answer.get("model_version"),
                       opts.window, len(answer.get("hits", [])), took,
                       answer.get("timing_ms", {}).get("rerank"),
                       bool(answer.get("query_truncated")))
    record_rerank(outcome.status, outcome.code, took, opts.window, info["model"],
                  info["model_version"])
    annotate(index=index, rerank=outcome.status, reason=outcome.reason,
             reason_code=info["reason_code"], window=opts.window,
             rerank_ms=round(took["rerank"], 2))
    if outcome.status == "fallback":
        log.warning("rerank fallback: %s", outcome.reason,
                    extra={"fields": {"index": index, "reason_code": info["reason_code"]}})
    return info
