"""Tests for indexer.parsers.alqac.parse_alqac_laws (inline fixtures + the real law.json)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from indexer.parsers import detect_format, parse_corpus
from indexer.parsers.alqac import is_title_line, parse_alqac_laws
from lexrerank.errors import InputError
from reranker.datasets import alqac_doc_id

LAWS = [
    {
        "id": "Luật Du lịch",
        "articles": [
            {
                "id": "1",
                "text": "Phạm vi điều chỉnh\n\nLuật này quy định về tài nguyên du lịch.",
            },
            {
                "id": "2",
                "text": "Đối tượng áp dụng\n1. Cơ quan, tổ chức.\n\n2. Tổ chức nước ngoài:\n\n"
                "a) Thống kê;\n\nb) Xây dựng.",
            },
        ],
    },
    {
        "id": "Luật Viên chức",
        "articles": [
            {"id": "1", "text": "Phạm vi điều chỉnh\n\nLuật này quy định về viên chức."},
            {"id": 39, "text": "Mục đích của đánh giá viên chức"},
            {"id": "40", "text": "1. Điều khoản không có tiêu đề.\n2. Khoản thứ hai."},
        ],
    },
]


def _data_dir() -> Path:
    env = os.environ.get("LEXRERANK_DATA")
    d = Path(env) if env else Path(__file__).resolve().parents[4].parent / "shared" / "data"
    if not d.is_dir():
        pytest.skip(f"data directory {d} missing (set LEXRERANK_DATA)")
    return d


def _write(tmp_path: Path, obj: object | str, name: str = "law.json") -> Path:
    p = tmp_path / name
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, indent=1)
    p.write_text(text, encoding="utf-8")
    return p


def test_doc_ids_fields_and_order(tmp_path: Path) -> None:
    arts = list(parse_alqac_laws(_write(tmp_path, LAWS)))
    assert [a.doc_id for a in arts] == [
        "Luật Du lịch@1",
        "Luật Du lịch@2",
        "Luật Viên chức@1",
        "Luật Viên chức@39",
        "Luật Viên chức@40",
    ]
    a = arts[0]
    assert a.doc_id == alqac_doc_id("Luật Du lịch", "1")
    assert (a.law_id, a.article_id, a.language) == ("Luật Du lịch", "1", "vi")
    assert a.headings == {"law": "Luật Du lịch"}


def test_same_article_id_in_two_laws_are_distinct_documents(tmp_path: Path) -> None:
    ids = [a.doc_id for a in parse_alqac_laws(_write(tmp_path, LAWS))]
    assert len(set(ids)) == len(ids)
    assert sum(i.endswith("@1") for i in ids) == 2


def test_title_line_is_caption_and_text_is_body(tmp_path: Path) -> None:
    arts = {a.doc_id: a for a in parse_alqac_laws(_write(tmp_path, LAWS))}
    a = arts["Luật Du lịch@2"]
    assert a.caption == "Đối tượng áp dụng"
    assert a.text == "1. Cơ quan, tổ chức.\n2. Tổ chức nước ngoài:\na) Thống kê;\nb) Xây dựng."
    assert a.sentences == (
        "1. Cơ quan, tổ chức.",
        "2. Tổ chức nước ngoài:",
        "a) Thống kê;",
        "b) Xây dựng.",
    )


def test_title_only_article_keeps_title_as_text(tmp_path: Path) -> None:
    arts = {a.doc_id: a for a in parse_alqac_laws(_write(tmp_path, LAWS))}
    a = arts["Luật Viên chức@39"]
    assert a.caption == a.text == "Mục đích của đánh giá viên chức"
    assert a.sentences == (a.text,)


def test_article_without_title_has_no_caption(tmp_path: Path) -> None:
    arts = {a.doc_id: a for a in parse_alqac_laws(_write(tmp_path, LAWS))}
    a = arts["Luật Viên chức@40"]
    assert a.caption is None
    assert a.text.startswith("1. Điều khoản")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Phạm vi điều chỉnh", True),
        ("Quyền và nghĩa vụ của viên chức", True),
        ("1. Nhà nước đầu tư cho các hoạt động sau đây:", False),
        ("a) Thống kê", False),
        ("Luật này quy định về du lịch.", False),
        ("Trong Luật này, các từ ngữ dưới đây được hiểu như sau:", False),
        ("", False),
        ("x" * 301, False),
    ],
)
def test_is_title_line(line: str, expected: bool) -> None:
    assert is_title_line(line) is expected


def test_invalid_json_reports_line(tmp_path: Path) -> None:
    p = _write(tmp_path, '[\n {"id": "L",\n  "articles": [}\n]')
    with pytest.raises(InputError) as exc:
        list(parse_alqac_laws(p))
    assert exc.value.line == 3 and "invalid JSON" in exc.value.reason
    assert str(exc.value).startswith(f"{p}:3:")


@pytest.mark.parametrize(
    ("laws", "message"),
    [
        ({"id": "L"}, "JSON array"),
        ([["not", "an", "object"]], "law #1 is not a JSON object"),
        ([{"articles": []}], "missing key 'id'"),
        ([{"id": "L"}], "'articles'"),
        ([{"id": "L", "articles": [{"text": "T\nx"}]}], "missing key 'id'"),
        ([{"id": "L", "articles": [{"id": "1"}]}], "'text'"),
        ([{"id": "L", "articles": [{"id": "1", "text": 5}]}], "'text'"),
        ([{"id": "L", "articles": [{"id": "1", "text": " \n "}]}], "empty 'text'"),
        ([{"id": "L", "articles": [{"id": None, "text": "a"}]}], "must be a string"),
        ([{"id": "", "articles": []}], "'id' is empty"),
        (
            [{"id": "L", "articles": [{"id": "1", "text": "a"}, {"id": 1, "text": "b"}]}],
            "duplicate",
        ),
    ],
)
def test_malformed_laws_raise_input_error(tmp_path: Path, laws: object, message: str) -> None:
    p = _write(tmp_path, laws)
    with pytest.raises(InputError) as exc:
        list(parse_alqac_laws(p))
    assert message in exc.value.reason
    assert exc.value.path == str(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        list(parse_alqac_laws(tmp_path / "nope.json"))


def test_parse_corpus_detects_json_as_alqac(tmp_path: Path) -> None:
    p = _write(tmp_path, LAWS)
    assert detect_format(p) == "alqac"
    arts = list(parse_corpus(p))
    assert len(arts) == 5 and arts[0].language == "vi"


# --- the real file -------------------------------------------------------------------------


def test_real_law_json() -> None:
    path = _data_dir() / "alqac2023" / "law.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    arts = list(parse_alqac_laws(path))
    assert len(raw) == 16
    assert len(arts) == sum(len(law["articles"]) for law in raw) == 2131
    assert len({a.doc_id for a in arts}) == 2131
    assert len({a.law_id for a in arts}) == 16
    by_id = {a.doc_id: a for a in arts}
    assert by_id[alqac_doc_id("Luật Phòng, chống ma túy", "1")].caption == "Phạm vi điều chỉnh"
    # Every article of the 2023 data starts with a title line.
    assert all(a.caption for a in arts)
    assert all(a.text and a.sentences and all(a.sentences) for a in arts)
    # Title-only articles (3 in the 2023 data) keep their title as text.
    assert sum(a.text == a.caption for a in arts) == sum(
        "\n" not in art["text"].strip() for law in raw for art in law["articles"]
    )
