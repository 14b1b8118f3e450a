"""Tests for indexer.parsers.jsonl.parse_jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.parsers import detect_format, parse_corpus
from indexer.parsers.jsonl import parse_jsonl
from lexrerank.errors import InputError


def _write(tmp_path: Path, lines: list[str] | bytes, name: str = "corpus.jsonl") -> Path:
    p = tmp_path / name
    p.write_bytes(lines if isinstance(lines, bytes) else "\n".join(lines).encode("utf-8"))
    return p


def _rec(**kw: object) -> str:
    return json.dumps(kw, ensure_ascii=False)


def test_minimal_records_and_defaults(tmp_path: Path) -> None:
    p = _write(tmp_path, [_rec(id="a-1", text="(1) First.\n(2) Second."), _rec(id="a-2", text="X")])
    arts = list(parse_jsonl(p))
    assert [a.doc_id for a in arts] == ["a-1", "a-2"]
    a = arts[0]
    assert a.text == "(1) First.\n(2) Second."
    assert a.sentences == ("(1) First.", "(2) Second.")  # from article_sentences
    assert (a.language, a.caption, a.law_id, a.article_id, a.headings) == (
        "en",
        None,
        None,
        None,
        {},
    )


def test_all_optional_fields(tmp_path: Path) -> None:
    rec = _rec(
        id="gdpr-5",
        text="Personal data shall be processed lawfully.",
        caption="Principles",
        sentences=["Personal data", " shall be processed lawfully. "],
        language="de",
        law_id="GDPR",
        article_id="5",
        headings={"chapter": "Chapter II"},
    )
    (a,) = parse_jsonl(_write(tmp_path, [rec]))
    assert a.caption == "Principles"
    assert a.sentences == ("Personal data", "shall be processed lawfully.")
    assert (a.language, a.law_id, a.article_id) == ("de", "GDPR", "5")
    assert a.headings == {"chapter": "Chapter II"}


def test_default_language_argument_and_record_override(tmp_path: Path) -> None:
    p = _write(tmp_path, [_rec(id="1", text="a"), _rec(id="2", text="b", language="ja")])
    assert [a.language for a in parse_jsonl(p, language="vi")] == ["vi", "ja"]
    assert [a.language for a in parse_corpus(p, language="vi")] == ["vi", "ja"]


def test_blank_lines_bom_and_crlf(tmp_path: Path) -> None:
    body = "\r\n".join(["", _rec(id="1", text="a"), "   ", "", _rec(id="2", text="b"), ""])
    p = _write(tmp_path, b"\xef\xbb\xbf" + body.encode("utf-8"))
    assert [(a.doc_id, a.text) for a in parse_jsonl(p)] == [("1", "a"), ("2", "b")]


def test_unicode_line_separator_inside_a_string_is_not_a_line_break(tmp_path: Path) -> None:
    p = _write(tmp_path, [_rec(id="1", text="first\u2028still first"), _rec(id="2", text="b")])
    assert [a.doc_id for a in parse_jsonl(p)] == ["1", "2"]


def _error_line(tmp_path: Path, lines: list[str]) -> InputError:
    p = _write(tmp_path, lines)
    with pytest.raises(InputError) as exc:
        list(parse_jsonl(p))
    assert exc.value.path == str(p)
    return exc.value


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"id": "x", "text": ', "invalid JSON"),
        ('["id", "text"]', "expected a JSON object"),
        (_rec(text="no id"), "missing required key 'id'"),
        (_rec(id="x"), "missing required key 'text'"),
        (_rec(id="", text="t"), "'id' must be non-empty"),
        (_rec(id="has space", text="t"), "no whitespace"),
        (_rec(id=7, text="t"), "'id' must be a string"),
        (_rec(id="x", text="   "), "'text' of 'x' is empty"),
        (_rec(id="x", text=["t"]), "'text' must be a string"),
        (_rec(id="x", text="t", caption=3), "'caption' must be a string"),
        (_rec(id="x", text="t", law_id=1), "'law_id' must be a string"),
        (_rec(id="x", text="t", sentences="one"), "'sentences' must be a list"),
        (_rec(id="x", text="t", sentences=[" "]), "'sentences' is empty"),
        (_rec(id="x", text="t", headings={"part": 1}), "'headings' must be an object"),
        (_rec(id="x", text="t", headings=["part"]), "'headings' must be an object"),
        (_rec(id="x", txt="t", text="t"), "unknown key(s) 'txt'"),
        (_rec(id="first", text="duplicate"), "duplicate id 'first' (first on line 1)"),
    ],
)
def test_each_problem_names_path_and_line(tmp_path: Path, bad: str, message: str) -> None:
    err = _error_line(tmp_path, [_rec(id="first", text="ok"), "", bad])
    assert err.line == 3
    assert message in err.reason
    assert "corpus.jsonl:3: " in str(err)


def test_articles_before_the_error_are_yielded_lazily(tmp_path: Path) -> None:
    p = _write(tmp_path, [_rec(id="1", text="a"), "not json"])
    it = parse_jsonl(p)
    assert next(it).doc_id == "1"
    with pytest.raises(InputError):
        next(it)


def test_invalid_utf8(tmp_path: Path) -> None:
    p = _write(tmp_path, _rec(id="1", text="a").encode() + b'\n{"id": "\xff"}\n')
    with pytest.raises(InputError) as exc:
        list(parse_jsonl(p))
    assert exc.value.line == 2 and "UTF-8" in exc.value.reason


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        list(parse_jsonl(tmp_path / "nope.jsonl"))


def test_detect_format_jsonl_and_ndjson(tmp_path: Path) -> None:
    assert detect_format(tmp_path / "x.jsonl") == "jsonl"
    assert detect_format(tmp_path / "x.NDJSON") == "jsonl"
    p = _write(tmp_path, [_rec(id="1", text="a")], name="c.ndjson")
    assert [a.doc_id for a in parse_corpus(p)] == ["1"]


def test_documented_example_parses(tmp_path: Path) -> None:
    """The JSONL example in docs/corpus-formats.md must stay valid."""
    doc = Path(__file__).resolve().parents[4] / "docs" / "corpus-formats.md"
    block = doc.read_text(encoding="utf-8").split("```jsonl\n", 1)[1].split("```", 1)[0]
    assert len([ln for ln in block.splitlines() if ln.strip()]) == 3
    p = tmp_path / "example.jsonl"
    p.write_text(block, encoding="utf-8")
    arts = list(parse_jsonl(p))
    assert [a.doc_id for a in arts] == ["civ-1", "civ-2", "gdpr-5"]
    assert arts[0].caption == "Fundamental Principles" and len(arts[0].sentences) == 2
    assert arts[2].law_id == "GDPR"
