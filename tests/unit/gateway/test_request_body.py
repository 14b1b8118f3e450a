"""Search bodies the gateway parses: gzip (bounded), lone surrogates, huge integers, and the
reasons a reranked search gets for what it cannot rerank (issue 15, items 3 and 6)."""

from __future__ import annotations

import gzip
import zlib

import pytest

from gateway.limits import BodyError, parse_search_body
from gateway.merge import MergeError, window_candidates
from gateway.request_body import EncodingError, decoded_body, has_lone_surrogate
from gateway.rerank_request import RequestError, incompatible_reason, plan_search

BODY = b'{"query": {"match": {"text": "minor"}}}'


def reason(raw: bytes, encoding: str | None = None, max_bytes: int = 1 << 20) -> BodyError:
    with pytest.raises(BodyError) as caught:
        parse_search_body(raw, 64, encoding, max_bytes)
    return caught.value


@pytest.mark.parametrize("encoding, packed", [
    ("gzip", gzip.compress(BODY)), ("x-gzip", gzip.compress(BODY)),
    ("deflate", zlib.compress(BODY)), ("identity", BODY), (None, BODY)])
def test_compressed_bodies_are_decoded(encoding: str | None, packed: bytes) -> None:
    assert parse_search_body(packed, 64, encoding) == {"query": {"match": {"text": "minor"}}}


def test_a_compression_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b" " * (64 << 20))  # 64 MiB of spaces in ~64 KB
    assert len(bomb) < 100_000
    error = reason(bomb, "gzip", max_bytes=1 << 20)
    assert (error.status, error.error_type) == (413, "content_too_long_exception")
    with pytest.raises(EncodingError):
        decoded_body(bomb, "gzip", 1000)


@pytest.mark.parametrize("raw, encoding, status", [
    (b"not gzip at all", "gzip", 400), (gzip.compress(BODY)[:-8], "gzip", 400),
    (gzip.compress(BODY) + b"junk", "gzip", 400), (BODY, "br", 400)])
def test_undecodable_bodies_are_4xx(raw: bytes, encoding: str, status: int) -> None:
    assert reason(raw, encoding).status == status


@pytest.mark.parametrize("raw", [b'{"q": "\\ud800"}', b'{"q": "\\uDFFF x"}',
                                 b'{"q": "\xed\xa0\x80"}', b'{"\\ud800": 1}',
                                 b'{"a": [{"b": "x\\udc00"}]}'])
def test_a_lone_surrogate_anywhere_is_a_400(raw: bytes) -> None:
    error = reason(raw)
    assert error.status == 400 and "surrogate" in error.reason
    assert isinstance(error.parsed, dict)  # the caller still sees whether it names us


def test_a_surrogate_pair_is_one_character_and_fine() -> None:
    assert parse_search_body(b'{"q": "\\ud83d\\ude00"}', 64) == {"q": "\U0001f600"}
    assert not has_lone_surrogate({"q": ["\U0001f600", "plain", 1]})


def test_a_huge_integer_is_a_400_not_a_crash() -> None:
    error = reason(b'{"size": ' + b"9" * 5000 + b"}")
    assert error.status == 400 and "digits" in error.reason


def test_a_lone_surrogate_in_the_query_text_is_refused_before_any_worker() -> None:
    body = {"ext": {"rerank": {"query_context": {"query_text": "minor \ud800"}}}}
    with pytest.raises(RequestError, match="surrogate"):
        plan_search([], body, "default", 1000)


@pytest.mark.parametrize("params, body", [
    ([], {"stored_fields": "_none_"}), ([], {"stored_fields": ["_none_"]}),
    ([("stored_fields", "_none_")], {})])
def test_stored_fields_none_is_named_as_the_reason(params: list, body: dict) -> None:
    assert "stored_fields" in incompatible_reason(params, body)


def test_hits_without_an_id_get_a_clear_merge_reason() -> None:
    with pytest.raises(MergeError, match="no _id"):
        window_candidates({"hits": {"hits": [{"_score": 1.0}, {"_score": 0.5}]}}, 10)
