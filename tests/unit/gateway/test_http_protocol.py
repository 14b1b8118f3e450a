"""gateway.http_protocol: uvicorn's httptools protocol with header, read-time and connection
limits, against a real uvicorn server on loopback (a small ASGI app records what it saw)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from gateway.http_protocol import GatewayHttpProtocol
from gateway.limits import Limits

LIMITS = Limits(max_header_bytes=4096, max_header_read_ms=600, max_body_read_ms=600,
                max_connections=4)


class Recorder:
    """ASGI: reads the whole body, answers its length; records what each request saw."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, disconnected = b"", False
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.seen.append({"path": scope["path"], "body": len(body),
                          "disconnected": disconnected})
        if scope["path"] == "/slow":
            await asyncio.sleep(0.3)
        if not disconnected:
            data = json.dumps({"body": len(body)}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(data)).encode())]})
            await send({"type": "http.response.body", "body": data})


class LimitedProtocol(GatewayHttpProtocol):
    edge_limits = LIMITS


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, Recorder]]:
    app = Recorder()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=LimitedProtocol, log_level="error", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started
    yield port, app
    srv.should_exit = True
    thread.join(10)


def exchange(port: int, data: bytes, then_wait: float = 5) -> bytes:
    """Send ``data``, return all the server sends until it closes (or ``then_wait`` passes)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(then_wait)
        with contextlib.suppress(OSError):  # a refused request may close before all is sent
            sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def status_and_error(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    error = json.loads(body)
    assert error["status"] == status
    assert error["error"]["root_cause"][0]["type"] == error["error"]["type"]
    assert b"connection: close" in head
    return status, error


def test_headers_over_the_limit_get_431(server) -> None:
    port, _ = server
    raw = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
    status, error = status_and_error(raw)
    assert status == 431 and "LEXRERANK_MAX_HEADER_BYTES" in error["error"]["reason"]


def test_a_body_in_the_same_read_as_the_headers_does_not_count_as_header(server) -> None:
    port, app = server
    body = b"b" * 20_000  # five times the header limit, in one send with the headers
    raw = exchange(port, b"POST /whole HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
    assert app.seen[-1] == {"path": "/whole", "body": 20_000, "disconnected": False}


def test_pipelined_requests_are_served(server) -> None:
    port, _ = server
    one = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    raw = exchange(port, one * 3 + b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.count(b"HTTP/1.1 200") == 4


def test_slow_headers_get_408(server) -> None:
    port, _ = server
    started = time.monotonic()
    raw = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert time.monotonic() - started < 2
    status, error = status_and_error(raw)
    assert status == 408 and "LEXRERANK_MAX_HEADER_READ_MS" in error["error"]["reason"]


def test_a_silent_connection_is_closed_without_an_answer(server) -> None:
    port, _ = server
    started = time.monotonic()
    assert exchange(port, b"") == b""
    assert time.monotonic() - started < 2


def test_a_body_never_completed_is_a_disconnect_for_the_app_and_408(server) -> None:
    port, app = server
    raw = exchange(port, b"PUT /partial HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
    status, error = status_and_error(raw)
    assert status == 408 and "LEXRERANK_MAX_BODY_READ_MS" in error["error"]["reason"]
    assert app.seen[-1] == {"path": "/partial", "body": 2, "disconnected": True}


def test_keep_alive_requests_each_get_their_own_header_time(server) -> None:
    """Two requests 0.4 s apart on one connection: 0.8 s in all, past the 0.6 s limit, but
    each request's headers arrive at once."""
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(5)
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(0.4)


@pytest.mark.parametrize("raw", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"NOT HTTP\r\n\r\n",
])
def test_parse_errors_are_400_in_opensearch_shape(server, raw: bytes) -> None:
    port, _ = server
    status, error = status_and_error(exchange(port, raw))
    assert status == 400 and error["error"]["reason"].startswith("invalid HTTP request: ")


def test_an_unknown_transfer_encoding_never_reaches_the_app_as_a_whole_body(server) -> None:
    """llhttp calls on_headers_complete before refusing the Transfer-Encoding, so the app's
    task starts: it must see a disconnect, not an empty body."""
    port, app = server
    exchange(port, b"POST /xte HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\nabc")
    time.sleep(0.2)
    assert [s for s in app.seen if s["path"] == "/xte"] == [
        {"path": "/xte", "body": 0, "disconnected": True}]


def test_connections_past_the_limit_get_503(server) -> None:
    port, _ = server
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(LIMITS.max_connections)]
    try:
        status, error = status_and_error(exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert status == 503 and "LEXRERANK_MAX_CONNECTIONS" in error["error"]["reason"]
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    ).startswith(b"HTTP/1.1 200")


def test_edge_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from lexrerank.config import get_settings

    def edge(limits: Limits) -> tuple[int, int, int, int]:
        return (limits.max_header_bytes, limits.max_header_read_ms, limits.max_body_read_ms,
                limits.max_connections)

    assert edge(Limits.from_settings(get_settings())) == edge(Limits())  # documented defaults
    for name, value in (("HEADER_BYTES", "100"), ("HEADER_READ_MS", "200"),
                        ("BODY_READ_MS", "300"), ("CONNECTIONS", "0")):
        monkeypatch.setenv(f"LEXRERANK_MAX_{name}", value)
    assert edge(Limits.from_settings(get_settings())) == (100, 200, 300, 0)
