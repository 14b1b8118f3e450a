"""Property-based fuzzing of every input parser: corpus files, query files, rerank requests.

The property: whatever the bytes, a parser either returns well-formed results or raises the
project's own error (``InputError`` for files, ``RequestError`` for requests) with a message;
never another exception (``KeyError``, ``UnicodeDecodeError``, ``RecursionError`` ...), never a
hang. Inputs mix random bytes with near-valid documents, where the interesting bugs are.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.limits import Limits
from gateway.rerank_request import (
    RequestError,
    incompatible_reason,
    infer_query_text,
    names_pipeline,
    plan_search,
)
from indexer.parsers import parse_corpus
from lexrerank.errors import InputError
from reranker.datasets import read_queries

FUZZ = settings(max_examples=150, deadline=2000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() \
    | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=20)
deep_json = st.integers(min_value=1, max_value=50_000).map(lambda n: "[" * n + "]" * n)


def parse_file(suffix: str, data: bytes, reader) -> list:
    """Write ``data`` to a temporary ``*.suffix`` file and run ``reader`` on it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"input{suffix}"
        path.write_bytes(data)
        return list(reader(path))


def assert_parses_or_input_error(suffix: str, data: bytes, reader) -> None:
    try:
        out = parse_file(suffix, data, reader)
    except InputError as exc:
        assert str(exc).strip(), "an InputError must say what is wrong"
        return
    assert isinstance(out, list)


# ---------------------------------------------------------------------------- corpus files

COLIEE_LINES = ["Article 1", "Article 3-2", "Article 724-2", "(Caption)", "(1) The text.",
                "Articles 38 to 84  Deleted", "Article 208  Deleted", "Part I General",
                "Chapter II", "Section 1", "\ufeff", "", "  ", "Article", "Article x"]
coliee_text = st.lists(st.sampled_from(COLIEE_LINES) | st.text(max_size=40), max_size=30)


@FUZZ
@given(lines=coliee_text, newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_coliee_parser_near_valid(lines: list[str], newline: str) -> None:
    data = newline.join(lines).encode("utf-8", errors="surrogatepass")
    assert_parses_or_input_error(".txt", data, lambda p: parse_corpus(p, "coliee"))


@FUZZ
@given(data=st.binary(max_size=2000))
def test_every_corpus_parser_on_random_bytes(data: bytes) -> None:
    for suffix, fmt in ((".txt", "coliee"), (".xml", "coliee-xml"), (".json", "alqac"),
                        (".jsonl", "jsonl")):
        assert_parses_or_input_error(suffix, data, lambda p, f=fmt: parse_corpus(p, f))


XML_PARTS = ["<Articles>", "</Articles>", '<Article num="1">', '<Article num="3-2">',
             '<Article num="38:84">', '<Article num="">', "<Article>", "</Article>", "<caption/>",
             "<caption>（基本原則）</caption>", "<text>", "</text>", "第一条　", "第三条の二　",
             "第二百八条　削除", "私権は、公共の福祉に適合しなければならない。", "\n２　", "\n一　",
             "&amp;", "&bogus;", "<![CDATA[x]]>", "<!DOCTYPE a>", "<?xml version='1.0'?>"]


@FUZZ
@given(parts=st.lists(st.sampled_from(XML_PARTS) | st.text(max_size=20), max_size=30))
def test_coliee_xml_parser_near_valid(parts: list[str]) -> None:
    data = "".join(parts).encode("utf-8", errors="surrogatepass")
    assert_parses_or_input_error(".xml", data, lambda p: parse_corpus(p, "coliee-xml"))


jsonl_record = st.fixed_dictionaries(
    {}, optional={"id": json_scalars, "text": json_scalars, "caption": json_values,
                  "sentences": json_values, "language": json_values, "law_id": json_values,
                  "article_id": json_values, "headings": json_values, "extra": json_values})


@FUZZ
@given(records=st.lists(jsonl_record | json_values, max_size=8))
def test_jsonl_parser_near_valid(records: list) -> None:
    data = "\n".join(json.dumps(r) for r in records).encode()
    assert_parses_or_input_error(".jsonl", data, lambda p: parse_corpus(p, "jsonl"))


alqac_article = st.fixed_dictionaries({}, optional={"id": json_scalars, "text": json_values})
alqac_law = st.fixed_dictionaries({}, optional={
    "id": json_scalars, "articles": st.lists(alqac_article | json_values, max_size=4)
    | json_values})


@FUZZ
@given(laws=st.lists(alqac_law | json_values, max_size=4) | json_values)
def test_alqac_parser_near_valid(laws) -> None:
    data = json.dumps(laws).encode()
    assert_parses_or_input_error(".json", data, lambda p: parse_corpus(p, "alqac"))


@FUZZ
@given(doc=deep_json)
def test_json_parsers_survive_deep_nesting(doc: str) -> None:
    assert_parses_or_input_error(".json", doc.encode(), lambda p: parse_corpus(p, "alqac"))
    assert_parses_or_input_error(".jsonl", doc.encode(), lambda p: parse_corpus(p, "jsonl"))
    assert_parses_or_input_error(".json", doc.encode(), read_queries)


# ---------------------------------------------------------------------------- query files

xml_text = st.text(max_size=60)
pair = st.builds(
    lambda pid, t1, t2, raw: (f'<pair id="{pid}" label="Y"><t1>{t1}</t1><t2>{t2}</t2></pair>'
                              if not raw else f"<pair>{t1}</pair>"),
    st.sampled_from(["R01-1-A", "H18-01-1", "", "x&amp;y"]) | st.text(max_size=10),
    st.sampled_from(["Article 1\n(1) text", "Article 537(1)", "Articles", ""]) | xml_text,
    xml_text, st.booleans())


@FUZZ
@given(pairs=st.lists(pair, max_size=5), prolog=st.sampled_from([
    '<?xml version="1.0" encoding="UTF-8"?>\n', "",
    '<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>',
    '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>']))
def test_coliee_query_reader_near_valid(pairs: list[str], prolog: str) -> None:
    data = (prolog + "<dataset>" + "".join(pairs) + "</dataset>").encode("utf-8",
                                                                        errors="surrogatepass")
    assert_parses_or_input_error(".xml", data, read_queries)


def test_coliee_query_reader_does_not_read_external_entities() -> None:
    data = (b'<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/hostname">]><dataset>'
            b'<pair id="A-1"><t1>Article 1</t1><t2>q &x;</t2></pair></dataset>')
    try:
        queries = parse_file(".xml", data, read_queries)
    except InputError:
        return
    host = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else ""
    assert not host or all(host not in q.text for q in queries)


@FUZZ
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".xml", ".json"]))
def test_query_readers_on_random_bytes(data: bytes, suffix: str) -> None:
    assert_parses_or_input_error(suffix, data, read_queries)


alqac_question = st.fixed_dictionaries({}, optional={
    "question_id": json_scalars, "text": json_values,
    "relevant_articles": st.lists(st.fixed_dictionaries({}, optional={
        "law_id": json_scalars, "article_id": json_scalars}) | json_values, max_size=3)
    | json_values})


@FUZZ
@given(questions=st.lists(alqac_question | json_values, max_size=5) | json_values)
def test_alqac_query_reader_near_valid(questions) -> None:
    assert_parses_or_input_error(".json", json.dumps(questions).encode(), read_queries)


# ---------------------------------------------------------------------------- rerank requests

params_strategy = st.lists(st.tuples(
    st.sampled_from(["from", "size", "search_pipeline", "q", "sort", "scroll", "routing"])
    | st.text(max_size=8),
    st.sampled_from(["lexrerank", "_none", "-1", "0", "10", "99999999999", "²", "_score"])
    | st.text(max_size=12)), max_size=5)
rerank_options = st.fixed_dictionaries({}, optional={
    "query_context": st.fixed_dictionaries({}, optional={
        "query_text": json_values, "query_text_path": json_values}) | json_values,
    "window_size": json_values, "model": json_values, "timeout_ms": json_values,
    "explain": json_values, "unknown": json_values})
search_body = st.fixed_dictionaries({}, optional={
    "query": st.fixed_dictionaries({}, optional={
        "match": st.dictionaries(st.text(max_size=8), json_values, max_size=2),
        "multi_match": json_values, "bool": json_values}) | json_values,
    "from": json_values, "size": json_values, "sort": json_values, "search_after": json_values,
    "search_pipeline": st.sampled_from(["lexrerank", "_none"]) | json_values,
    "ext": st.fixed_dictionaries({}, optional={"rerank": rerank_options | json_values})
    | json_values})


@FUZZ
@given(params=params_strategy, body=search_body)
def test_rerank_request_parsing_never_fails_unexpectedly(params, body) -> None:
    names_pipeline(params, body)
    incompatible_reason(params, body)
    infer_query_text(body, params)
    limits = Limits()
    try:
        plan = plan_search(params, body, "paraformer", 1000, limits)
    except RequestError as exc:
        assert str(exc)
        return
    r = plan.rerank
    assert 1 <= r.window <= limits.max_window and 1 <= r.timeout_ms <= limits.max_timeout_ms
    assert r.from_ >= 0 and r.size >= 0 and r.from_ + r.size <= limits.max_result_window
    assert r.model in limits.models
    assert r.query_text is None or (isinstance(r.query_text, str)
                                    and len(r.query_text) <= limits.max_query_chars)
    assert plan.body["from"] == 0 and plan.body["size"] == r.first_stage_size
    assert "rerank" not in (plan.body.get("ext") or {})
    json.dumps(plan.body)  # the first stage request is still JSON
