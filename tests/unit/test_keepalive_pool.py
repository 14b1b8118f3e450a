"""The gateway's keep-alive pool to OpenSearch against a scripted HTTP server on loopback.

The server reads one request at a time and answers with the raw bytes a test scripts, so the
cases a real OpenSearch rarely shows (chunked answers, ``Connection: close``, a connection
dropped mid-answer, a silent server, ``100 Continue``) are exercised on real sockets.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trustme

from gateway.keepalive_pool import (
    HIGH_WATER,
    KeepAlivePool,
    UpstreamClosed,
    UpstreamTimeout,
    UpstreamUnreachable,
    _request_bytes,
)

# (request head + body as received) -> what to do with the connection
Script = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


class ScriptedServer:
    """Counts connections and requests; ``script`` answers each request."""

    def __init__(self, script: Script) -> None:
        self.script, self.connections, self.requests = script, 0, []
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, tls: ssl.SSLContext | None = None) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if tls else 'http'}://localhost:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                await self.script(request, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answer(body: bytes, *headers: bytes, status: bytes = b"200 OK") -> Script:
    async def script(request: bytes, writer: asyncio.StreamWriter) -> None:
        head = [b"HTTP/1.1 " + status, *headers]
        if not any(h.lower().startswith((b"transfer-encoding", b"content-length"))
                   for h in headers):
            head.append(b"content-length: %d" % len(body))
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
    return script


def run(script: Script, scenario: Callable[[KeepAlivePool, ScriptedServer], Awaitable[None]],
        read_timeout_s: float = 5.0) -> ScriptedServer:
    async def main() -> ScriptedServer:
        server = ScriptedServer(script)
        pool = KeepAlivePool(await server.start(), None, 2.0, read_timeout_s, 8)
        try:
            await scenario(pool, server)
        finally:
            pool.close()
            server.server.close()
        return server
    return asyncio.run(main())


async def fetch(pool: KeepAlivePool, body: bytes | None = b'{"size": 1}',
                method: str = "POST") -> tuple[int, bytes]:
    headers = [("content-type", "application/json")]
    got = await pool.open(method, "/idx/_search?q=a%2Fb", headers, body)
    try:
        return got.status, await got.read()
    finally:
        got.release()


def test_sequential_requests_reuse_one_connection_and_arrive_as_sent() -> None:
    async def scenario(pool: KeepAlivePool, server: ScriptedServer) -> None:
        assert await fetch(pool) == (200, b'{"ok": true}')
        assert await fetch(pool) == (200, b'{"ok": true}')

    server = run(answer(b'{"ok": true}', b"content-type: application/json"), scenario)
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /idx/_search?q=a%2Fb HTTP/1.1\r\n")  # target as encoded
    assert b"\r\ncontent-type: application/json\r\n" in first
    assert first.endswith(b'content-length: 11\r\n\r\n{"size": 1}')


def test_concurrent_requests_each_get_their_own_connection() -> None:
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        await answer(request[-11:])(request, writer)

    async def scenario(pool: KeepAlivePool, server: ScriptedServer) -> None:
        bodies = [b'{"size": %d}' % n for n in range(3)]
        got = await asyncio.gather(*(fetch(pool, b) for b in bodies))
        assert [body for _, body in got] == bodies

    assert run(slow, scenario).connections == 3


def test_a_chunked_answer_is_read_whole() -> None:
    body = b"6\r\n{\"a\": \r\n3\r\n1}\n\r\n0\r\n\r\n"
    async def scenario(pool: KeepAlivePool, server: ScriptedServer) -> None:
        got = await pool.open("GET", "/", [], None)
        assert got.content_length is None
        assert await got.read() == b'{"a": 1}\n'
        got.release()
        assert await fetch(pool) == (200, b'{"a": 1}\n')  # and the connection is reused

    server = run(answer(body, b"transfer-encoding: chunked"), scenario)
    assert server.connections == 1
    assert b"content-length" not in server.requests[0]  # a GET without a body


def test_connection_close_is_honoured() -> None:
    async def scenario(pool: KeepAlivePool, server: ScriptedServer) -> None:
        assert await fetch(pool) == (200, b"{}")
        assert await fetch(pool) == (200, b"{}")

    assert run(answer(b"{}", b"connection: close"), scenario).connections == 2


def test_an_idle_connection_the_server_closed_is_replaced() -> None:
    async def answer_then_hang_up(request: bytes, writer: asyncio.StreamWriter) -> None:
        await answer(b"{}")(request, writer)
        writer.close()  # without saying so in the answer

    async def scenario(pool: KeepAlivePool, server: ScriptedServer) -> None:
        assert await fetch(pool) == (200, b"{}")
        await asyncio.sleep(0.05)  # the close reaches the pool while the connection is idle
        assert await fetch(pool) == (200, b"{}")

    assert run(answer_then_hang_up, scenario).connections == 2


def test_a_connection_dropped_mid_answer_is_an_error_and_not_reused() -> None:
    async def half(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial\"")
        await writer.drain()
        writer.close()

    async def scenario(pool: KeepAlivePool, server: ScriptedServer) -> None:
        with pytest.raises(UpstreamClosed, match="mid-answer"):
            await fetch(pool)
        assert pool._idle == []

    run(half, scenario)


def test_an_answer_ended_by_the_connection_is_complete() -> None:
    async def eof_delimited(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{\"whole\": 1}")
        await writer.drain()
        writer.close()

    async def scenario(pool: KeepAlivePool, server: ScriptedServer) -> None:
        assert await fetch(pool) == (200, b'{"whole": 1}')

    run(eof_delimited, scenario)


def test_a_silent_server_times_out_and_its_connection_is_closed() -> None:
    async def silent(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(2)

    async def scenario(pool: KeepAlivePool, server: ScriptedServer) -> None:
        with pytest.raises(UpstreamTimeout):
            await fetch(pool)
        assert isinstance(UpstreamTimeout(), asyncio.TimeoutError)
        assert pool._idle == []

    run(silent, scenario, read_timeout_s=0.2)


def test_a_refused_connection_is_unreachable() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        pool = KeepAlivePool(f"http://127.0.0.1:{port}", None, 2.0, 5.0, 8)
        with pytest.raises(UpstreamUnreachable, match="cannot connect"):
            await fetch(pool)
        # The slot is given back: a failed connect does not shrink the pool.
        assert pool._slots._value == 8

    asyncio.run(main())


def test_an_interim_100_continue_is_skipped() -> None:
    async def scenario(pool: KeepAlivePool, server: ScriptedServer) -> None:
        assert await fetch(pool) == (201, b"{}")

    async def continue_first(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await answer(b"{}", status=b"201 Created")(request, writer)

    run(continue_first, scenario)


def test_a_large_answer_streams_in_pieces_and_arrives_whole() -> None:
    big = bytes(range(256)) * (3 * HIGH_WATER // 256)

    async def scenario(pool: KeepAlivePool, server: ScriptedServer) -> None:
        got = await pool.open("GET", "/big", [], None)
        assert got.content_length == len(big)
        pieces = []
        async for piece in got.iter_chunks():
            await asyncio.sleep(0.01)  # a slow reader: the pool pauses reading meanwhile
            pieces.append(piece)
        got.release()
        assert b"".join(pieces) == big
        # Reading paused while the reader slept: no piece holds the whole answer.
        assert max(len(piece) for piece in pieces) < 2 * HIGH_WATER < len(big)
        assert await fetch(pool) == (200, big)  # the connection is reusable afterwards

    assert run(answer(big), scenario).connections == 1


def test_releasing_an_unread_answer_closes_its_connection() -> None:
    async def scenario(pool: KeepAlivePool, server: ScriptedServer) -> None:
        got = await pool.open("GET", "/big", [], None)
        got.release()
        assert pool._idle == []
        assert await fetch(pool) == (200, b"x" * (2 * HIGH_WATER))

    assert run(answer(b"x" * (2 * HIGH_WATER)), scenario).connections == 2


def test_requests_that_could_smuggle_a_second_request_are_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        _request_bytes("GET", "/", b"os", [("x-a", "1\r\nx-b: 2")], None)
    with pytest.raises(ValueError, match="request target"):
        _request_bytes("GET", "/ HTTP/1.1\r\n", b"os", [], None)


@pytest.mark.parametrize("trusted", [True, False])
def test_https_verifies_the_certificate(trusted: bool) -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    if trusted:
        ca.configure_trust(client_tls)

    async def main() -> None:
        server = ScriptedServer(answer(b"{}"))
        pool = KeepAlivePool(await server.start(server_tls), client_tls, 2.0, 5.0, 8)
        try:
            if trusted:
                assert await fetch(pool) == (200, b"{}")
                assert b"\r\nhost: localhost:" in server.requests[0]
            else:
                with pytest.raises(UpstreamUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
                    await fetch(pool)
        finally:
            pool.close()
            server.server.close()

    asyncio.run(main())


def test_the_url_scheme_and_tls_must_agree() -> None:
    with pytest.raises(ValueError, match="https"):
        KeepAlivePool("https://os:9200", None, 2.0, 5.0, 8)
    with pytest.raises(ValueError, match="https"):
        KeepAlivePool("http://os:9200", ssl.create_default_context(), 2.0, 5.0, 8)


def test_an_opensearch_restart_is_unreachable_then_served_again() -> None:
    async def scenario(pool: KeepAlivePool, server: ScriptedServer) -> None:
        assert await fetch(pool) == (200, b"{}")  # a pooled connection
        port = server.server.sockets[0].getsockname()[1]
        server.server.close()
        for writer in server.writers:  # OpenSearch going down closes its connections too
            writer.close()
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamUnreachable):
            await fetch(pool)
        restarted = await asyncio.start_server(server._serve, "127.0.0.1", port)
        try:
            assert await fetch(pool) == (200, b"{}")
        finally:
            restarted.close()

    run(answer(b"{}"), scenario)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_kept_connection_closed_unanswered_is_retried_for_idempotent_methods(
        method: str) -> None:
    served: dict[asyncio.StreamWriter, int] = {}

    async def hang_up_on_the_first_reuse(request: bytes, writer: asyncio.StreamWriter) -> None:
        served[writer] = served.get(writer, 0) + 1
        if served[writer] == 2 and len(served) == 1:
            writer.close()  # as if OpenSearch timed the idle connection out just now
            return
        await answer(b"{}")(request, writer)

    async def scenario(pool: KeepAlivePool, server: ScriptedServer) -> None:
        assert await fetch(pool) == (200, b"{}")
        if method == "GET":
            assert await fetch(pool, None, method) == (200, b"{}")
            assert server.connections == 2  # the retry went on a new connection
        else:
            with pytest.raises(UpstreamClosed):  # not idempotent: the client decides
                await fetch(pool, b"{}", method)

    run(hang_up_on_the_first_reuse, scenario)
