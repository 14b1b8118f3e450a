"""Gateway input limits (gateway/limits.py) and API-key auth (gateway/auth.py), in process.

OpenSearch and the workers are stubs here (tests/unit/gateway/stubs.py); the same
behaviour against the real services is in tests/integration/test_hostile_input.py.
"""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.limits import SHIPPED_MODELS, Limits, json_depth_exceeds, parse_search_body
from gateway.rerank_request import RequestError, plan_search
from lexrerank.config import get_settings
from tests.unit.gateway.stubs import StubRerankClient, opensearch_stub
from tests.unit.opensearch_stub import stub_upstream

QUERY = {"size": 2, "query": {"match": {"c": "minor"}}}


def app_with(seen: list[httpx.Request], **overrides) -> TestClient:
    settings = replace(get_settings(), opensearch_url="http://opensearch.test", **overrides)
    upstream = stub_upstream(settings, opensearch_stub(seen))
    return TestClient(create_app(settings, upstream=upstream, rerank_client=StubRerankClient(
        result={"hits": [], "model": "paraformer"})))


def assert_opensearch_error(resp: httpx.Response, status: int, words: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == status
    assert body["error"]["root_cause"][0]["type"] == body["error"]["type"]
    assert words in body["error"]["reason"], body


# ---------------------------------------------------------------------------- bodies


def test_declared_body_over_the_search_limit_is_a_413() -> None:
    seen: list[httpx.Request] = []
    big = json.dumps(QUERY).encode() + b" " * 101
    json_type = {"content-type": "application/json"}
    with app_with(seen, max_body_bytes=100, default_pipeline_indexes=("d",)) as http:
        # Bodies the gateway parses: the pipeline named in the query string or the body,
        # or an index with the pipeline by default.
        for path, body in (("/i/_search?search_pipeline=lexrerank", big),
                           ("/i/_search", b'{"search_pipeline": "lexrerank"}' + b" " * 101),
                           ("/i/_search", b'{"search\\u005fpipeline": "x"}' + b" " * 101),
                           ("/d/_search", big)):
            resp = http.post(path, content=body, headers=json_type)
            assert_opensearch_error(resp, 413, "LEXRERANK_MAX_BODY_BYTES")
        assert not seen  # none of them reached OpenSearch
        # A plain search is OpenSearch's to answer whatever its size (up to the proxy limit),
        # and so is one that turns an index's default pipeline off.
        for path in ("/i/_search", "/d/_search?search_pipeline=_none"):
            assert http.post(path, content=big, headers=json_type).status_code == 200
        # Pass-through paths have their own, larger limit.
        assert http.put("/i/_doc/1", content=b"{}" + b" " * 200).status_code == 201
    assert len(seen) == 3


def test_chunked_body_over_the_limit_is_a_413() -> None:
    seen: list[httpx.Request] = []

    def chunks(count: int = 10):
        for _ in range(count):
            yield b" " * 50

    with app_with(seen, max_body_bytes=100, max_proxy_body_bytes=200) as http:
        assert_opensearch_error(http.post("/i/_search?search_pipeline=lexrerank",
                                          content=chunks(3)), 413, "LEXRERANK_MAX_BODY_BYTES")
        assert_opensearch_error(http.post("/i/_search", content=chunks()), 413,
                                "LEXRERANK_MAX_PROXY_BODY_BYTES")
        assert_opensearch_error(http.post("/i/_bulk", content=chunks()), 413,
                                "LEXRERANK_MAX_PROXY_BODY_BYTES")


@pytest.mark.parametrize("depth, in_url", [(65, False), (200, False), (100_000, True)])
def test_deep_nesting_is_a_400_with_the_pipeline(depth: int, in_url: bool) -> None:
    # A body too deep for Python's own parser cannot say it names the pipeline: the URL does.
    raw = b"[" * depth + b"]" * depth
    body = b'{"search_pipeline": "lexrerank", "x": ' + raw + b"}"
    with app_with([]) as http:
        resp = http.post("/i/_search" + ("?search_pipeline=lexrerank" if in_url else ""),
                         content=body, headers={"content-type": "application/json"})
    assert_opensearch_error(resp, 400, "deeper than 64")


def test_deep_nesting_without_the_pipeline_goes_to_opensearch_unchanged() -> None:
    seen: list[httpx.Request] = []
    raw = b'{"query": ' + b"[" * 5000 + b"]" * 5000 + b"}"

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(400, stream=httpx.ByteStream(b'{"status": 400}'))

    settings = replace(get_settings(), opensearch_url="http://opensearch.test")
    upstream = stub_upstream(settings, handler)
    app = create_app(settings, upstream=upstream, rerank_client=StubRerankClient())
    with TestClient(app) as http:
        resp = http.post("/i/_search", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 400 and seen[0].content == raw


def test_invalid_utf8_and_invalid_json_are_400s_with_the_pipeline() -> None:
    with app_with([]) as http:
        for raw, words in ((b'{"q": "\xff\xfe"}', "not valid UTF-8"), (b"{nope", "not JSON")):
            resp = http.post("/i/_search?search_pipeline=lexrerank", content=raw,
                             headers={"content-type": "application/json"})
            assert_opensearch_error(resp, 400, words)


def test_parse_search_body_depth_counts_objects_and_arrays() -> None:
    assert parse_search_body(b"", 3) == {}
    assert parse_search_body(b"null", 3) is None
    assert parse_search_body(b'{"a": [{"b": 1}]}', 3) == {"a": [{"b": 1}]}
    assert json_depth_exceeds({"a": [{"b": [1]}]}, 3)
    assert not json_depth_exceeds({"a": [{"b": 1}], "c": [[]]}, 3)


# ---------------------------------------------------------------------------- options


def plan(body: dict, params=(), limits: Limits | None = None):
    return plan_search(list(params), body, "paraformer", 1000, limits or Limits())


@pytest.mark.parametrize("body, params, words", [
    ({**QUERY, "from": 9_995, "size": 10}, (), "from + size must be at most 10000"),
    (QUERY, (("size", "99999999999"),), "size must be between 0 and 10000"),
    (QUERY, (("size", "²"),), "size must be an integer"),
    (QUERY, (("from", "9" * 5000),), "from must be an integer"),
    ({**QUERY, "ext": {"rerank": {"window_size": 1001}}}, (), "window_size must be between"),
    ({**QUERY, "ext": {"rerank": {"timeout_ms": 10**9}}}, (), "timeout_ms must be between"),
    ({**QUERY, "ext": {"rerank": {"model": "../../etc/passwd"}}}, (), "unknown ext.rerank.model"),
    ({"query": {"match": {"c": "word " * 3000}}}, (), "LEXRERANK_MAX_QUERY_CHARS"),
])
def test_absurd_options_are_request_errors(body, params, words) -> None:
    with pytest.raises(RequestError, match=words.replace("+", r"\+").replace(".", r"\.")):
        plan(body, params)


def test_limits_follow_the_settings() -> None:
    settings = replace(get_settings(), extra_models=("/models/mine",), max_window=50,
                       default_model="attentive-cnn")
    limits = Limits.from_settings(settings)
    assert limits.models == {*SHIPPED_MODELS, "default", "/models/mine"}
    assert plan({**QUERY, "ext": {"rerank": {"model": "/models/mine"}}}, limits=limits)
    with pytest.raises(RequestError, match="between 1 and 50"):
        plan({**QUERY, "ext": {"rerank": {"window_size": 51}}}, limits=limits)


def test_limit_env_vars_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEXRERANK_MAX_BODY_BYTES", "123")
    monkeypatch.setenv("LEXRERANK_MAX_JSON_DEPTH", "7")
    monkeypatch.setenv("LEXRERANK_MAX_QUERY_CHARS", "99")
    monkeypatch.setenv("LEXRERANK_MAX_RESULT_WINDOW", "500")
    limits = Limits.from_settings(get_settings())
    assert (limits.max_body_bytes, limits.max_json_depth, limits.max_query_chars,
            limits.max_result_window) == (123, 7, 99, 500)


def test_unknown_model_over_http_is_a_400() -> None:
    with app_with([]) as http:
        resp = http.post("/i/_search?search_pipeline=lexrerank",
                         json={**QUERY, "ext": {"rerank": {"model": "nope"}}})
    assert_opensearch_error(resp, 400, "unknown ext.rerank.model 'nope'")


# ---------------------------------------------------------------------------- query text


def test_query_text_is_only_ever_text_to_match() -> None:
    from lexrerank.bm25 import bm25_body

    hostile = 'content:* OR _exists_:x {"script": {"source": "System.exit(0)"}} \\" )('
    body = bm25_body(hostile, 5)
    assert body["query"] == {"multi_match": {"query": hostile, "type": "most_fields",
                                             "fields": ["content", "content.bigram"]}}
    # The rerank text goes to the worker only: the first stage is the user's own query.
    planned = plan({"query": {"match": {"content": "minor"}},
                    "ext": {"rerank": {"query_context": {"query_text": hostile}}}})
    assert planned.rerank.query_text == hostile
    assert hostile not in json.dumps(planned.body)
    assert planned.body["query"] == {"match": {"content": "minor"}}


# ---------------------------------------------------------------------------- auth


def test_auth_is_off_without_keys() -> None:
    with app_with([]) as http:
        assert http.get("/_cat/indices").status_code == 201


def test_api_keys_are_required_when_configured() -> None:
    seen: list[httpx.Request] = []
    with app_with(seen, api_keys=("k1", "s3cret")) as http:
        assert_opensearch_error(http.get("/_cat/indices"), 401, "missing X-API-Key")
        assert_opensearch_error(http.get("/_cat/indices", headers={"x-api-key": "s3cre"}),
                                401, "invalid API key")
        assert_opensearch_error(http.post("/i/_search?search_pipeline=lexrerank", json=QUERY),
                                401, "missing X-API-Key")
        assert not seen  # nothing unauthenticated reached OpenSearch
        resp = http.get("/_cat/indices", headers={"X-API-Key": "s3cret",
                                                  "Authorization": "Basic dXNlcjpwYXNz"})
        assert resp.status_code == 201
        # Health stays open for probes.
        assert http.get("/_lexrerank/health").status_code in (200, 503)
    sent = next(r for r in seen if r.url.path == "/_cat/indices").headers
    assert sent["authorization"] == "Basic dXNlcjpwYXNz"  # OpenSearch credentials pass
    assert "x-api-key" not in sent  # the gateway's own key does not


def test_api_keys_file_and_settings_repr(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# rotated 2026-11\nfile-key\n\n")
    monkeypatch.setenv("LEXRERANK_API_KEYS", "env-key, other")
    monkeypatch.setenv("LEXRERANK_API_KEYS_FILE", str(keys))
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "hunter2")
    settings = get_settings()
    assert settings.api_keys == ("env-key", "other", "file-key")
    assert "env-key" not in repr(settings) and "hunter2" not in repr(settings)
    monkeypatch.setenv("LEXRERANK_API_KEYS_FILE", str(tmp_path / "missing"))
    from lexrerank.errors import LexrerankError

    with pytest.raises(LexrerankError, match="LEXRERANK_API_KEYS_FILE"):
        get_settings()


def test_exempt_prefixes_never_exempt_dot_segments() -> None:
    seen: list[httpx.Request] = []
    with app_with(seen, api_keys=("k",), auth_exempt_paths=("/_lexrerank/health",
                                                            "/open/static/*")) as http:
        assert http.get("/open/static/app.js").status_code == 201  # exempt by prefix
        for sneaky in ("/open/static/../../i/_search", "/open/static/%2e%2e/%2e%2e/i/_search"):
            resp = http.get(sneaky)
            assert resp.status_code == 401, sneaky
    assert [r.url.path for r in seen] == ["/open/static/app.js"]


def test_exempt_paths_are_open_to_reads_only() -> None:
    seen: list[httpx.Request] = []
    # An exempt path the gateway does not serve itself goes to OpenSearch: reads only.
    with app_with(seen, api_keys=("k",), auth_exempt_paths=("/open-index",)) as http:
        assert http.get("/open-index").status_code == 201
        assert_opensearch_error(http.put("/open-index", json={}), 401, "missing X-API-Key")
        assert_opensearch_error(http.delete("/open-index"), 401, "missing X-API-Key")
    assert [r.method for r in seen] == ["GET"]
