"""The gateway: an OpenSearch-compatible HTTP service (see DESIGN.md, "HTTP (gateway)").

Routes:

- ``GET|POST /{index}/_search`` with the ``lexrerank`` pipeline (``?search_pipeline=``,
  ``"search_pipeline"`` in the body, or the index listed in
  ``LEXRERANK_DEFAULT_PIPELINE_INDEXES``): :mod:`gateway.rerank_pipeline`;
- ``GET /_lexrerank/health``: the gateway's own readiness (``GET /`` is OpenSearch's);
- everything else: passed through to OpenSearch unchanged (:mod:`gateway.proxy`).

Run it with ``lexrerank serve`` (uvicorn; ``create_app`` is the factory).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.proxy import opensearch_error, proxy, upstream_client
from gateway.request_log import RequestIdMiddleware, annotate, setup_logging
from gateway.rerank_client import RerankClient
from gateway.rerank_pipeline import run_pipeline
from gateway.rerank_request import (
    RequestError,
    disables_pipelines,
    incompatible_reason,
    names_pipeline,
    plan_search,
)
from lexrerank.config import Settings, get_settings

ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]


def create_app(settings: Settings | None = None, *, upstream: httpx.AsyncClient | None = None,
               workers: RerankClient | None = None) -> FastAPI:
    """The gateway application for ``settings`` (default: the environment now).

    ``upstream`` (the OpenSearch client) and ``workers`` replace the real ones in unit tests.
    """
    settings = settings or get_settings()
    setup_logging(os.environ.get("LEXRERANK_LOG_LEVEL", "info"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.upstream = upstream or upstream_client(settings)
        app.state.workers = workers or RerankClient(settings)
        try:
            yield
        finally:
            await app.state.upstream.aclose()
            await app.state.workers.aclose()

    app = FastAPI(title="lexrerank gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(RequestIdMiddleware)

    @app.get("/_lexrerank/health")
    async def health(request: Request) -> JSONResponse:
        """200 when OpenSearch answers (Redis is reported; without it searches fall back)."""
        opensearch = await _opensearch_up(request, settings)
        redis_up = await request.app.state.workers.ping()
        body = {"status": "ok" if opensearch else "unavailable", "opensearch": opensearch,
                "redis": redis_up, "opensearch_url": settings.opensearch_url}
        return JSONResponse(body, status_code=200 if opensearch else 503)

    @app.api_route("/{index}/_search", methods=["GET", "POST"])
    async def search(index: str, request: Request) -> Response:
        started = time.perf_counter()
        upstream = request.app.state.upstream
        raw = await request.body()
        params = list(request.query_params.multi_items())
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if names_pipeline(params, {}):
                return opensearch_error(400, "parse_exception", f"body is not JSON: {exc}")
            return await proxy(request, upstream, settings, body=raw)  # OpenSearch says why
        if not isinstance(body, dict):
            body = {}
        explicit = names_pipeline(params, body)
        by_default = (not explicit and index in settings.default_pipeline_indexes
                      and not disables_pipelines(params, body))
        if not (explicit or by_default):
            return await proxy(request, upstream, settings, body=raw)
        plan, problem = None, incompatible_reason(params, body)
        if problem is None:
            try:
                plan = plan_search(params, body, settings.default_model,
                                   settings.rerank_timeout_ms)
            except RequestError as exc:
                problem = str(exc)
        if plan is not None and plan.rerank.query_text is None:
            plan, problem = None, ("the lexrerank pipeline needs the query text: set "
                                   "ext.rerank.query_context.query_text (or query_text_path)")
        if plan is None:
            if explicit:
                return opensearch_error(400, "illegal_argument_exception", str(problem))
            # An index default must not break requests it cannot rerank: plain search.
            annotate(rerank="skipped", reason=problem)
            return await proxy(request, upstream, settings, body=raw)
        return await run_pipeline(request, index, plan, upstream, request.app.state.workers,
                                  settings, started)

    @app.api_route("/{path:path}", methods=ALL_METHODS)
    async def passthrough(path: str, request: Request) -> Response:
        return await proxy(request, request.app.state.upstream, settings)

    return app


async def _opensearch_up(request: Request, settings: Settings) -> bool:
    auth = None
    if settings.opensearch_user:
        auth = (settings.opensearch_user, settings.opensearch_password or "")
    try:
        resp = await request.app.state.upstream.get("/", auth=auth, timeout=2.0)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200
