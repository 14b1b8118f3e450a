"""The gateway's HTTP/1.1 edge: uvicorn's httptools protocol with the limits it lacks.

uvicorn 0.54 with httptools (the parser ``lexrerank serve`` has always used) bounds neither
the size of a request's headers nor the time a client may take to send them or its body:
measured on main, one 30 MB header was accepted (200, +85 MB RSS), and a slowloris client
(1 byte/s) or a body announced but never sent kept its connection, and its ASGI task, open
indefinitely. ``h11_max_incomplete_event_size`` bounds headers only under the pure-Python
h11 parser (measured, a keep-alive GET round trip against a trivial app, median: httptools
35-42 µs, this subclass 43 µs, h11 95 µs), and uvicorn has no header or body read timeout
under either parser; its ``limit_concurrency`` answers a plain-text 503. So
:class:`GatewayHttpProtocol` subclasses
:class:`uvicorn.protocols.http.httptools_impl.HttpToolsProtocol` and adds, per connection:

- ``LEXRERANK_MAX_HEADER_BYTES``: a request whose request line and headers are still
  incomplete after that many bytes gets a 431 and the connection closes (the parser buffers
  at most that plus one socket read);
- ``LEXRERANK_MAX_HEADER_READ_MS``: from the connection's first byte (or its opening) to the
  end of the headers; past it, a 408 and close (an idle connection that sent nothing is just
  closed, as uvicorn's keep-alive timeout does between requests);
- ``LEXRERANK_MAX_BODY_READ_MS``: from the end of the headers to the end of the body; past it
  the application sees ``http.disconnect`` (so nothing is forwarded: gateway.proxy), the client
  gets a 408 and the connection closes;
- ``LEXRERANK_MAX_CONNECTIONS``: uvicorn's ``limit_concurrency`` check (connections or tasks
  of this process), answered with a 503 in OpenSearch's error shape;
- HTTP parse errors (smuggling attempts included: httptools/llhttp refuses Content-Length
  with Transfer-Encoding, duplicate Content-Length, an unknown Transfer-Encoding) get a 400 in
  OpenSearch's error shape naming the parser's reason, instead of uvicorn's plain text, and
  the request whose headers were already parsed sees ``http.disconnect``.

Every error answer closes the connection. Limits are read once per process from the
environment (:func:`lexrerank.config.get_settings`); 0 disables one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.limits import Limits
from lexrerank.config import get_settings


def error_body(status: int, error_type: str, reason: str) -> bytes:
    """The bytes of an error in OpenSearch's shape (as :func:`gateway.proxy.opensearch_error`)."""
    cause = {"type": error_type, "reason": reason}
    return json.dumps({"error": {"root_cause": [cause], **cause}, "status": status}).encode()


async def _overloaded(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The answer past ``LEXRERANK_MAX_CONNECTIONS`` (in place of uvicorn's plain 503)."""
    limit = GatewayHttpProtocol.limits().max_connections
    body = error_body(503, "rejected_execution_exception",
                      f"the gateway is serving its maximum of {limit} connections: retry "
                      "later (limit: LEXRERANK_MAX_CONNECTIONS)")
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus header size, read-time and connection limits.

    Pass it to uvicorn as ``http="gateway.http_protocol:GatewayHttpProtocol"``; the limits
    come from :meth:`limits` (the environment, read once; tests set :attr:`edge_limits`).
    """

    edge_limits: ClassVar[Limits | None] = None

    @classmethod
    def limits(cls) -> Limits:
        if cls.edge_limits is None:
            cls.edge_limits = Limits.from_settings(get_settings())
        return cls.edge_limits

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.edge = self.limits()
        self.limit_concurrency = None  # checked in on_headers_complete, answered as JSON
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's ``data_received`` plus the header byte count; a parse error's reason is
        kept for the client's 400."""
        self._unset_keepalive_if_required()
        if self._awaiting_headers:
            self._arm_header_timer()
            self._header_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            self.logger.warning("Invalid HTTP request received: %s", exc)
            self._refuse(400, "illegal_argument_exception", f"invalid HTTP request: {exc}")
            return
        limit = self.edge.max_header_bytes
        if self._awaiting_headers and limit and self._header_bytes > limit:
            # Every byte counted arrived while the headers were incomplete: they are too long.
            self._refuse(431, "too_long_http_header_exception",
                         f"HTTP request line and headers are larger than {limit} bytes "
                         "(limit: LEXRERANK_MAX_HEADER_BYTES)")

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "illegal_argument_exception", msg)

    # ------------------------------------------------------------------ parser callbacks

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._header_bytes = 0
        self._cancel(self._header_timer)
        self._header_timer = None
        limit = self.edge.max_connections
        # uvicorn's limit_concurrency test (this connection is already counted).
        if limit and (len(self.connections) > limit or len(self.tasks) >= limit):
            self.logger.warning("Exceeded concurrency limit.")
            app, self.app = self.app, _overloaded
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()
        if self.edge.max_body_read_ms:
            self._body_timer = self.loop.call_later(self.edge.max_body_read_ms / 1000,
                                                    self._body_timed_out)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel(self._body_timer)
        self._body_timer = None
        self._awaiting_headers = True
        self._header_bytes = 0

    # ------------------------------------------------------------------ timers

    def _arm_header_timer(self) -> None:
        if self._header_timer is None and self.edge.max_header_read_ms:
            self._header_timer = self.loop.call_later(self.edge.max_header_read_ms / 1000,
                                                      self._header_timed_out)

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._awaiting_headers:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_header_timer()  # a pipelined request waits for the one before it
            return
        if self._header_bytes == 0:
            self.transport.close()  # nothing sent: closed like an idle keep-alive connection
            return
        self._refuse(408, "request_timeout_exception",
                     f"the request line and headers took longer than "
                     f"{self.edge.max_header_read_ms} ms (limit: LEXRERANK_MAX_HEADER_READ_MS)")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_complete:
            self.transport.close()  # answered early (a 401, a 413): the rest is not awaited
            return
        self._refuse(408, "request_timeout_exception",
                     f"the request body took longer than {self.edge.max_body_read_ms} ms "
                     "(limit: LEXRERANK_MAX_BODY_READ_MS)")

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()

    def _cancel_timers(self) -> None:
        self._cancel(self._header_timer)
        self._cancel(self._body_timer)
        self._header_timer = self._body_timer = None

    # ------------------------------------------------------------------ answers

    def _refuse(self, status: int, error_type: str, reason: str) -> None:
        """Answer ``status`` in OpenSearch's shape (unless a response is already on the
        wire) and close; the request in progress, if any, sees ``http.disconnect``."""
        cycle = self.cycle
        mid_response = (cycle is not None and cycle.response_started
                        and not cycle.response_complete)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() answers http.disconnect from now
            cycle.message_event.set()
        if not mid_response and not self.transport.is_closing():
            body = error_body(status, error_type, reason)
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [b"content-type: application/json; charset=UTF-8\r\n",
                     b"content-length: ", str(len(body)).encode(), b"\r\n",
                     b"connection: close\r\n\r\n", body]
            self.transport.write(b"".join(head))
        self._cancel_timers()
        self.transport.close()
