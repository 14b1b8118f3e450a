"""The gateway's connections to OpenSearch.

Requests whose body is in memory (every search, the first stage of a reranked one, most
document and index calls) go over :class:`gateway.keepalive_pool.KeepAlivePool`; ``HEAD`` and
streamed uploads (bulk loads larger than one read) over aiohttp, which also makes the
gateway's own calls (``GET /`` with its credentials). Either way the caller gets an
:class:`UpstreamResponse` with the body unread.

Bodies travel as raw bytes both ways: nothing is decompressed, no header is added that the
client did not send (no ``Accept``, ``Accept-Encoding``, ``User-Agent`` or ``Content-Type`` of
our own), redirects are not followed. TLS and the gateway's own credentials come from the
settings; proxied requests carry only the client's credentials.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from multidict import CIMultiDict

from gateway.keepalive_pool import KeepAlivePool, UpstreamUnreachable
from lexrerank.config import Settings

CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 300.0  # admin calls (force merge, big bulks) are slow; the client decides
POOL_SIZE = 256

# Failures of the upstream call itself (not HTTP error statuses, which are answers).
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
STREAM_CHUNK = 1 << 16


def failed_to_connect(exc: BaseException) -> bool:
    """True when ``exc`` (one of :data:`UPSTREAM_ERRORS`) means OpenSearch was not reached."""
    return isinstance(exc, (UpstreamUnreachable, aiohttp.ClientConnectorError,
                            aiohttp.ConnectionTimeoutError))


class UpstreamResponse(Protocol):
    """OpenSearch's answer with its body unread; the caller must :meth:`release` it."""

    status: int
    raw_headers: list[tuple[bytes, bytes]]

    @property
    def content_length(self) -> int | None: ...

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...


class _AiohttpResponse:
    """An aiohttp response seen as an :class:`UpstreamResponse`."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.raw_headers = list(response.raw_headers)

    @property
    def content_length(self) -> int | None:
        return self._response.content_length

    async def read(self) -> bytes:
        return await self._response.read()

    def iter_chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_chunked(STREAM_CHUNK)

    def release(self) -> None:
        self._response.release()


@dataclass(frozen=True)
class UpstreamAnswer:
    """A buffered OpenSearch answer: status, raw headers (as sent), raw body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes, default: bytes = b"") -> bytes:
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), default)


class OpenSearchUpstream:
    """Pooled HTTP/1.1 connections to ``settings.opensearch_url``.

    Create it anywhere; connections open on first use inside the running event loop.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url = settings.opensearch_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._tls_context = self._tls()
        self.pool = KeepAlivePool(self.base_url, self._tls_context, CONNECT_TIMEOUT_S,
                                  READ_TIMEOUT_S, POOL_SIZE)

    def _tls(self) -> ssl.SSLContext | None:
        """The TLS context for an ``https`` URL (None for ``http``)."""
        if not self.base_url.startswith("https"):
            return None
        context = ssl.create_default_context(cafile=self.settings.opensearch_ca_certs or None)
        if not self.settings.opensearch_verify_certs and not self.settings.opensearch_ca_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, ssl=self._tls_context or True,
                                             enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, trust_env=False,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S,
                                              sock_read=READ_TIMEOUT_S))
        return self._session

    def own_auth(self) -> aiohttp.BasicAuth | None:
        """The gateway's configured credentials, for its own calls (health), never proxied."""
        if not self.settings.opensearch_user:
            return None
        return aiohttp.BasicAuth(self.settings.opensearch_user,
                                 self.settings.opensearch_password or "")

    async def open(self, method: str, target: str, headers: list[tuple[str, str]],
                   body: bytes | AsyncIterable[bytes] | None = None) -> UpstreamResponse:
        """Send a request and return the response with its body unread (the caller releases).

        ``target`` is the path and query exactly as the client encoded them (``/a%2Fb?x=1``).
        Raises one of :data:`UPSTREAM_ERRORS` when OpenSearch cannot be reached or times out.
        """
        if method != "HEAD" and (body is None or isinstance(body, bytes)):
            return await self.pool.open(method, target, headers, body)
        return _AiohttpResponse(await self.session.request(
            method, self.base_url + target, headers=CIMultiDict(headers), data=body,
            allow_redirects=False))

    async def request(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes | None = None) -> UpstreamAnswer:
        """Send a request and read the whole answer."""
        response = await self.open(method, target, headers, body)
        try:
            data = await response.read()
        finally:
            response.release()
        return UpstreamAnswer(response.status, response.raw_headers, data)

    async def root(self, timeout_s: float = 2.0) -> UpstreamAnswer:
        """``GET /`` with the gateway's own credentials (raises :data:`UPSTREAM_ERRORS`)."""
        async with self.session.get(self.base_url + "/", auth=self.own_auth(),
                                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            return UpstreamAnswer(r.status, list(r.raw_headers), await r.read())

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """True when ``GET /`` answers 200."""
        try:
            return (await self.root(timeout_s)).status == 200
        except UPSTREAM_ERRORS:
            return False

    async def aclose(self) -> None:
        self.pool.close()
        if self._session is not None and not self._session.closed:
            await self._session.close()
