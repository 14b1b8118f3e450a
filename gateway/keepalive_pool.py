"""Keep-alive HTTP/1.1 connections to OpenSearch for the search path (httptools' C parser).

Every search the gateway handles makes one call to OpenSearch, and its latency is what users
compare against going straight there. aiohttp's client builds a request object, a URL, a
cookie jar lookup, trace hooks and timers per call: about 0.5 ms of CPU per search on this
project's 2-core machine (``bench pipeline``'s pass-through ratio was 1.3-1.4 with it). This pool
keeps only what a proxied exchange needs: write the request in one buffer, let httptools
parse the answer, hand the body over as it arrives.

Scope: one request at a time per connection (no pipelining), request bodies already in
memory, answers streamed with flow control (reading pauses while :data:`HIGH_WATER` bytes wait
for the caller). ``HEAD`` (an answer without a body the parser cannot know of) and streamed
uploads stay on aiohttp (:mod:`gateway.opensearch_upstream` chooses).

Errors: :class:`UpstreamUnreachable` (connect refused or timed out), :class:`UpstreamClosed`
(connection lost mid-exchange), both ``ConnectionError``; :class:`UpstreamTimeout` (no answer
within the read timeout), an ``asyncio.TimeoutError``. A connection whose exchange did not
finish cleanly is closed, never reused. A kept connection that OpenSearch closed just as it
was reused, before answering, is retried once on a new one for idempotent methods only.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 1 << 20  # answer bytes buffered before reading pauses
MAX_IDLE = 64  # idle connections kept for reuse
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})


class UpstreamUnreachable(ConnectionError):
    """No connection to OpenSearch (refused, unresolvable, or the connect timed out)."""


class UpstreamClosed(ConnectionError):
    """OpenSearch closed the connection before the answer was complete."""


class UpstreamTimeout(asyncio.TimeoutError):
    """OpenSearch sent nothing for longer than the read timeout."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; the httptools callbacks fill in the current answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.in_use = False  # an exchange is under way (bytes at any other time are wrong)
        self.reused = False  # it served an earlier exchange
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.head_done = self.complete = self.interim = self.keep_alive = False
        self.received = False  # any byte of this exchange's answer
        self.buffer_all = False
        self.paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.in_use:
            self.transport.close()  # type: ignore[union-attr]
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = UpstreamClosed(f"OpenSearch sent a malformed answer: {exc}")
            self.transport.close()  # type: ignore[union-attr]
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.head_done and not self.complete and self._reads_to_eof():
            self.complete = True  # an answer delimited by the end of the connection
        elif not self.complete and self.error is None:
            self.error = UpstreamClosed("OpenSearch closed the connection mid-answer"
                                        + (f": {exc}" if exc else ""))
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if 100 <= self.parser.get_status_code() < 200:
            self.headers, self.interim = [], True  # e.g. 100 Continue: the answer follows
        else:
            self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.buffer_all and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
        else:
            # Asked now: once this callback returns the parser has moved on to the next one.
            self.keep_alive = self.parser.should_keep_alive()
            self.complete = True

    # used by the pool and the answer
    def _reads_to_eof(self) -> bool:
        names = {k.lower() for k, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout_s: float) -> None:
        """Until more of the answer (or its end, or an error) arrives."""
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        timer = loop.call_later(timeout_s, self._time_out, timeout_s)
        try:
            await self._waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self.error is not None:
            raise self.error

    def _time_out(self, timeout_s: float) -> None:
        self.error = UpstreamTimeout(f"no data from OpenSearch in {timeout_s:g} s")
        self.transport.close()  # type: ignore[union-attr]
        self._wake()

    def take(self) -> bytes:
        """Everything buffered so far (reading resumes if it was paused)."""
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.paused and not self.lost:
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        return data

    def reusable(self) -> bool:
        return (self.complete and self.error is None and not self.lost
                and self.keep_alive
                and not self.transport.is_closing())  # type: ignore[union-attr]


class PooledAnswer:
    """OpenSearch's answer: status and raw headers now, the body as it arrives.

    Call :meth:`release` when done (after :meth:`read` or :meth:`iter_chunks`, or to give up):
    a fully read answer returns its connection to the pool, anything else closes it.
    """

    def __init__(self, pool: KeepAlivePool, conn: _Connection, read_timeout_s: float) -> None:
        self._pool, self._conn, self._timeout = pool, conn, read_timeout_s
        self.status: int = conn.parser.get_status_code()
        self.raw_headers: list[tuple[bytes, bytes]] = conn.headers
        self._released = False

    @property
    def content_length(self) -> int | None:
        for name, value in self.raw_headers:
            if name.lower() == b"content-length" and value.strip().isdigit():
                return int(value)
        return None

    async def read(self) -> bytes:
        """The whole body."""
        conn = self._conn
        conn.buffer_all = True  # the caller wants it all: reading never pauses
        parts = []
        while True:
            if conn.chunks:
                parts.append(conn.take())  # resumes reading if it was paused
            if conn.complete:
                return b"".join(parts)
            await conn.wait(self._timeout)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body in pieces as they arrive (each up to about :data:`HIGH_WATER` bytes)."""
        conn = self._conn
        while True:
            if conn.chunks:
                yield conn.take()  # more may have arrived meanwhile: look again first
            elif conn.complete:
                return
            else:
                await conn.wait(self._timeout)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool.put_back(self._conn)


class KeepAlivePool:
    """Keep-alive connections to one OpenSearch URL; :meth:`open` sends one request.

    Create it anywhere; connections open on first use inside the running event loop.
    ``max_connections`` bounds the connections open at once (callers beyond it wait).
    """

    def __init__(self, base_url: str, tls: ssl.SSLContext | None, connect_timeout_s: float,
                 read_timeout_s: float, max_connections: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or (parts.scheme == "https") != (tls is not None):
            raise ValueError(f"{base_url}: an http URL without TLS or an https one with it")
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if tls else 80)
        self.host_header = parts.netloc.rpartition("@")[2].encode("idna")
        self._ssl = tls
        self.connect_timeout_s, self.read_timeout_s = connect_timeout_s, read_timeout_s
        self._idle: list[_Connection] = []
        self._max = max_connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(max_connections)

    async def open(self, method: str, target: str, headers: list[tuple[str, str]],
                   body: bytes | None) -> PooledAnswer:
        """Send ``method target`` and return the answer once its headers have arrived.

        ``target`` is the path and query as the client encoded them; ``headers`` go as given
        (the caller removes hop-by-hop ones); ``content-length`` is set here.
        """
        if method == "HEAD":
            raise ValueError("HEAD answers have no body to parse: send HEAD through aiohttp")
        request = _request_bytes(method, target, self.host_header, headers, body)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new loop (tests): nothing carries over
            self._loop, self._slots, self._idle = loop, asyncio.Semaphore(self._max), []
        await self._slots.acquire()
        try:
            return await self._exchange(method, request)
        except BaseException:
            self._slots.release()
            raise

    async def _exchange(self, method: str, request: bytes) -> PooledAnswer:
        """Send ``request`` (a slot is held) and wait for the answer's head."""
        retried = False
        while True:
            conn = await self._connection()
            try:
                conn.transport.write(request)  # type: ignore[union-attr]
                while not conn.head_done:
                    await conn.wait(self.read_timeout_s)
                return PooledAnswer(self, conn, self.read_timeout_s)
            except BaseException as exc:
                conn.transport.close()  # type: ignore[union-attr]
                # A kept connection OpenSearch closed as it was reused: nothing was
                # answered, so an idempotent request goes again, once, on a new one
                # (RFC 9110 9.2.2; aiohttp does the same).
                if (retried or not isinstance(exc, UpstreamClosed) or not conn.reused
                        or conn.received or method not in IDEMPOTENT_METHODS):
                    raise
                retried = True

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.lost and not conn.transport.is_closing():  # type: ignore[union-attr]
                conn._reset()
                conn.in_use = conn.reused = True
                return conn
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, self.host, self.port, ssl=self._ssl,
                                       server_hostname=self.host if self._ssl else None),
                self.connect_timeout_s)
        except asyncio.TimeoutError as exc:
            raise UpstreamUnreachable(f"connecting to {self.host}:{self.port} timed out after "
                                      f"{self.connect_timeout_s:g} s") from exc
        except OSError as exc:
            raise UpstreamUnreachable(f"cannot connect to {self.host}:{self.port}: "
                                      f"{exc.strerror or exc}") from exc
        conn.in_use = True
        return conn

    def put_back(self, conn: _Connection) -> None:
        """The connection after its answer: kept for the next request if it can be."""
        if conn.reusable() and len(self._idle) < MAX_IDLE:
            conn.in_use = False
            self._idle.append(conn)
            self._slots.release()
        else:
            self._discard(conn)

    def _discard(self, conn: _Connection) -> None:
        if conn.transport is not None:
            conn.transport.close()
        self._slots.release()

    def close(self) -> None:
        """Close the idle connections (answers still being read close theirs on release)."""
        for conn in self._idle:
            conn.transport.close()  # type: ignore[union-attr]
        self._idle.clear()


def _request_bytes(method: str, target: str, host: bytes, headers: list[tuple[str, str]],
                   body: bytes | None) -> bytes:
    """The request head and body in one buffer (one write, one segment for small ones)."""
    if not target.startswith("/") or any(c in target for c in " \r\n"):
        raise ValueError(f"not a request target: {target!r}")
    lines = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), b"host: ", host, b"\r\n"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(b"content-length: %d\r\n" % len(body or b""))
    lines.append(b"\r\n")
    if body:
        lines.append(body)
    return b"".join(lines)
