"""The gateway's OpenSearch client (aiohttp) against a scripted HTTP server on loopback.

The server reads one request at a time and answers with the raw bytes a test scripts, so the
cases a real OpenSearch rarely shows (a 400 after which it ignores the connection, chunked
answers, ``Connection: close``, a connection dropped mid-answer, a silent server) are
exercised on real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import ssl
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
import trustme

from gateway.opensearch_upstream import (
    UPSTREAM_ERRORS,
    OpenSearchUpstream,
    failed_to_connect,
    request_url,
)
from lexrerank.config import get_settings, safe_url

# (request head + body as received, its connection) -> what to do with the connection
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


def upstream_for(url: str, timeout_s: int = 5) -> OpenSearchUpstream:
    return OpenSearchUpstream(dataclasses.replace(
        get_settings(), opensearch_url=url, upstream_timeout_s=timeout_s,
        opensearch_user=None, opensearch_password=None))


def run(script: Script, scenario: Callable[[OpenSearchUpstream, ScriptedServer], Awaitable[None]],
        timeout_s: int = 5) -> ScriptedServer:
    async def main() -> ScriptedServer:
        server = ScriptedServer(script)
        upstream = upstream_for(await server.start(), timeout_s)
        try:
            await scenario(upstream, server)
        finally:
            await upstream.aclose()
            server.server.close()
        return server
    return asyncio.run(main())


async def fetch(upstream: OpenSearchUpstream, body: bytes | None = b'{"size": 1}',
                method: str = "POST", timeout_s: float | None = None,
                headers: list[tuple[str, str]] | None = None) -> tuple[int, bytes]:
    got = await upstream.request(method, "/idx/_search?q=a%2Fb",
                                 headers or [("content-type", "application/json")], body,
                                 timeout_s=timeout_s)
    return got.status, got.body


def test_sequential_requests_reuse_one_connection_and_arrive_as_sent() -> None:
    async def scenario(upstream: OpenSearchUpstream, server: ScriptedServer) -> None:
        assert await fetch(upstream) == (200, b'{"ok": true}')
        assert await fetch(upstream) == (200, b'{"ok": true}')

    server = run(answer(b'{"ok": true}', b"content-type: application/json"), scenario)
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /idx/_search?q=a%2Fb HTTP/1.1\r\n")  # target as encoded
    assert b"\r\ncontent-type: application/json\r\n" in first.lower()
    assert first.endswith(b'\r\n\r\n{"size": 1}')
    # Nothing of the client library's own: no user agent, no accept, no encoding offer.
    assert not {b"user-agent", b"accept", b"accept-encoding"} & {
        line.split(b":")[0].lower() for line in first.split(b"\r\n")[1:] if b":" in line}


def test_a_400_answer_never_leaves_its_connection_for_the_next_request() -> None:
    """Issue 15, item 1: OpenSearch answers a header over 8 KB with 400 and then ignores the
    connection (no ``Connection: close``); the next request must not wait on it."""
    poisoned: set[asyncio.StreamWriter] = set()

    async def like_opensearch(request: bytes, writer: asyncio.StreamWriter) -> None:
        if writer in poisoned:
            await asyncio.sleep(3600)  # reads nothing more, answers nothing
        if len(request.split(b"\r\n\r\n")[0]) > 8192:
            poisoned.add(writer)
            await answer(b'{"error":{"type":"too_long_http_header_exception"}}',
                         status=b"400 Bad Request")(request, writer)
            return
        await answer(b"{}")(request, writer)

    async def scenario(upstream: OpenSearchUpstream, server: ScriptedServer) -> None:
        big = [("x-big", "a" * 9000)]
        assert (await fetch(upstream, headers=big))[0] == 400
        started = time.monotonic()
        assert await fetch(upstream) == (200, b"{}")
        assert time.monotonic() - started < 1.0

    assert run(like_opensearch, scenario).connections == 2


def test_a_400_whose_body_comes_later_closes_its_connection_on_release() -> None:
    async def slow_400(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 4\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"{..}")
        await writer.drain()

    async def scenario(upstream: OpenSearchUpstream, server: ScriptedServer) -> None:
        assert await fetch(upstream) == (400, b"{..}")
        assert await fetch(upstream) == (400, b"{..}")

    assert run(slow_400, scenario).connections == 2


def test_a_query_error_of_another_class_keeps_the_connection() -> None:
    async def scenario(upstream: OpenSearchUpstream, server: ScriptedServer) -> None:
        assert (await fetch(upstream))[0] == 404
        assert (await fetch(upstream))[0] == 404

    assert run(answer(b"{}", status=b"404 Not Found"), scenario).connections == 1


def test_connection_close_is_honoured() -> None:
    async def scenario(upstream: OpenSearchUpstream, server: ScriptedServer) -> None:
        assert await fetch(upstream) == (200, b"{}")
        assert await fetch(upstream) == (200, b"{}")

    assert run(answer(b"{}", b"connection: close"), scenario).connections == 2


def test_a_silent_server_times_out_and_the_next_request_is_answered() -> None:
    silent_once: list[bool] = []

    async def silent_first(request: bytes, writer: asyncio.StreamWriter) -> None:
        if not silent_once:
            silent_once.append(True)
            await asyncio.sleep(3)
            return
        await answer(b"{}")(request, writer)

    async def scenario(upstream: OpenSearchUpstream, server: ScriptedServer) -> None:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError) as caught:
            await fetch(upstream)
        assert 0.9 < time.monotonic() - started < 2.5  # LEXRERANK_UPSTREAM_TIMEOUT_S=1
        assert isinstance(caught.value, UPSTREAM_ERRORS) and not failed_to_connect(caught.value)
        assert await fetch(upstream) == (200, b"{}")

    assert run(silent_first, scenario, timeout_s=1).connections == 2


def test_a_request_past_its_deadline_is_abandoned_and_its_late_answer_never_read() -> None:
    async def late_then_fast(request: bytes, writer: asyncio.StreamWriter) -> None:
        if b"late" in request:
            await asyncio.sleep(0.5)
            await answer(b'{"stale": true}')(request, writer)
            return
        await answer(b'{"fresh": true}')(request, writer)

    async def scenario(upstream: OpenSearchUpstream, server: ScriptedServer) -> None:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await fetch(upstream, b'{"late": 1}', timeout_s=0.2)
        assert time.monotonic() - started < 0.45
        await asyncio.sleep(0.5)  # the late answer arrives on the abandoned connection
        assert await fetch(upstream, b'{"now": 1}') == (200, b'{"fresh": true}')

    assert run(late_then_fast, scenario).connections == 2


def test_a_connection_dropped_mid_answer_is_an_error_and_not_reused() -> None:
    async def half(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial\"")
        await writer.drain()
        writer.close()

    async def scenario(upstream: OpenSearchUpstream, server: ScriptedServer) -> None:
        with pytest.raises(aiohttp.ClientPayloadError):
            await fetch(upstream)
        with pytest.raises(aiohttp.ClientPayloadError):
            await fetch(upstream)

    assert run(half, scenario).connections == 2


def test_a_chunked_answer_is_read_whole_and_the_connection_reused() -> None:
    body = b"6\r\n{\"a\": \r\n3\r\n1}\n\r\n0\r\n\r\n"

    async def scenario(upstream: OpenSearchUpstream, server: ScriptedServer) -> None:
        got = await upstream.open("GET", "/", [], None)
        assert got.content_length is None
        assert await got.read() == b'{"a": 1}\n'
        got.release()
        assert await fetch(upstream) == (200, b'{"a": 1}\n')

    assert run(answer(body, b"transfer-encoding: chunked"), scenario).connections == 1


def test_releasing_an_unread_answer_closes_its_connection() -> None:
    big = b"x" * (4 << 20)

    async def scenario(upstream: OpenSearchUpstream, server: ScriptedServer) -> None:
        got = await upstream.open("GET", "/big", [], None)
        got.release()
        assert await fetch(upstream) == (200, big)

    assert run(answer(big), scenario).connections == 2


def test_a_large_answer_streams_in_pieces() -> None:
    big = bytes(range(256)) * (3 << 12)

    async def scenario(upstream: OpenSearchUpstream, server: ScriptedServer) -> None:
        got = await upstream.open("GET", "/big", [], None)
        assert got.content_length == len(big)
        pieces = [piece async for piece in got.iter_chunks()]
        got.release()
        assert b"".join(pieces) == big and len(pieces) > 1

    run(answer(big), scenario)


def test_a_kept_connection_closed_unanswered_is_retried_for_idempotent_methods() -> None:
    served: dict[asyncio.StreamWriter, int] = {}

    async def hang_up_on_the_first_reuse(request: bytes, writer: asyncio.StreamWriter) -> None:
        served[writer] = served.get(writer, 0) + 1
        if served[writer] == 2 and len(served) == 1:
            writer.close()  # as if OpenSearch timed the idle connection out just now
            return
        await answer(b"{}")(request, writer)

    async def scenario(upstream: OpenSearchUpstream, server: ScriptedServer) -> None:
        assert await fetch(upstream) == (200, b"{}")
        assert await fetch(upstream, None, "GET") == (200, b"{}")

    assert run(hang_up_on_the_first_reuse, scenario).connections == 2


def test_a_refused_connection_is_unreachable() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        upstream = upstream_for(f"http://127.0.0.1:{port}")
        try:
            with pytest.raises(UPSTREAM_ERRORS) as caught:
                await fetch(upstream)
            assert failed_to_connect(caught.value)
        finally:
            await upstream.aclose()

    asyncio.run(main())


def test_the_target_goes_as_encoded_and_raw_bytes_are_percent_encoded() -> None:
    assert str(request_url("http://os:9200", "/a%2Fb/_doc/x?q=%C3%A4")) == \
        "http://os:9200/a%2Fb/_doc/x?q=%C3%A4"
    # A raw UTF-8 path (bytes as latin-1, as the ASGI server hands them over).
    raw = "/ä/_search".encode().decode("latin-1")
    assert str(request_url("http://os:9200", raw)) == "http://os:9200/%C3%A4/_search"


def test_credentials_in_the_url_are_the_gateways_own_and_never_printed() -> None:
    seen: list[bytes] = []

    async def record(request: bytes, writer: asyncio.StreamWriter) -> None:
        seen.append(request)
        await answer(b"{}")(request, writer)

    async def main() -> None:
        server = ScriptedServer(record)
        url = await server.start()
        upstream = upstream_for(url.replace("//", "//admin:s%3Acret@"))
        try:
            assert "s%3Acret" not in upstream.base_url and "admin" not in upstream.where
            await fetch(upstream)  # proxied: only the client's credentials (none here)
            await upstream.root()  # the gateway's own call: the URL's credentials
        finally:
            await upstream.aclose()
            server.server.close()

    asyncio.run(main())
    assert b"authorization" not in seen[0].lower()
    token = base64.b64encode(b"admin:s:cret")  # the URL's escapes decoded
    assert b"\r\nauthorization: basic " + token.lower() + b"\r\n" in seen[1].lower()


def test_the_503_and_504_reasons_never_show_the_urls_credentials() -> None:
    from gateway.proxy import upstream_failure

    settings = dataclasses.replace(get_settings(),
                                   opensearch_url="https://admin:hunter2@os.example:9200")
    for exc in (TimeoutError(), aiohttp.ClientConnectionError("refused")):
        reason = json.loads(upstream_failure(exc, settings).body)["error"]["reason"]
        assert "hunter2" not in reason and "admin" not in reason
        assert "https://***@os.example:9200" in reason


def test_safe_url_drops_userinfo_only() -> None:
    assert safe_url("https://admin:secret@os.example:9200/x") == "https://***@os.example:9200/x"
    assert safe_url("http://127.0.0.1:9200") == "http://127.0.0.1:9200"
    assert safe_url("http://user@host") == "http://***@host"


@pytest.mark.parametrize("trusted", [True, False])
def test_https_verifies_the_certificate(trusted: bool) -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)

    async def main() -> None:
        server = ScriptedServer(answer(b"{}"))
        url = await server.start(server_tls)
        with ca.cert_pem.tempfile() as ca_file:
            settings = dataclasses.replace(get_settings(), opensearch_url=url,
                                           opensearch_ca_certs=ca_file if trusted else None,
                                           opensearch_verify_certs=True)
            upstream = OpenSearchUpstream(settings)
            try:
                if trusted:
                    assert await fetch(upstream) == (200, b"{}")
                else:
                    with pytest.raises(aiohttp.ClientConnectorCertificateError):
                        await fetch(upstream)
            finally:
                await upstream.aclose()
                server.server.close()

    asyncio.run(main())
