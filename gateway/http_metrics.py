"""HTTP request metrics: the ASGI middleware that counts and times every answer.

The metrics are :mod:`gateway.prometheus_metrics`' (``lexrerank_gateway_requests_total``,
``lexrerank_gateway_request_duration_seconds``), labelled by route KIND (:func:`route_kind`),
a small fixed set, never the path itself.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.prometheus_metrics import record_request


def route_kind(path: str) -> str:
    """The route kind of a request path (a label value from a small fixed set)."""
    if path.endswith("/_search"):
        return "search"
    if path in ("/_lexrerank/healthz", "/_lexrerank/readyz", "/_lexrerank/health"):
        return "health"
    if path == "/_lexrerank/metrics":
        return "metrics"
    if path == "/_lexrerank/ops":
        return "ops"
    if path.startswith("/_lexrerank/"):
        return "pages"
    return "proxy"


class MetricsMiddleware:
    """ASGI middleware: counts each HTTP request by route kind and status, times it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_capturing_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_capturing_status)
        finally:
            record_request(route_kind(scope["path"]), status, time.perf_counter() - start)
