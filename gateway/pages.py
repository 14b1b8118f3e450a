"""The gateway's web pages: a search page and an ops page (no build step, no CDN).

Routes (all under ``/_lexrerank/``, which the gateway never proxies):

- ``GET /_lexrerank/ui/``: the search page (``static/search.html``);
- ``GET /_lexrerank/ui/ops``: the ops page (``static/ops.html``);
- ``GET /_lexrerank/ui/static/{file}``: their CSS and plain JavaScript.

The pages are static files; they talk to the gateway from the browser: ``_cat/indices`` and
``_cat/aliases`` (proxied), ``/{index}/_search`` (reranked with ``search_pipeline=lexrerank``)
and ``GET /_lexrerank/ops`` (the ops page polls it). A strict Content-Security-Policy keeps
them from loading or sending anything anywhere but this gateway, so they work offline.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from gateway.proxy import opensearch_error

STATIC_DIR = Path(__file__).resolve().parent / "static"
UI_PREFIX = "/_lexrerank/ui"

# Same-origin only; no inline script or style in the HTML; images only as data: URLs.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                           "base-uri 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache"}


def public_paths() -> tuple[str, ...]:
    """The exact paths of the pages and their assets.

    They hold no data (every data request from them carries the API key), so a browser must
    be able to load them without one (it cannot add an ``X-API-Key`` header to a page
    navigation): the default ``LEXRERANK_AUTH_EXEMPT_PATHS`` opens ``/_lexrerank/ui*``.
    """
    assets = sorted(f"{UI_PREFIX}/static/{p.name}" for p in STATIC_DIR.iterdir()
                    if p.suffix in {".css", ".js"})
    return (UI_PREFIX, f"{UI_PREFIX}/", f"{UI_PREFIX}/ops", *assets)


class PageAssets(StaticFiles):
    """The pages' CSS and JavaScript: Starlette's StaticFiles, with ``nosniff`` (a browser
    must not run a file as anything but its declared type) and its 404/405 in OpenSearch's
    error shape rather than ``{"detail": ...}``."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            error = opensearch_error(
                exc.status_code,
                "resource_not_found_exception" if exc.status_code == 404
                else "method_not_allowed_exception" if exc.status_code == 405
                else "illegal_argument_exception",
                f"no asset {UI_PREFIX}/static/{path}: {exc.detail}" if exc.status_code == 404
                else f"{scope['method']} {UI_PREFIX}/static/{path}: {exc.detail}")
            error.headers.update(exc.headers or {})
            response = error
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8",
                        headers=PAGE_HEADERS)


def add_pages(app: FastAPI) -> None:
    """Register the pages' routes on ``app``.

    Call it before the catch-all proxy route is added: routes match in order, and the proxy
    would otherwise forward ``/_lexrerank/ui/...`` to OpenSearch.
    """

    @app.get(UI_PREFIX, include_in_schema=False)
    async def ui_root(request: Request) -> Response:
        # Relative asset URLs in the pages need the trailing slash.
        return RedirectResponse(f"{UI_PREFIX}/", status_code=308)

    @app.get(f"{UI_PREFIX}/", include_in_schema=False)
    async def search_page() -> FileResponse:
        """The search page (query, index, reranker; hits with highlighted evidence)."""
        return _page("search.html")

    @app.get(f"{UI_PREFIX}/ops", include_in_schema=False)
    async def ops_page() -> FileResponse:
        """The ops page (live charts of /_lexrerank/ops, workers, reindex jobs)."""
        return _page("ops.html")

    app.mount(f"{UI_PREFIX}/static", PageAssets(directory=STATIC_DIR), name="ui-static")

    @app.api_route(f"{UI_PREFIX}/{{rest:path}}", methods=["GET", "HEAD", "POST"],
                   include_in_schema=False)
    async def ui_unknown(rest: str) -> Response:
        # The pages' own namespace: never proxied to OpenSearch.
        return opensearch_error(404, "resource_not_found_exception",
                                f"no page {UI_PREFIX}/{rest}: the pages are {UI_PREFIX}/ "
                                f"(search) and {UI_PREFIX}/ops")
