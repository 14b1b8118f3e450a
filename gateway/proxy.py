"""Transparent pass-through to OpenSearch: every path and method, at the ASGI level.

Method, path and query (as the client encoded them), body and headers (content-type,
authorization, ...) go upstream unchanged except hop-by-hop headers; status, headers and body
come back unchanged (raw bytes, so a compressed answer stays compressed). Only the client's
own credentials are forwarded: the gateway never lends its configured ones to a proxied
request. OpenSearch unreachable -> 503, upstream timeout -> 504, both in OpenSearch's error
shape.

Small bodies (one ASGI message; a declared length up to :data:`BUFFER_LIMIT` for answers)
are passed as one buffer, which is the cheap path every search takes; larger ones (bulk
loads, scrolls) are streamed both ways, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

import aiohttp
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from gateway.opensearch_upstream import (
    UPSTREAM_ERRORS,
    OpenSearchUpstream,
    failed_to_connect,
)
from lexrerank.config import Settings, safe_url

# RFC 9110 hop-by-hop headers, plus ones the HTTP layers on each side set themselves
# ("expect": uvicorn answers 100-continue to the client; upstream, the body goes at once).
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "x-request-id", "expect",
})
_HOP_BY_HOP_BYTES = frozenset(h.encode() for h in HOP_BY_HOP)
BUFFER_LIMIT = 1 << 20


def request_headers(scope: Scope) -> list[tuple[str, str]]:
    """The client's headers to send upstream: all but hop-by-hop ones and content-length
    (the upstream client sets that: it may stream the body, or send another one)."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
            if k not in _HOP_BY_HOP_BYTES and k != b"content-length"]


def _answer_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower(), v) for k, v in raw if k.lower() not in _HOP_BY_HOP_BYTES]


def raw_target(scope: Scope) -> str:
    """The request's path and query exactly as the client encoded them.

    Starlette's ``url.path`` is percent-decoded: a document id ``a/b`` sent as ``a%2Fb``
    would reach OpenSearch as two path segments. The raw bytes go upstream instead.
    """
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string") or b""
    return (path + (b"?" + query if query else b"")).decode("latin-1")


def opensearch_error(status: int, error_type: str, reason: str) -> JSONResponse:
    """An error in OpenSearch's own shape."""
    cause = {"type": error_type, "reason": reason}
    return JSONResponse({"error": {"root_cause": [cause], **cause}, "status": status},
                        status_code=status)


def upstream_failure(exc: BaseException, settings: Settings) -> JSONResponse:
    """503 (unreachable) or 504 (timed out) for a failed upstream call; the URL in the
    reason never shows credentials embedded in ``OPENSEARCH_URL``."""
    where = safe_url(settings.opensearch_url)
    timed_out = isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError))
    if timed_out and not failed_to_connect(exc):
        return opensearch_error(504, "gateway_timeout_exception",
                                f"OpenSearch at {where} did not answer within "
                                f"LEXRERANK_UPSTREAM_TIMEOUT_S={settings.upstream_timeout_s} s: "
                                f"{type(exc).__name__}")
    return opensearch_error(503, "opensearch_unavailable_exception",
                            f"OpenSearch is not reachable at {where}: "
                            f"{type(exc).__name__}: {exc}".rstrip(": "))


class _BodyStream:
    """The request body as an async iterator for a streamed upload; a client that goes away
    before the end raises :class:`ClientDisconnect` inside the upstream client, which then
    abandons the request (a chunked upload without its last chunk is never applied)."""

    def __init__(self, first: bytes, receive: Receive) -> None:
        self.first, self.receive, self.disconnected = first, receive, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise ClientDisconnect
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return


async def client_gone(scope: Scope, receive: Receive, send: Send) -> None:
    """Record a request whose client went away before its body was complete: a 499 (nginx's
    "client closed request") through the middlewares, so the request log and the metrics
    count a client's abandon, not a gateway 500. The server writes nothing: the connection
    is gone (uvicorn drops sends after a disconnect)."""
    with contextlib.suppress(OSError):
        await opensearch_error(499, "client_closed_request",
                               "the client went away before its request body was complete: "
                               "nothing was sent to OpenSearch")(scope, receive, send)


async def read_body(receive: Receive) -> bytes:
    """The whole request body (callers bound it: see gateway.limits).

    Raises :class:`starlette.requests.ClientDisconnect` when the client goes away (or the
    server gives up on it: gateway.http_protocol) before the body is complete: a partial body
    must never be taken for a whole one.
    """
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def proxy_asgi(scope: Scope, receive: Receive, send: Send, upstream: OpenSearchUpstream,
                     settings: Settings, body: bytes | None = None) -> None:
    """Forward the request in ``scope`` to OpenSearch and send the answer back unchanged.

    ``body`` is the request body when the caller has already read it from ``receive``.
    A client that goes away before its body is complete gets nothing forwarded (or, for a
    streamed upload, the upstream request abandoned before its end): ClientDisconnect is
    raised for the caller to record (:func:`client_gone`).
    """
    stream = None
    if body is None:
        first = await receive()
        if first["type"] == "http.disconnect":
            raise ClientDisconnect  # gone before the body: an empty one must not go for it
        chunk = first.get("body", b"")
        if first.get("more_body", False):
            stream = _BodyStream(chunk, receive)
        content: bytes | _BodyStream = stream or chunk
    else:
        content = body
    try:
        answer = await upstream.open(scope["method"], raw_target(scope), request_headers(scope),
                                     content or None)
    except (*UPSTREAM_ERRORS, ClientDisconnect) as exc:
        if stream is not None and stream.disconnected:
            # The upstream client wraps our ClientDisconnect in its own error.
            raise ClientDisconnect from None
        if isinstance(exc, ClientDisconnect):
            raise
        await upstream_failure(exc, settings)(scope, receive, send)
        return
    try:
        headers = _answer_headers(answer.raw_headers)
        length = answer.content_length
        if length is not None and length <= BUFFER_LIMIT:
            data = await answer.read()
            await send({"type": "http.response.start", "status": answer.status,
                        "headers": headers})
            await send({"type": "http.response.body", "body": data})
            return
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": headers})
        async for chunk in answer.iter_chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        answer.release()


class ProxyResponse(Response):
    """A route's answer that is OpenSearch's answer to the same request (streamed through)."""

    def __init__(self, upstream: OpenSearchUpstream, settings: Settings,
                 body: bytes | None) -> None:
        super().__init__()  # status and headers come from OpenSearch in __call__
        self.upstream, self.settings, self.request_body = upstream, settings, body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await proxy_asgi(scope, receive, send, self.upstream, self.settings,
                             self.request_body)
        except ClientDisconnect:
            await client_gone(scope, receive, send)


async def proxy(request: Request, upstream: OpenSearchUpstream, settings: Settings,
                body: bytes | None = None) -> Response:
    """The answer to return from a route to pass ``request`` through to OpenSearch.

    ``body`` replaces the request body when the route has already read it.
    """
    return ProxyResponse(upstream, settings, body)
