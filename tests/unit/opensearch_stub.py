"""A stand-in OpenSearch for in-process gateway tests: a real HTTP server on loopback.

The gateway talks to OpenSearch over its own sockets (gateway.opensearch_upstream, aiohttp),
so the stub is a real server (aiohttp.web in a background thread) rather than a mocked
transport; what it answers comes from a handler written in httpx's terms,
``handler(httpx.Request) -> httpx.Response``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace

import httpx
from aiohttp import web

from gateway.opensearch_upstream import OpenSearchUpstream
from lexrerank.config import Settings

Handler = Callable[[httpx.Request], httpx.Response]
# Set by aiohttp.web itself; a handler's copy would be sent twice.
_SERVER_SET = {"content-length", "transfer-encoding", "date", "server", "connection"}


class StubOpenSearch:
    """Serves ``handler`` on ``127.0.0.1:<free port>`` until the process ends."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("the stub OpenSearch did not start")

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._answer)
        runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        ready.set()
        self.loop.run_forever()

    async def _answer(self, request: web.Request) -> web.Response:
        # The path and query exactly as they arrived (raw: a%2Fb stays encoded).
        sent = httpx.Request(request.method, "http://opensearch.test" + request.raw_path,
                             headers=list(request.raw_headers), content=await request.read())
        answer = self.handler(sent)
        body = answer.read()
        headers = [(k, v) for k, v in answer.headers.multi_items()
                   if k.lower() not in _SERVER_SET]
        return web.Response(status=answer.status_code, body=body, headers=headers)


def stub_upstream(settings: Settings, handler: Handler) -> OpenSearchUpstream:
    """The gateway's OpenSearch pool, pointed at a new stub serving ``handler``."""
    stub = StubOpenSearch(handler)
    return OpenSearchUpstream(replace(settings, opensearch_url=stub.url))
