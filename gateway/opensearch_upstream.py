"""The gateway's connection pool to OpenSearch (aiohttp: its C parser keeps a proxied request
cheap; httpx cost about 1 ms of CPU per request more, measured in the issue 4 note).

Bodies travel as raw bytes both ways: nothing is decompressed, no header is added that the
client did not send (no ``Accept``, ``Accept-Encoding``, ``User-Agent`` or ``Content-Type`` of
our own), redirects are not followed. TLS and the gateway's own credentials come from the
settings; proxied requests carry only the client's credentials.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from lexrerank.config import Settings

CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 300.0  # admin calls (force merge, big bulks) are slow; the client decides
POOL_SIZE = 256

# Failures of the upstream call itself (not HTTP error statuses, which are answers).
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


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
    """A pooled HTTP/1.1 client for ``settings.opensearch_url``.

    Create it anywhere; the session opens on first use inside the running event loop.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url = settings.opensearch_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.base_url.startswith("https"):
            return True
        if self.settings.opensearch_ca_certs:
            return ssl.create_default_context(cafile=self.settings.opensearch_ca_certs)
        return ssl.create_default_context() if self.settings.opensearch_verify_certs else False

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, ssl=self._ssl(),
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
                   body: bytes | AsyncIterable[bytes] | None = None,
                   timeout_s: float | None = None) -> aiohttp.ClientResponse:
        """Send a request and return the response with its body unread (the caller releases).

        ``target`` is the path and query exactly as the client encoded them (``/a%2Fb?x=1``).
        Raises one of :data:`UPSTREAM_ERRORS` when OpenSearch cannot be reached or times out.
        """
        extra = {"timeout": aiohttp.ClientTimeout(total=timeout_s)} if timeout_s else {}
        return await self.session.request(
            method, self.base_url + target, headers=CIMultiDict(headers), data=body,
            allow_redirects=False, **extra)

    async def request(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes | None = None, timeout_s: float | None = None
                      ) -> UpstreamAnswer:
        """Send a request and read the whole answer."""
        response = await self.open(method, target, headers, body, timeout_s)
        try:
            data = await response.read()
        finally:
            response.release()
        return UpstreamAnswer(response.status, list(response.raw_headers), data)

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
        if self._session is not None and not self._session.closed:
            await self._session.close()
