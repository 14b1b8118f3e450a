"""The gateway: an OpenSearch-compatible HTTP service (see DESIGN.md, "HTTP (gateway)").

Routes:

- ``GET|POST /{index}/_search`` with the ``lexrerank`` pipeline (``?search_pipeline=``,
  ``"search_pipeline"`` in the body, or the index listed in
  ``LEXRERANK_DEFAULT_PIPELINE_INDEXES``): :mod:`gateway.rerank_pipeline`;
- ``POST /_lexrerank/rerank``: the rerank service the OpenSearch search-pipeline plugin
  calls (:mod:`gateway.rerank_endpoint`, contract :mod:`worker.service_protocol`);
- ``GET /_lexrerank/health``: the gateway's own readiness (``GET /`` is OpenSearch's);
- ``GET /_lexrerank/ui/`` and ``/_lexrerank/ui/ops``: the search and ops pages
  (:mod:`gateway.pages`);
- ``/_lexrerank/healthz``, ``/_lexrerank/readyz``, ``/_lexrerank/metrics``,
  ``/_lexrerank/ops``: :mod:`gateway.ops`; any other ``/_lexrerank/...`` is a 404 (OpenSearch
  index names cannot start with ``_``, so the namespace hides no index);
- a method outside :data:`ALL_METHODS` (``PROPFIND``, ``TRACE``, ...): 405;
- everything else (``/metrics`` and ``/healthz`` included: index names like any other):
  passed through to OpenSearch unchanged (:mod:`gateway.proxy`), plain requests by
  :class:`PlainProxyFastPath` without the router.

The HTTP edge below the application (header size, read times, connections, parse errors)
is :mod:`gateway.http_protocol`.

Run it with ``lexrerank serve`` (uvicorn; ``create_app`` is the factory).
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import ApiKeyMiddleware
from gateway.http_metrics import MetricsMiddleware
from gateway.limits import (
    BodyError,
    BodyLimitMiddleware,
    Limits,
    parse_search_body,
    too_large,
)
from gateway.opensearch_upstream import OpenSearchUpstream
from gateway.ops import add_ops_routes
from gateway.pages import add_pages
from gateway.proxy import client_gone, opensearch_error, proxy, proxy_asgi, read_body
from gateway.request_log import RequestIdMiddleware, annotate, setup_logging
from gateway.rerank_client import RerankClient
from gateway.rerank_endpoint import rerank_endpoint
from gateway.rerank_pipeline import run_pipeline
from gateway.rerank_request import (
    PlannedSearch,
    RequestError,
    disables_pipelines,
    incompatible_reason,
    names_pipeline,
    plan_search,
)
from lexrerank.config import Settings, get_settings, safe_url
from worker.service_protocol import SERVICE_PATH

# The methods OpenSearch serves (TRACE and CONNECT it refuses; WebDAV's it drops unanswered).
ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]
_METHODS = frozenset(ALL_METHODS)
_ALLOW = ", ".join(ALL_METHODS)

# The paths the gateway answers itself; every other path belongs to OpenSearch.
GATEWAY_PREFIX = "/_lexrerank/"
MAX_BODY_ENV = "LEXRERANK_MAX_BODY_BYTES"


def _spelled(word: str) -> bytes:
    """A regex for ``word`` as a JSON string may spell it: each character as itself or as a
    ``\\uXXXX`` escape (hex digits in either case)."""
    parts = []
    for char in word:
        code = "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d
                       for d in f"{ord(char):04x}")
        parts.append(f"(?:{re.escape(char)}|\\\\u{code})")
    return "".join(parts).encode()


# Could this body name a search pipeline? (Run only on bodies too large to parse.)
_NAMES_A_PIPELINE = re.compile(_spelled("search_pipeline"))


def create_app(settings: Settings | None = None, *, upstream: OpenSearchUpstream | None = None,
               rerank_client: RerankClient | None = None) -> ASGIApp:
    """The gateway application for ``settings`` (default: the environment now).

    ``upstream`` (the OpenSearch pool) and ``rerank_client`` replace the real ones in unit
    tests. The answer is the middleware chain around :class:`PlainProxyFastPath`, which sends
    plain OpenSearch requests straight through and everything else to the FastAPI routes.
    """
    settings = settings or get_settings()
    setup_logging(settings.log_level)
    opensearch = upstream or OpenSearchUpstream(settings)
    limits = Limits.from_settings(settings)
    app = FastAPI(title="lexrerank gateway", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=_lifespan(settings, opensearch, rerank_client))
    app.state.upstream = opensearch
    _add_health_route(app, settings)
    _add_search_route(app, settings, limits)
    _add_rerank_route(app, settings, limits)
    add_pages(app)  # before the catch-all proxy: /_lexrerank/ui/ is ours
    add_ops_routes(app, settings)  # /_lexrerank/{metrics,healthz,readyz,ops}
    _add_catch_all_routes(app, settings)
    return _with_middleware(PlainProxyFastPath(app, opensearch, settings, limits), settings,
                            limits)


def _lifespan(settings: Settings, opensearch: OpenSearchUpstream,
              rerank_client: RerankClient | None
              ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Opens the rerank client (``app.state.rerank_client``) at start-up; closes it and the
    OpenSearch pool at shutdown."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.rerank_client = rerank_client or RerankClient(settings)
        try:
            yield
        finally:
            await opensearch.aclose()
            await app.state.rerank_client.aclose()

    return lifespan


def _add_health_route(app: FastAPI, settings: Settings) -> None:
    @app.get("/_lexrerank/health")
    async def health(request: Request) -> JSONResponse:
        """200 when OpenSearch answers (Redis is reported; without it searches fall back)."""
        opensearch = await request.app.state.upstream.ping()
        redis_up = await request.app.state.rerank_client.ping()
        body = {"status": "ok" if opensearch else "unavailable", "opensearch": opensearch,
                "redis": redis_up, "opensearch_url": safe_url(settings.opensearch_url)}
        return JSONResponse(body, status_code=200 if opensearch else 503)


def _add_search_route(app: FastAPI, settings: Settings, limits: Limits) -> None:
    @app.api_route("/{index}/_search", methods=["GET", "POST"])
    async def search(index: str, request: Request) -> Response:
        return await _search(index, request, settings, limits, time.perf_counter())


def _add_rerank_route(app: FastAPI, settings: Settings, limits: Limits) -> None:
    @app.post(SERVICE_PATH)
    async def rerank(request: Request) -> Response:
        return await rerank_endpoint(request, settings, limits, time.perf_counter())


async def _search(index: str, request: Request, settings: Settings, limits: Limits,
                  started: float) -> Response:
    """A ``_search``: reranked when it names the pipeline (or its index has it by default),
    else passed through; a request the pipeline cannot take is a 400 when it named the
    pipeline, a plain search when only the index default did."""
    upstream = request.app.state.upstream
    raw = await request.body()
    params = list(request.query_params.multi_items())
    try:
        body = parse_search_body(raw, limits.max_json_depth,
                                 request.headers.get("content-encoding"), limits.max_body_bytes)
    except BodyError as exc:
        parsed = exc.parsed if isinstance(exc.parsed, dict) else {}
        if names_pipeline(params, parsed):
            return exc.response()
        return await proxy(request, upstream, settings, body=raw)  # OpenSearch says why
    if not isinstance(body, dict):
        body = {}
    explicit = names_pipeline(params, body)
    by_default = (not explicit and index in settings.default_pipeline_indexes
                  and not disables_pipelines(params, body))
    if not (explicit or by_default):
        return await proxy(request, upstream, settings, body=raw)
    plan, problem = _plan(params, body, settings, limits)
    if plan is None:
        if explicit:
            return opensearch_error(400, "illegal_argument_exception", str(problem))
        # An index default must not break requests it cannot rerank: plain search.
        annotate(rerank="skipped", reason=problem)
        return await proxy(request, upstream, settings, body=raw)
    return await run_pipeline(request, index, plan, upstream, request.app.state.rerank_client,
                              settings, started)


def _plan(params: list[tuple[str, str]], body: dict, settings: Settings, limits: Limits
          ) -> tuple[PlannedSearch | None, str | None]:
    """The planned reranked search, or None and why it cannot be reranked."""
    problem = incompatible_reason(params, body)
    if problem is not None:
        return None, problem
    try:
        plan = plan_search(params, body, settings.default_model, settings.rerank_timeout_ms,
                           limits)
    except RequestError as exc:
        return None, str(exc)
    if plan.rerank.query_text is None:
        return None, ("the lexrerank pipeline needs the query text: set "
                      "ext.rerank.query_context.query_text (or query_text_path)")
    return plan, None


def _add_catch_all_routes(app: FastAPI, settings: Settings) -> None:
    @app.api_route("/_lexrerank/{rest:path}", methods=ALL_METHODS)
    async def unknown_gateway_path(rest: str) -> Response:
        # The gateway's own namespace: a typo here is ours to answer, never OpenSearch's.
        return opensearch_error(404, "resource_not_found_exception",
                                f"the gateway has no /_lexrerank/{rest}; see docs/ops.md")

    @app.api_route("/{path:path}", methods=ALL_METHODS)
    async def passthrough(path: str, request: Request) -> Response:
        return await proxy(request, request.app.state.upstream, settings)


def _with_middleware(served: ASGIApp, settings: Settings, limits: Limits) -> ASGIApp:
    """Innermost first: body limits, API keys, request ids (every answer carries one), and
    metrics outermost (counts every answer, 401s included). They wrap the fast path too."""
    served = BodyLimitMiddleware(served, limits=limits)
    served = ApiKeyMiddleware(served, keys=settings.api_keys,
                              exempt_paths=settings.auth_exempt_paths)
    served = RequestIdMiddleware(served)
    return MetricsMiddleware(served)


class PlainProxyFastPath:
    """ASGI: OpenSearch requests that need nothing from the gateway skip the router.

    A ``_search`` may name the pipeline only in its query string or its body, so one that
    mentions ``search_pipeline`` in neither (and has no JSON escapes that could spell it, and
    no pipeline by default for its index) is plain; so is any other OpenSearch path. Plain
    requests go straight to :func:`gateway.proxy.proxy_asgi`, everything else to ``app``
    with the body it already read. Saves the router, the Request object and a JSON parse on
    the path every non-reranked request takes.

    ``LEXRERANK_MAX_BODY_BYTES`` bounds only the ``_search`` bodies the gateway parses: those
    of a search that names the pipeline in its query string, of an index with the pipeline by
    default (unless ``search_pipeline=_none``), and those that could name it themselves. A
    larger plain search goes to OpenSearch like any body (up to ``LEXRERANK_MAX_PROXY_BODY_
    BYTES``, :class:`gateway.limits.BodyLimitMiddleware`). Methods outside
    :data:`ALL_METHODS` get a 405; a client gone before its body is complete gets nothing
    forwarded and no answer.
    """

    def __init__(self, app: ASGIApp, upstream: OpenSearchUpstream, settings: Settings,
                 limits: Limits | None = None) -> None:
        self.app, self.upstream, self.settings = app, upstream, settings
        self.max_body_bytes = (limits or Limits.from_settings(settings)).max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in _METHODS:
            response = opensearch_error(
                405, "method_not_allowed_exception",
                f"the gateway and OpenSearch do not serve method [{scope['method']}]; "
                f"allowed: [{_ALLOW}]")
            response.headers["Allow"] = _ALLOW
            await response(scope, receive, send)
            return
        try:
            await self._route(scope, receive, send)
        except ClientDisconnect:
            await client_gone(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"].startswith(GATEWAY_PREFIX):
            await self.app(scope, receive, send)
            return
        index = _search_index(scope)
        if index is None:
            await proxy_asgi(scope, receive, send, self.upstream, self.settings)
            return
        limit = self.max_body_bytes
        parsed = self._parses(scope, index)
        body = await _read_body_upto(receive, limit if parsed else None)
        if len(body) > limit:
            if parsed or _NAMES_A_PIPELINE.search(body):
                await too_large(limit, MAX_BODY_ENV)(scope, receive, send)
                return
            await proxy_asgi(scope, receive, send, self.upstream, self.settings, body)
            return
        if (parsed or b"search_pipeline" in body or b"\\u" in body
                or index in self.settings.default_pipeline_indexes
                # A compressed body may name the pipeline: only the parse can tell.
                or any(k == b"content-encoding" for k, _ in scope["headers"])):
            await self.app(scope, _replay(body, receive), send)
            return
        await proxy_asgi(scope, receive, send, self.upstream, self.settings, body)

    def _parses(self, scope: Scope, index: str) -> bool:
        """True when the gateway parses this search's body whatever it says: the query
        string names the pipeline, or the index has it by default and the query string does
        not turn it off."""
        query = scope.get("query_string", b"")
        if b"search_pipeline" not in query:
            return index in self.settings.default_pipeline_indexes
        params = urllib.parse.parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        pipelines = {v for k, v in params if k == "search_pipeline"}
        if "_none" in pipelines:
            return False
        return "lexrerank" in pipelines or index in self.settings.default_pipeline_indexes


async def _read_body_upto(receive: Receive, limit: int | None) -> bytes:
    """The whole request body, or (with ``limit``) its first bytes once they pass ``limit``
    (the caller answers 413 and the rest is never buffered). Raises ClientDisconnect like
    :func:`gateway.proxy.read_body`."""
    if limit is None:
        return await read_body(receive)
    chunks, seen = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        chunks.append(chunk)
        seen += len(chunk)
        if seen > limit or not message.get("more_body", False):
            return b"".join(chunks)


def _search_index(scope: Scope) -> str | None:
    """The index of a ``GET|POST /{index}/_search`` request (None for any other request)."""
    if scope["method"] not in ("GET", "POST"):
        return None
    parts = scope["path"].split("/")
    if len(parts) != 3 or parts[2] != "_search" or not parts[1]:
        return None
    return parts[1]


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already read ``body`` over once, then the real one's."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # only the disconnect is left

    return replay
