"""Optional API-key authentication for the gateway (pure ASGI middleware).

On when at least one key is configured (``LEXRERANK_API_KEYS``, comma-separated, or
``LEXRERANK_API_KEYS_FILE``, one key per line): every request must then carry one of the keys
in the ``X-API-Key`` header, else it gets a 401 in OpenSearch's error shape. Health paths
(``LEXRERANK_AUTH_EXEMPT_PATHS``, default :data:`lexrerank.config.DEFAULT_AUTH_EXEMPT_PATHS`:
the probes, ``/metrics`` and the pages) stay open to GET/HEAD for load balancers, probes and
browsers (an entry ending in ``*`` is a prefix: ``/_lexrerank/ui*``). Keys are compared
with :func:`hmac.compare_digest` against every configured key (no early exit, so timing
tells nothing about which key is close). The ``X-API-Key`` header is removed before the
request goes on, so the gateway's key never reaches OpenSearch; the client's own
``Authorization`` header (OpenSearch credentials) passes through untouched and is never
logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.proxy import opensearch_error

API_KEY_HEADER = b"x-api-key"
_READS = frozenset({"GET", "HEAD"})


class ApiKeyMiddleware:
    """401 unless ``X-API-Key`` is one of ``keys``; a no-op when ``keys`` is empty."""

    def __init__(self, app: ASGIApp, keys: Iterable[str], exempt_paths: Iterable[str]) -> None:
        self.app = app
        self.keys = tuple(k.encode() for k in keys if k)
        paths = [p for p in exempt_paths if p]
        self.exempt = frozenset(p for p in paths if not p.endswith("*"))
        self.exempt_prefixes = tuple(p[:-1] for p in paths if p.endswith("*"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.keys or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        others = []
        for key, value in scope["headers"]:
            if key == API_KEY_HEADER:
                given = value
            else:
                others.append((key, value))
        if self.exempts(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        if given is None or not self._valid(given):
            reason = ("missing X-API-Key header: send one of the gateway's API keys"
                      if given is None else "invalid API key in X-API-Key")
            response = opensearch_error(401, "security_exception", reason)
            await response(scope, receive, send)
            return
        # The gateway's own key stops here: OpenSearch never sees it.
        await self.app({**scope, "headers": others}, receive, send)

    def exempts(self, method: str, path: str) -> bool:
        """True when ``method path`` is open without a key."""
        # Only reads are exempt: a PUT to an exempt path the gateway does not serve itself
        # would reach OpenSearch (``PUT /healthz`` creates an index) without a key.
        # A prefix never exempts dot segments: "/static/../../index/_search" would reach
        # OpenSearch normalised, without a key.
        return method in _READS and (
            path in self.exempt or (bool(self.exempt_prefixes) and "/." not in path
                                    and path.startswith(self.exempt_prefixes)))

    def _valid(self, given: bytes) -> bool:
        match = False
        for key in self.keys:
            match |= hmac.compare_digest(given, key)
        return match
