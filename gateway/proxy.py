"""Transparent pass-through to OpenSearch: every path and method, bodies streamed both ways.

Method, path, query string, body and headers (content-type, authorization, ...) go upstream
unchanged except hop-by-hop headers; status, headers and body come back unchanged (raw bytes,
so a compressed answer stays compressed and its content-length stays right). Only the
client's own credentials are forwarded: the gateway never lends its configured ones to a
proxied request. OpenSearch unreachable -> 503, upstream timeout -> 504, both in OpenSearch's
error shape.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from lexrerank.config import Settings

# RFC 9110 hop-by-hop headers, plus ones the HTTP layers on each side set themselves.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "x-request-id",
})
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 300.0  # admin calls (force merge, big bulks) are slow; the client decides


def upstream_client(settings: Settings, transport: httpx.AsyncBaseTransport | None = None
                    ) -> httpx.AsyncClient:
    """A pooled async client for OpenSearch (TLS options from the settings).

    ``transport`` replaces the network (unit tests pass an ``httpx.MockTransport``).
    """
    verify: bool | ssl.SSLContext = settings.opensearch_verify_certs
    if settings.opensearch_url.startswith("https") and settings.opensearch_ca_certs:
        verify = ssl.create_default_context(cafile=settings.opensearch_ca_certs)
    client = httpx.AsyncClient(
        base_url=settings.opensearch_url,
        verify=verify,
        timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S, pool=10.0),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        # Bodies are passed as they are: never decompress, never follow redirects.
        follow_redirects=False,
        trust_env=False,
        transport=transport,
    )
    # httpx adds Accept, Accept-Encoding and User-Agent to every request; a proxy must send
    # the client's own (an Accept-Encoding the client never sent would get it gzip back).
    for name in ("accept", "accept-encoding", "user-agent"):
        client.headers.pop(name, None)
    return client


def forward_headers(headers: Iterable[tuple[str, str]], *, keep_length: bool = True
                    ) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop ones (and without content-length unless kept)."""
    return [(k, v) for k, v in headers
            if k.lower() not in HOP_BY_HOP and (keep_length or k.lower() != "content-length")]


def opensearch_error(status: int, error_type: str, reason: str) -> JSONResponse:
    """An error in OpenSearch's own shape."""
    cause = {"type": error_type, "reason": reason}
    return JSONResponse({"error": {"root_cause": [cause], **cause}, "status": status},
                        status_code=status)


def upstream_failure(exc: httpx.HTTPError, settings: Settings) -> JSONResponse:
    """503 (unreachable) or 504 (timed out) for a failed upstream call."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return opensearch_error(504, "gateway_timeout_exception",
                                f"OpenSearch at {settings.opensearch_url} did not answer in "
                                f"time: {type(exc).__name__}")
    return opensearch_error(503, "opensearch_unavailable_exception",
                            f"OpenSearch is not reachable at {settings.opensearch_url}: "
                            f"{type(exc).__name__}: {exc}".rstrip(": "))


def raw_url(request: Request) -> httpx.URL:
    """The request's path and query exactly as the client encoded them.

    Starlette's ``url.path`` is percent-decoded: a document id ``a/b`` sent as ``a%2Fb``
    would reach OpenSearch as two path segments. The raw bytes go upstream instead.
    """
    raw = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string") or b""
    return httpx.URL(raw_path=raw + (b"?" + query if query else b""))


async def proxy(request: Request, upstream: httpx.AsyncClient, settings: Settings,
                body: bytes | None = None) -> Response:
    """Forward ``request`` to OpenSearch and stream the answer back unchanged.

    ``body`` replaces the request body when the caller has already read it.
    """
    content = body if body is not None else request.stream()
    outgoing = upstream.build_request(
        request.method, raw_url(request), headers=forward_headers(request.headers.items(),
                                                     keep_length=body is None),
        content=content)
    try:
        answer = await upstream.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        return upstream_failure(exc, settings)
    return StreamingResponse(answer.aiter_raw(), status_code=answer.status_code,
                             headers=dict(forward_headers(answer.headers.items())),
                             background=BackgroundTask(answer.aclose))
