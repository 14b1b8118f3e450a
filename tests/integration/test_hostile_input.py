"""Hostile and malformed input against a real gateway (uvicorn) in front of the real OpenSearch.

A private gateway with API keys on, small limits (so the tests are fast) and debug logging;
no worker, so reranked searches fall back within a short deadline. Every request must get a
valid answer or a clear 4xx in OpenSearch's error shape, never a 5xx; the process must stay
up; credentials must never reach the log.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opensearchpy import OpenSearch

from lexrerank.config import get_settings
from tests.integration.conftest import Stack, _wait_for, unique_index

API_KEY = f"test-key-{uuid.uuid4().hex}"
MAX_BODY = 65_536


@pytest.fixture(scope="module")
def small_index(client: OpenSearch):
    name = unique_index("test-hostile")
    client.indices.delete(index=name, ignore_unavailable=True)
    for i, text in enumerate(["A minor may rescind a contract", "The guardian of an adult ward",
                              "Domicile is the principal place of living"]):
        client.index(index=name, id=str(i), body={"content": text}, refresh=True)
    yield name
    client.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, small_index: str):
    own = Stack(tmp_path_factory.mktemp("hostile"), "paraformer", small_index,
                get_settings().redis_url, {
                    "LEXRERANK_API_KEYS": API_KEY, "LEXRERANK_LOG_LEVEL": "debug",
                    "LEXRERANK_RERANK_TIMEOUT_MS": "150", "LEXRERANK_MAX_TIMEOUT_MS": "300",
                    "LEXRERANK_MAX_BODY_BYTES": str(MAX_BODY)})
    own.start_gateway()
    try:
        yield own
    finally:
        own.gateway.stop()


def post(gw: Stack, path: str, *, key: str | None = API_KEY, **kwargs) -> httpx.Response:
    headers = {**kwargs.pop("headers", {}), **({"X-API-Key": key} if key else {})}
    return httpx.post(f"{gw.url}{path}", headers=headers, timeout=30, **kwargs)


def assert_clear_4xx(resp: httpx.Response, status: int | None = None) -> dict:
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:500])
    if status is not None:
        assert resp.status_code == status, resp.text[:500]
    body = resp.json()
    assert body["status"] == resp.status_code
    assert body["error"]["type"] and body["error"]["reason"]
    return body


def test_malformed_bodies_get_clear_4xx(gateway: Stack, small_index: str) -> None:
    path = f"/{small_index}/_search?search_pipeline=lexrerank"
    cases = {
        "invalid utf-8": (b'{"query": {"match": {"content": "\xff\xfe"}}}', 400),
        "invalid json": (b'{"query": ', 400),
        "deep nesting": (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 413),
        "deep but small": (b'{"a": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400),
        "huge body": (b'{"query": {"match": {"content": "' + b"a " * MAX_BODY + b'"}}}', 413),
    }
    for name, (raw, status) in cases.items():
        resp = post(gateway, path, content=raw, headers={"content-type": "application/json"})
        assert_clear_4xx(resp, status), name

    def chunks():
        for _ in range(40):
            yield b" " * 4096

    assert_clear_4xx(post(gateway, path, content=chunks()), 413)


def test_absurd_options_unknown_models_and_indexes(gateway: Stack, small_index: str) -> None:
    match = {"match": {"content": "minor"}}
    bodies = [
        {"query": match, "from": -1},
        {"query": match, "from": 10**12, "size": 10},
        {"query": match, "size": 2**63},
        {"query": match, "ext": {"rerank": {"window_size": 10**9}}},
        {"query": match, "ext": {"rerank": {"timeout_ms": 10**9}}},
        {"query": match, "ext": {"rerank": {"timeout_ms": "soon"}}},
        {"query": match, "ext": {"rerank": {"model": "no-such-model"}}},
        {"query": {"match": {"content": "word " * 5000}}},
    ]
    for body in bodies:
        assert_clear_4xx(post(gateway, f"/{small_index}/_search?search_pipeline=lexrerank",
                              json=body), 400)
    error = assert_clear_4xx(post(gateway, "/no-such-index-xyz/_search?search_pipeline="
                                  "lexrerank", json={"query": match}), 404)
    assert error["error"]["type"] == "index_not_found_exception"


def test_api_key_is_required_and_health_is_open(gateway: Stack, small_index: str) -> None:
    body = {"query": {"match": {"content": "minor"}}}
    assert_clear_4xx(post(gateway, f"/{small_index}/_search", key=None, json=body), 401)
    assert_clear_4xx(post(gateway, f"/{small_index}/_search", key="wrong", json=body), 401)
    assert post(gateway, f"/{small_index}/_search", json=body).status_code == 200
    assert httpx.get(f"{gateway.url}/_lexrerank/health", timeout=10).status_code == 200


def test_credentials_are_never_logged(gateway: Stack, small_index: str) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    basic = httpx.BasicAuth("someone", secret)
    rid = f"creds-{uuid.uuid4().hex[:8]}"
    body = {"query": {"match": {"content": "minor"}}}
    for key in (API_KEY, "wrong-key-" + secret):
        httpx.post(f"{gateway.url}/{small_index}/_search?search_pipeline=lexrerank",
                   json=body, auth=basic, headers={"X-API-Key": key, "X-Request-Id": rid},
                   timeout=30)
    httpx.get(f"{gateway.url}/_cat/indices", auth=basic,
              headers={"X-API-Key": API_KEY, "X-Request-Id": rid}, timeout=30)
    lines = gateway.gateway.log.read_text(errors="replace").splitlines()
    ours = [json.loads(line) for line in lines if rid in line]
    assert len(ours) >= 3  # the requests were logged (at debug level) ...
    text = "\n".join(lines)
    encoded = basic._auth_header.split(" ", 1)[1]
    for needle in (secret, encoded, API_KEY):  # ... but never their credentials
        assert needle not in text


# ---------------------------------------------------------------------------- fuzzing

json_scalars = st.none() | st.booleans() | st.integers() \
    | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=12)
bodies = st.fixed_dictionaries({}, optional={
    "query": st.fixed_dictionaries({}, optional={
        "match": st.dictionaries(st.sampled_from(["content", "caption"]) | st.text(max_size=6),
                                 json_values, max_size=2)}) | json_values,
    "from": json_values, "size": json_values, "sort": json_values,
    "search_pipeline": st.sampled_from(["lexrerank", "_none"]) | json_values,
    "ext": st.fixed_dictionaries({}, optional={"rerank": st.fixed_dictionaries({}, optional={
        "query_context": json_values, "window_size": json_values, "model": json_values,
        "timeout_ms": json_values, "explain": json_values})}) | json_values})
params = st.dictionaries(
    st.sampled_from(["search_pipeline", "from", "size", "q", "sort", "scroll", "routing"]),
    st.sampled_from(["lexrerank", "_none", "-5", "10", "1e9", "_score"]) | st.text(max_size=10),
    max_size=4)


GATEWAY_5XX = ("opensearch_unavailable_exception", "gateway_timeout_exception")


def direct_status(index: str, body, query: dict) -> int:
    """The status OpenSearch itself gives the first stage of this search (no pipeline)."""
    params = {k: v for k, v in query.items() if k != "search_pipeline"}
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "search_pipeline"}
        if isinstance(body.get("ext"), dict):
            body["ext"] = {k: v for k, v in body["ext"].items() if k != "rerank"} or None
            if body["ext"] is None:
                del body["ext"]
        content = json.dumps(body).encode()
    else:
        content = body
    resp = httpx.post(f"{get_settings().opensearch_url}/{index}/_search", params=params,
                      content=content, headers={"content-type": "application/json"}, timeout=30)
    return resp.status_code


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=bodies | json_values, query=params,
       raw=st.none() | st.binary(max_size=300))
def test_fuzzed_searches_never_get_a_5xx(gateway: Stack, small_index: str, body, query,
                                          raw: bytes | None) -> None:
    if raw is not None:
        resp = post(gateway, f"/{small_index}/_search", params=query, content=raw,
                    headers={"content-type": "application/json"})
    else:
        resp = post(gateway, f"/{small_index}/_search", params=query, json=body)
    if resp.status_code >= 500:
        # Only OpenSearch's own 5xx may pass (the gateway relays its answers unchanged: e.g.
        # OpenSearch 2.19 answers {"match": {"content": []}} with a 500): the same search sent
        # straight to OpenSearch must fail the same way.
        assert resp.json()["error"]["type"] not in GATEWAY_5XX, resp.text[:300]
        assert direct_status(small_index, body if raw is None else raw, query) >= 500, \
            (resp.status_code, resp.text[:300])
    if resp.status_code >= 400 and resp.headers.get("content-type", "").startswith(
            "application/json"):
        error = resp.json()
        assert "error" in error and error.get("status") == resp.status_code
    assert gateway.gateway.proc.poll() is None  # the process never dies


def test_gateway_still_serves_after_the_fuzzing(gateway: Stack, small_index: str) -> None:
    _wait_for(gateway.gateway_ready, "gateway", gateway.gateway.proc, gateway.gateway.log, 10)
    resp = post(gateway, f"/{small_index}/_search", json={"query": {"match": {
        "content": "minor"}}})
    assert resp.status_code == 200 and resp.json()["hits"]["total"]["value"] >= 1
