"""Stand-ins for OpenSearch and the workers in the gateway's unit tests (no services).

OpenSearch is a stub transport (tests/unit/opensearch_stub.py), the workers a stub
:class:`StubRerankClient`; the real services are exercised in tests/integration/.
"""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from typing import Any

import httpx
from starlette.testclient import TestClient

from gateway.app import create_app
from lexrerank.config import get_settings
from tests.unit.opensearch_stub import stub_upstream
from worker.protocol import ReasonCode, RerankFailed


def first_stage(n: int, total: int = 1234) -> dict[str, Any]:
    """An OpenSearch-shaped response with ``n`` hits d1..dn, BM25 scores n..1."""
    return {"took": 3, "timed_out": False,
            "hits": {"total": {"value": total, "relation": "eq"}, "max_score": float(n),
                     "hits": [{"_index": "i", "_id": f"d{i}", "_score": float(n - i + 1),
                               "_source": {"t": i}} for i in range(1, n + 1)]},
            "aggregations": {"a": {"value": 7}}}


def worker_result(order: list[str], scores: list[float], ranks: dict[str, int]
                  ) -> dict[str, Any]:
    return {"model": "m", "model_version": "v1", "query_truncated": False,
            "hits": [{"doc_id": d, "score": s, "first_stage_rank": ranks[d],
                      "first_stage_score": 10.0 - ranks[d], "model_score": s * 2,
                      "evidence": [{"sentence_index": 0, "sentence": f"s of {d}",
                                    "weight": 1.0}]}
                     for d, s in zip(order, scores, strict=True)]}


# ---------------------------------------------------------------------------- planning


class StubRerankClient:
    """Stands in for :class:`gateway.rerank_client.RerankClient`: answers with ``result`` or
    raises ``error`` (a fallback reason) with ``code``."""

    def __init__(self, result: dict[str, Any] | None = None, error: str | None = None,
                 code: ReasonCode = ReasonCode.TIMEOUT) -> None:
        self.result, self.error, self.code, self.calls = result, error, code, []
        self.begun = self.closed = 0

    def begin_rerank(self, query: str, model: str, explain: bool,
                     timeout_s: float) -> StubPending:
        self.begun += 1
        return StubPending(self, query, model, explain)

    async def answer(self, index: str, query: str, candidates: list, model: str,
                     explain: bool) -> dict[str, Any]:
        self.calls.append((index, query, candidates, model, explain))
        if self.error:
            raise RerankFailed(self.code, self.error)
        return self.result or {}

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class StubPending:
    """Stands in for :class:`gateway.rerank_client.PendingRerank`."""

    def __init__(self, workers: StubRerankClient, query: str, model: str, explain: bool) -> None:
        self.workers, self.query, self.model, self.explain = workers, query, model, explain

    async def finish(self, index: str, candidates: list) -> dict[str, Any]:
        return await self.workers.answer(index, self.query, candidates, self.model,
                                         self.explain)

    async def close(self, reason: str = "") -> None:
        self.workers.closed += 1


def stub_app(workers: StubRerankClient, handler) -> TestClient:
    settings = replace(get_settings(), opensearch_url="http://opensearch.test")
    upstream = stub_upstream(settings, handler)
    return TestClient(create_app(settings, upstream=upstream, rerank_client=workers))


def closed_port_url() -> str:
    """A loopback URL nothing listens on (an OpenSearch that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def opensearch_stub(seen: list[httpx.Request]):
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        # Streams, as a real transport gives (the proxy relays raw chunks).
        if request.url.path.endswith("/_search"):
            body = json.loads(request.content)
            payload = json.dumps(first_stage(body["size"])).encode()
            return httpx.Response(200, stream=httpx.ByteStream(payload),
                                  headers={"content-type": "application/json"})
        return httpx.Response(201, stream=httpx.ByteStream(b'{"echo":true}'),
                              headers={"content-type": "application/json", "x-os": "1"})
    return handler

