"""The gateway's connections to OpenSearch: one aiohttp client session for every call.

Every request the gateway sends to OpenSearch (pass-through, the first stage of a reranked
search, ``HEAD``, streamed uploads, its own ``GET /``) goes through one
``aiohttp.ClientSession`` with a keep-alive pool; the caller gets an :class:`UpstreamResponse`
with the body unread. A hand-written HTTP/1.1 pool (httptools) carried searches before issue
15; it was removed because one well-kept client meets the pass-through target and the pool's
own bugs (a poisoned connection reused, issue 15 item 1) were the price of owning it.
Measured A/B, 6 alternating runs each of 200-300 paired direct/gateway BM25 searches at one
client (``bench pipeline``'s pairing) on the 2-core machine, shared with a training job: the
pool added 0.39-0.70 ms p50 (median 0.58, ratio 1.24-1.35, gateway CPU 0.37-0.65 ms per
request), aiohttp 0.61-0.94 ms (median 0.65, ratio 1.35-1.55, CPU 0.60-0.77 ms). The target
is 1.3 x direct or 1 ms added, whichever is looser: at ~1.7 ms direct that is 1 ms, which
aiohttp met in every run; the pool's ~0.1 ms is not worth a hand-written HTTP client.

Bodies travel as raw bytes both ways: nothing is decompressed (a gzip request body stays
gzip), no header is added that the client did not send (no ``Accept``, ``Accept-Encoding``,
``User-Agent`` or ``Content-Type`` of our own), redirects are not followed, the request
target goes as the client encoded it. TLS and the gateway's own credentials come from the
settings; proxied requests carry only the client's credentials.

Connection reuse: aiohttp keeps a connection only after a complete answer that did not say
``Connection: close``, and retries an idempotent request once when a kept connection turns
out closed. On top of that, a connection whose answer is a request-level error
(:data:`CLOSE_AFTER_STATUS`) is never reused: OpenSearch's HTTP decoder (Netty) answers a
request it cannot decode (a header block over ``http.max_header_size``, 8 KB by default) with
400 and then ignores everything else on that connection without saying ``Connection: close``,
so the next request on it would wait for the whole read timeout. Telling that 400 from a
query's 400 would mean reading the body; a new loopback connection costs about 0.1 ms, so
no 400-class answer's connection is kept. A request that times out or is cancelled (the
caller's deadline) closes its connection too (aiohttp never returns an unfinished exchange).

Timeouts: connect :data:`CONNECT_TIMEOUT_S`; then ``LEXRERANK_UPSTREAM_TIMEOUT_S`` (default
300 s) is the longest OpenSearch may stay silent, waiting for the answer's head or between
pieces of its body (admin calls such as a force merge are slow; a pass-through request that
passes it is a 504). Callers with a deadline (reranked searches) also pass ``timeout_s``, a
bound on the whole exchange.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from lexrerank.config import Settings, safe_url

CONNECT_TIMEOUT_S = 2.0
POOL_SIZE = 256
# Answers after which OpenSearch may have stopped reading the connection (see module doc).
CLOSE_AFTER_STATUS = frozenset({400, 408, 413, 414, 431})

# Failures of the upstream call itself (not HTTP error statuses, which are answers).
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
STREAM_CHUNK = 1 << 16
# Bytes that go into a request target as they are; anything else (non-ASCII, controls,
# spaces) is percent-encoded byte by byte, which OpenSearch decodes to the same path.
_TARGET_SAFE = frozenset(range(0x21, 0x7F))


def failed_to_connect(exc: BaseException) -> bool:
    """True when ``exc`` (one of :data:`UPSTREAM_ERRORS`) means OpenSearch was not reached."""
    return isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))


def request_url(base_url: str, target: str) -> URL:
    """The URL for ``target`` (path and query as the client encoded them), not re-encoded.

    yarl would normalise the escapes (``%2F`` is a slash in an id, not a separator): the
    target goes as it came, with only bytes outside printable ASCII percent-encoded.
    """
    raw = target.encode("latin-1", "replace")
    if not all(b in _TARGET_SAFE for b in raw):
        target = "".join(chr(b) if b in _TARGET_SAFE else f"%{b:02X}" for b in raw)
    return URL(base_url + target, encoded=True)


class UpstreamResponse(Protocol):
    """OpenSearch's answer with its body unread; the caller must :meth:`release` it."""

    status: int
    raw_headers: list[tuple[bytes, bytes]]

    @property
    def content_length(self) -> int | None: ...

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...


class _ClosingResponse(aiohttp.ClientResponse):
    """aiohttp's response, except that a :data:`CLOSE_AFTER_STATUS` answer's connection is
    never kept (see the module doc)."""

    async def start(self, connection: Any) -> aiohttp.ClientResponse:
        protocol = connection.protocol
        started = await super().start(connection)
        if self.status in CLOSE_AFTER_STATUS and protocol is not None:
            if self.connection is not None:
                protocol.force_close()  # the body is still coming: closed on release
            else:
                protocol.close()  # already back in the pool (its body came with the head)
        return started


class _Answer:
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
        """Done with the answer: a completely read one keeps its connection, else closed."""
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

    Create it anywhere; the session opens on first use inside the running event loop.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        parts = urlsplit(settings.opensearch_url.rstrip("/"))
        # Credentials in the URL are the gateway's own (as for opensearch-py): kept for its
        # own calls, never sent with a proxied request, never printed.
        self._url_credentials = ((unquote(parts.username), unquote(parts.password or ""))
                                 if parts.username else None)
        self.base_url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        self.where = safe_url(self.base_url)
        self.read_timeout_s = float(settings.upstream_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._tls_context = self._tls()

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
                response_class=_ClosingResponse, cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S,
                                              sock_read=self.read_timeout_s))
        return self._session

    def own_headers(self) -> dict[str, str]:
        """The gateway's configured credentials (``OPENSEARCH_USER``/``_PASSWORD``, else the
        URL's) as headers, for its own calls (health), never proxied."""
        if self.settings.opensearch_user:
            credentials = (self.settings.opensearch_user, self.settings.opensearch_password or "")
        elif self._url_credentials:
            credentials = self._url_credentials
        else:
            return {}
        token = base64.b64encode(":".join(credentials).encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    async def open(self, method: str, target: str, headers: list[tuple[str, str]],
                   body: bytes | AsyncIterable[bytes] | None = None,
                   timeout_s: float | None = None) -> UpstreamResponse:
        """Send a request and return the response with its body unread (the caller releases).

        ``target`` is the path and query exactly as the client encoded them (``/a%2Fb?x=1``);
        ``timeout_s`` bounds the whole exchange (connect, send, answer) on top of the
        silence limit. Raises one of :data:`UPSTREAM_ERRORS` when OpenSearch cannot be
        reached or times out.
        """
        extra: dict[str, Any] = {}
        if timeout_s is not None:
            extra["timeout"] = aiohttp.ClientTimeout(
                total=timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s),
                sock_read=self.read_timeout_s)
        response = await self.session.request(
            method, request_url(self.base_url, target), headers=CIMultiDict(headers),
            data=body, allow_redirects=False, **extra)
        return _Answer(response)

    async def request(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes | None = None, timeout_s: float | None = None
                      ) -> UpstreamAnswer:
        """Send a request and read the whole answer (``timeout_s``: as for :meth:`open`)."""
        response = await self.open(method, target, headers, body, timeout_s)
        try:
            data = await response.read()
        finally:
            response.release()
        return UpstreamAnswer(response.status, response.raw_headers, data)

    async def root(self, timeout_s: float = 2.0) -> UpstreamAnswer:
        """``GET /`` with the gateway's own credentials (raises :data:`UPSTREAM_ERRORS`)."""
        async with self.session.get(self.base_url + "/", headers=self.own_headers(),
                                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            return UpstreamAnswer(r.status, list(r.raw_headers), await r.read())

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """True when ``GET /`` answers 200."""
        try:
            return (await self.root(timeout_s)).status == 200
        except UPSTREAM_ERRORS:
            return False

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
