"""Issue 15, the upstream side: real gateways (uvicorn) on free ports, raw sockets where the
HTTP matters, the real OpenSearch, and for the deadlines a TCP server that never answers.

- a header OpenSearch refuses (400 ``too_long_http_header_exception``, after which it ignores
  the connection) must not hang the requests after it;
- lone surrogates and huge integers are 400s in OpenSearch's shape, and the surrogate never
  reaches a worker (its rerank is never published);
- gzip bodies pass through, and are decoded (bounded) for the pipeline;
- credentials in ``OPENSEARCH_URL`` are never printed;
- a reranked search answers within its deadline whatever OpenSearch does; a pass-through
  request within ``LEXRERANK_UPSTREAM_TIMEOUT_S``;
- every Redis client (metrics scrape, worker presence, reindex progress, the gateway's rerank
  client, Celery) works over TLS with a private CA.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opensearchpy import OpenSearch

from lexrerank.config import get_settings
from tests.integration.conftest import (
    GATEWAY_INDEX,
    Stack,
    _wait_for,
    free_port,
)

DEADLINE_MARGIN_S = 0.5  # merge, JSON, scheduling on a busy 2-core machine
RAW_TIMEOUT_S = 10.0  # a hang shows as a failure in seconds, not 300


# ------------------------------------------------------------------------------ helpers


def raw_exchange(port: int, request: bytes, timeout_s: float = RAW_TIMEOUT_S
                 ) -> tuple[int, bytes, float]:
    """Send ``request`` on a new connection; (status, body, seconds) of the answer."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(head.split(b" ")[1]), body, time.monotonic() - started


def rerank_body(text: str, timeout_ms: int = 1000, **extra) -> dict:
    return {"size": 5, "query": {"multi_match": {"query": text, "fields": ["caption", "text"]}},
            "ext": {"rerank": {"query_context": {"query_text": text}, "window_size": 20,
                               "timeout_ms": timeout_ms}}, **extra}


def pipeline(url: str, index: str) -> str:
    return f"{url}/{index}/_search?search_pipeline=lexrerank"


def assert_opensearch_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text[:500]
    body = resp.json()
    assert body["status"] == status
    assert body["error"]["type"] and body["error"]["reason"]
    assert body["error"]["root_cause"][0]["type"] == body["error"]["type"]
    return body


def start_gateway_only(tmp: Path, env: dict[str, str]) -> Stack:
    """A gateway without a worker (private queues: what it publishes stays queued)."""
    own = Stack(tmp, "paraformer", GATEWAY_INDEX, get_settings().redis_url, env)
    own.gateway.start()

    def answering() -> bool:  # any answer: /_lexrerank/health is 503 when OpenSearch is not
        try:
            return httpx.get(f"{own.url}/_lexrerank/health", timeout=5).status_code > 0
        except httpx.HTTPError:
            return False

    _wait_for(answering, "gateway", own.gateway.proc, own.gateway.log, 60)
    return own


def queued(stack: Stack) -> int:
    from lexrerank.redis_tls import redis_client

    return int(redis_client(get_settings(), stack.redis_url).llen(stack.queue))


class SilentServer:
    """Accepts TCP connections and never answers (OpenSearch hung, or a black hole)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def no_worker(tmp_path_factory: pytest.TempPathFactory, gateway_service) -> Iterator[Stack]:
    own = start_gateway_only(tmp_path_factory.mktemp("no-worker"),
                             {"LEXRERANK_RERANK_TIMEOUT_MS": "300"})
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture(scope="module")
def silent_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway whose OpenSearch accepts and never answers; credentials in its URL."""
    server = SilentServer()
    own = start_gateway_only(tmp_path_factory.mktemp("silent"), {
        "OPENSEARCH_URL": f"http://admin:hunter2-{uuid.uuid4().hex[:6]}@127.0.0.1:{server.port}",
        "LEXRERANK_UPSTREAM_TIMEOUT_S": "2"})
    try:
        yield own
    finally:
        own.stop()
        server.close()


# ------------------------------------------------------------------------------ item 1


def test_a_header_opensearch_refuses_does_not_hang_the_next_requests(stack: Stack) -> None:
    port = stack.port
    text = "A minor must obtain the consent of the legal representative"
    warm = httpx.post(pipeline(stack.url, GATEWAY_INDEX), json=rerank_body(text, 20_000),
                      timeout=60)
    assert warm.json()["ext"]["rerank"]["status"] == "ok", warm.text[:300]
    for _ in range(3):  # more than once: a poisoned pooled connection would be drawn again
        status, body, _ = raw_exchange(port, b"GET /_cluster/health HTTP/1.1\r\nHost: x\r\n"
                                       b"X-Big: " + b"a" * 9000 + b"\r\n\r\n")
        assert status == 400 and b"too_long_http_header_exception" in body, body[:300]
        for _ in range(4):
            status, body, seconds = raw_exchange(
                port, b"GET /_cluster/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 200 and seconds < 2.0, (status, seconds, body[:200])
    started = time.monotonic()
    resp = httpx.post(pipeline(stack.url, GATEWAY_INDEX), json=rerank_body(text, 1000),
                      timeout=RAW_TIMEOUT_S)
    elapsed = time.monotonic() - started
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["ext"]["rerank"]["status"] == "ok", resp.json()["ext"]
    assert elapsed < 1.0 + DEADLINE_MARGIN_S


# ------------------------------------------------------------------------------ item 3


@pytest.mark.parametrize("encoded", [b'"\\ud800 minor"', b'"\xed\xa0\x80 minor"'],
                         ids=["escape", "raw-bytes"])
def test_a_lone_surrogate_is_a_400_and_never_reaches_a_worker(no_worker: Stack,
                                                              encoded: bytes) -> None:
    before = queued(no_worker)
    body = json.dumps(rerank_body("PLACEHOLDER", 300)).encode().replace(b'"PLACEHOLDER"',
                                                                        encoded)
    resp = httpx.post(pipeline(no_worker.url, GATEWAY_INDEX), content=body,
                      headers={"content-type": "application/json"}, timeout=RAW_TIMEOUT_S)
    assert "surrogate" in assert_opensearch_error(resp, 400)["error"]["reason"]
    assert queued(no_worker) == before  # no rerank task was published for it
    # The control: a valid search does publish one (nobody consumes this stack's queue).
    ok = httpx.post(pipeline(no_worker.url, GATEWAY_INDEX), json=rerank_body("minor", 300),
                    timeout=RAW_TIMEOUT_S)
    assert ok.status_code == 200 and ok.json()["ext"]["rerank"]["status"] == "fallback"
    assert queued(no_worker) == before + 1


def test_a_huge_integer_is_a_400_for_the_pipeline_and_opensearchs_answer_otherwise(
        no_worker: Stack) -> None:
    huge = b"1" * 5000
    body = (b'{"size": 1, "query": {"term": {"law_id": ' + huge + b'}}, "ext": {"rerank": '
            b'{"query_context": {"query_text": "minor"}}}}')
    resp = httpx.post(pipeline(no_worker.url, GATEWAY_INDEX), content=body,
                      headers={"content-type": "application/json"}, timeout=RAW_TIMEOUT_S)
    assert "digits" in assert_opensearch_error(resp, 400)["error"]["reason"]
    # Not reranked (an escape routes it through the gateway's parse): OpenSearch answers.
    plain = b'{"size": 1, "query": {"term": {"law_id": ' + huge + b'}}, "x": "\\u0041"}'
    via = httpx.post(f"{no_worker.url}/{GATEWAY_INDEX}/_search", content=plain,
                     headers={"content-type": "application/json"}, timeout=RAW_TIMEOUT_S)
    direct = httpx.post(f"{get_settings().opensearch_url}/{GATEWAY_INDEX}/_search",
                        content=plain, headers={"content-type": "application/json"})
    assert (via.status_code, via.json()["error"]["type"]) == (
        direct.status_code, direct.json()["error"]["type"])


def test_stored_fields_none_gets_a_clear_reason(no_worker: Stack) -> None:
    resp = httpx.post(pipeline(no_worker.url, GATEWAY_INDEX),
                      json=rerank_body("minor", 300, stored_fields="_none_"),
                      timeout=RAW_TIMEOUT_S)
    assert "stored_fields" in assert_opensearch_error(resp, 400)["error"]["reason"]


# ------------------------------------------------------------------------------ gzip


def test_gzip_bodies_pass_through_and_are_decoded_for_the_pipeline(
        no_worker: Stack, client: OpenSearch) -> None:
    search = {"size": 3, "query": {"match": {"text": "minor"}}}
    packed = gzip.compress(json.dumps(search).encode())
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    via = httpx.post(f"{no_worker.url}/{GATEWAY_INDEX}/_search", content=packed,
                     headers=headers, timeout=RAW_TIMEOUT_S)
    assert via.status_code == 200, via.text[:300]
    direct = client.search(index=GATEWAY_INDEX, body=search)
    assert [h["_id"] for h in via.json()["hits"]["hits"]] == \
        [h["_id"] for h in direct["hits"]["hits"]]
    # A document write, compressed: OpenSearch decodes it itself.
    doc_index = f"test-gzip-{os.getpid()}"
    try:
        put = httpx.put(f"{no_worker.url}/{doc_index}/_doc/1?refresh=true",
                        content=gzip.compress(b'{"text": "gzip"}'), headers=headers,
                        timeout=RAW_TIMEOUT_S)
        assert put.status_code == 201, put.text[:300]
        assert client.get(index=doc_index, id="1")["_source"] == {"text": "gzip"}
    finally:
        client.indices.delete(index=doc_index, ignore_unavailable=True)
    reranked = httpx.post(pipeline(no_worker.url, GATEWAY_INDEX),
                          content=gzip.compress(json.dumps(rerank_body("minor", 300)).encode()),
                          headers=headers, timeout=RAW_TIMEOUT_S)
    assert reranked.status_code == 200, reranked.text[:300]
    assert reranked.json()["ext"]["rerank"]["status"] == "fallback"  # parsed: no worker here
    bomb = gzip.compress(json.dumps(rerank_body("minor")).encode()[:-1]
                         + b", \"pad\": \"" + b" " * (8 << 20) + b"\"}")
    assert len(bomb) < 64 * 1024
    resp = httpx.post(pipeline(no_worker.url, GATEWAY_INDEX), content=bomb, headers=headers,
                      timeout=RAW_TIMEOUT_S)
    assert "decompresses" in assert_opensearch_error(resp, 413)["error"]["reason"]


# ------------------------------------------------------------------------------ deadlines


def test_a_reranked_search_answers_504_within_its_deadline_when_opensearch_hangs(
        silent_upstream: Stack) -> None:
    started = time.monotonic()
    resp = httpx.post(pipeline(silent_upstream.url, GATEWAY_INDEX),
                      json=rerank_body("minor", 1000), timeout=RAW_TIMEOUT_S)
    elapsed = time.monotonic() - started
    body = assert_opensearch_error(resp, 504)
    assert "timeout_ms=1000" in body["error"]["reason"]
    assert 0.9 < elapsed < 1.0 + DEADLINE_MARGIN_S


def test_a_pass_through_request_answers_504_within_the_upstream_timeout(
        silent_upstream: Stack) -> None:
    started = time.monotonic()
    status, body, _ = raw_exchange(silent_upstream.port,
                                   b"GET /_cat/indices HTTP/1.1\r\nHost: x\r\n\r\n")
    elapsed = time.monotonic() - started
    assert status == 504 and 1.9 < elapsed < 2.0 + DEADLINE_MARGIN_S, (status, elapsed)
    error = json.loads(body)["error"]
    assert error["type"] == "gateway_timeout_exception"
    assert "LEXRERANK_UPSTREAM_TIMEOUT_S=2" in error["reason"]


def test_credentials_in_the_opensearch_url_are_never_printed(silent_upstream: Stack) -> None:
    password = silent_upstream.env["OPENSEARCH_URL"].split(":")[2].split("@")[0]
    _, timeout_body, _ = raw_exchange(silent_upstream.port,
                                      b"GET /x/_search HTTP/1.1\r\nHost: x\r\n\r\n")
    health = httpx.get(f"{silent_upstream.url}/_lexrerank/health", timeout=RAW_TIMEOUT_S)
    assert health.json()["opensearch_url"].startswith("http://***@127.0.0.1:")
    ready = httpx.get(f"{silent_upstream.url}/_lexrerank/readyz", timeout=RAW_TIMEOUT_S)
    assert ready.status_code == 503 and "***@127.0.0.1" in ready.text
    for printed in (timeout_body.decode(), health.text, ready.text,
                    silent_upstream.gateway.log.read_text(errors="replace")):
        assert password not in printed and "admin" not in printed


# ------------------------------------------------------------------------------ Redis TLS


class TlsRedis:
    """A private redis-server that speaks only TLS, with a certificate from a private CA."""

    def __init__(self, tmp: Path) -> None:
        import trustme

        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file, key, chain = tmp / "ca.pem", tmp / "server.key", tmp / "server.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_pem.write_to_path(str(key))
        cert.cert_chain_pems[0].write_to_path(str(chain))
        self.port = free_port()
        self.url = f"rediss://127.0.0.1:{self.port}/0"
        self.log = tmp / "redis-tls.log"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(chain), "--tls-key-file", str(key),
             "--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients", "no",
             "--save", "", "--appendonly", "no"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def settings(self):
        return dataclasses.replace(get_settings(), redis_url=self.url,
                                   redis_ssl_ca_certs=str(self.ca_file))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    from lexrerank.redis_tls import redis_client

    server = TlsRedis(tmp_path_factory.mktemp("redis-tls"))

    def up() -> bool:
        try:
            return bool(redis_client(server.settings(), socket_connect_timeout=0.5).ping())
        except Exception:  # noqa: BLE001 - not listening yet
            return False

    try:
        _wait_for(up, "TLS redis-server", server.proc, server.log, 20)
        yield server
    finally:
        server.stop()


def test_every_redis_client_speaks_tls_with_a_private_ca(
        tls_redis: TlsRedis, tmp_path_factory: pytest.TempPathFactory, gateway_service,
        gateway_model: str, client: OpenSearch, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import generate_latest
    from redis.exceptions import ConnectionError as RedisConnectionError

    from gateway.metrics_exposition import scrape_registry
    from indexer.reindex_job import ReindexJob, ReindexOptions
    from lexrerank.redis_tls import redis_client
    from lexrerank.reindex_progress import new_record, read_progress
    from worker.presence import KEY_PREFIX

    settings = tls_redis.settings()
    # The control: without the private CA the server's certificate is refused.
    with pytest.raises(RedisConnectionError):
        redis_client(dataclasses.replace(settings, redis_ssl_ca_certs=None),
                     socket_connect_timeout=1).ping()
    tls = redis_client(settings, socket_timeout=5)

    # Reindex progress (indexer/reindex_job.py's own client).
    alias = f"test-tls-{uuid.uuid4().hex[:8]}"
    job = ReindexJob(client, settings, ReindexOptions(alias=alias, corpus=Path("unused"),
                                                      models=["paraformer"]))
    job.record = new_record(alias, f"{alias}-v1", ["paraformer"])
    job._progress(state="embedding", documents_total=7)
    assert read_progress(tls, alias)["documents_total"] == 7

    # The gateway's metrics scrape (queue depths and reindex jobs read at scrape time).
    scraped = generate_latest(scrape_registry(settings)).decode()
    assert "lexrerank_queue_depth_scrape_ok 1.0" in scraped
    assert f'lexrerank_reindex_documents{{alias="{alias}"' in scraped

    # A worker (Celery broker and results, presence beat) and a gateway (rerank client) on
    # the TLS Redis: a reranked search answers ok and the worker's presence is there.
    monkeypatch.setenv("LEXRERANK_REDIS_SSL_CA_CERTS", str(tls_redis.ca_file))
    own = Stack(tmp_path_factory.mktemp("tls-stack"), gateway_model, GATEWAY_INDEX,
                tls_redis.url)
    try:
        own.start()
        resp = httpx.post(pipeline(own.url, GATEWAY_INDEX),
                          json=rerank_body("minor consent", 20_000), timeout=60)
        assert resp.json()["ext"]["rerank"]["status"] == "ok", resp.text[:300]

        def present() -> bool:
            return any(True for _ in tls.scan_iter(match=f"{KEY_PREFIX}*"))

        _wait_for(present, "worker presence over TLS", own.worker.proc, own.worker.log, 30)
    finally:
        own.stop()
