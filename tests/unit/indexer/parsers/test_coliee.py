"""Tests for indexer.parsers.coliee.parse_civil_code (inline fixtures + the real file)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from indexer.parsers import CORPUS_FORMATS, detect_format, parse_corpus
from indexer.parsers.coliee import parse_civil_code
from lexrerank.errors import InputError

SAMPLE = (
    "Civil Code (Part I, Part II and Part III)\n"
    "Part I General Provisions\n"
    "Chapter I Common Provisions\n"
    "(Fundamental Principles)\n"
    "Article 1  (1) Private rights must be congruent with the public welfare.\n"
    "(2) The exercise of rights must be done in good faith.\n"
    "Article 2  This Code must be construed so as to honor the dignity of individuals.\n"
    "Chapter II Persons\n"
    "Section 1 Capacity to Hold Rights\n"
    "Article 3  The enjoyment of private rights commences at birth.\n"
    "Section 2 Mental Capacity\n"
    "(Mental Capacity)\n"
    "Article 3-2  If the person did not have mental capacity, the act is void.\n"
    "Articles 38 to 84  Deleted\n"
    "(Caption of a deleted article)\n"
    "Article 208  Deleted\n"
    "Article 618 Deleted\n"
    "Articles 155 through 157  Deleted\n"
    "Part II Real Rights\n"
    "Chapter I General Provisions\n"
    "(Acts Requiring Consent)\n"
    "Article 13  (1) A person must obtain consent for the following acts:\n"
    "(i) borrowing money;\n"
    "(ii) giving a gift (excluding gifts (a) or (b)).\n"
    "(a) a sub-item\n"
    'Article 724-2  The term "three years" is deemed to be replaced with "five years".\n'
)


def _data_dir() -> Path:
    env = os.environ.get("LEXRERANK_DATA")
    d = Path(env) if env else Path(__file__).resolve().parents[4].parent / "shared" / "data"
    if not d.is_dir():
        pytest.skip(f"data directory {d} missing (set LEXRERANK_DATA)")
    return d


def _write(tmp_path: Path, content: str | bytes, name: str = "code.txt") -> Path:
    p = tmp_path / name
    p.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return p


def _parse(tmp_path: Path, content: str | bytes) -> dict:
    return {a.doc_id: a for a in parse_civil_code(_write(tmp_path, content))}


def test_live_articles_ids_and_order(tmp_path: Path) -> None:
    arts = list(parse_civil_code(_write(tmp_path, SAMPLE)))
    assert [a.doc_id for a in arts] == ["1", "2", "3", "3-2", "13", "724-2"]
    assert all(a.language == "en" for a in arts)


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda s: s.encode(), id="LF"),
        pytest.param(lambda s: b"\xef\xbb\xbf" + s.replace("\n", "\r\n").encode(), id="BOM+CRLF"),
        pytest.param(lambda s: s.replace("\n", "\r").encode(), id="CR"),
    ],
)
def test_bom_and_line_ends_give_the_same_articles(tmp_path: Path, encode) -> None:
    plain = list(parse_civil_code(_write(tmp_path, SAMPLE, "plain.txt")))
    other = list(parse_civil_code(_write(tmp_path, encode(SAMPLE), "other.txt")))
    assert other == plain
    assert not any("\r" in a.text or "\ufeff" in a.text for a in other)


def test_text_is_body_without_prefix_and_continuation_lines(tmp_path: Path) -> None:
    a = _parse(tmp_path, SAMPLE)["1"]
    assert a.text == (
        "(1) Private rights must be congruent with the public welfare.\n"
        "(2) The exercise of rights must be done in good faith."
    )
    assert a.sentences == tuple(a.text.split("\n"))


def test_items_and_sub_items_are_continuation_lines_not_captions(tmp_path: Path) -> None:
    a = _parse(tmp_path, SAMPLE)["13"]
    assert a.caption == "Acts Requiring Consent"
    assert a.text.splitlines()[1:] == [
        "(i) borrowing money;",
        "(ii) giving a gift (excluding gifts (a) or (b)).",
        "(a) a sub-item",
    ]
    assert len(a.sentences) == 4


def test_caption_only_for_the_article_directly_after_it(tmp_path: Path) -> None:
    arts = _parse(tmp_path, SAMPLE)
    assert arts["1"].caption == "Fundamental Principles"
    assert arts["2"].caption is None  # the caption line precedes Article 1 only
    assert arts["3"].caption is None
    assert arts["3-2"].caption == "Mental Capacity"


def test_caption_of_deleted_article_is_not_carried_over(tmp_path: Path) -> None:
    # "(Caption of a deleted article)" precedes "Article 208  Deleted"; it must vanish.
    arts = _parse(tmp_path, SAMPLE)
    assert all(a.caption != "Caption of a deleted article" for a in arts.values())
    assert all("Caption of a deleted" not in a.text for a in arts.values())


def test_suffix_ids(tmp_path: Path) -> None:
    arts = _parse(tmp_path, SAMPLE)
    assert arts["3-2"].text.startswith("If the person did not have mental capacity")
    assert arts["724-2"].text.endswith('"five years".')


@pytest.mark.parametrize(
    "line",
    [
        "Article 208  Deleted",
        "Article 618 Deleted",
        "Articles 38 to 84  Deleted",
        "Articles 155 through 157  Deleted",
        "Articles 516 and 517  Deleted",
        "Article 9-2  Deleted.",
    ],
)
def test_deleted_forms_are_not_documents(tmp_path: Path, line: str) -> None:
    content = f"Article 1  Live text.\n{line}\nArticle 700  More live text.\n"
    arts = _parse(tmp_path, content)
    assert list(arts) == ["1", "700"]
    assert arts["1"].text == "Live text."  # the deleted line ends Article 1


def test_headings_levels_and_reset(tmp_path: Path) -> None:
    arts = _parse(tmp_path, SAMPLE)
    assert arts["1"].headings == {
        "part": "Part I General Provisions",
        "chapter": "Chapter I Common Provisions",
    }
    assert arts["3"].headings["section"] == "Section 1 Capacity to Hold Rights"
    assert arts["3-2"].headings["section"] == "Section 2 Mental Capacity"
    # A new Part clears chapter and section; the new chapter then applies.
    assert arts["13"].headings == {
        "part": "Part II Real Rights",
        "chapter": "Chapter I General Provisions",
    }


def test_subsection_and_division_reset_by_section(tmp_path: Path) -> None:
    content = (
        "Part III Claims\nChapter I General\nSection 3 Multiple Parties\n"
        "Subsection 5 Guarantee\nDivision 3 Special Provisions\nArticle 465-9  Text a.\n"
        "Section 4 Assignment\nArticle 466  Text b.\n"
    )
    arts = _parse(tmp_path, content)
    assert arts["465-9"].headings["division"] == "Division 3 Special Provisions"
    assert arts["466"].headings == {
        "part": "Part III Claims",
        "chapter": "Chapter I General",
        "section": "Section 4 Assignment",
    }


def test_article_body_on_following_line(tmp_path: Path) -> None:
    arts = _parse(tmp_path, "Article 5\n(1) First.\n(2) Second.\n")
    assert arts["5"].text == "(1) First.\n(2) Second."


def test_headings_dict_is_not_shared_between_articles(tmp_path: Path) -> None:
    arts = list(parse_civil_code(_write(tmp_path, SAMPLE)))
    arts[0].headings["part"] = "changed"
    assert arts[1].headings["part"] == "Part I General Provisions"


def _error(tmp_path: Path, content: str | bytes) -> InputError:
    with pytest.raises(InputError) as exc:
        list(parse_civil_code(_write(tmp_path, content)))
    assert str(tmp_path / "code.txt") in str(exc.value)
    return exc.value


def test_no_article_at_all_is_an_error(tmp_path: Path) -> None:
    err = _error(tmp_path, "Part I General Provisions\nChapter I Common Provisions\n")
    assert "no 'Article N'" in err.reason and err.line == 2


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    err = _error(tmp_path, "")
    assert "no 'Article N'" in err.reason and err.line == 1


def test_text_before_first_article_is_an_error_with_its_line(tmp_path: Path) -> None:
    err = _error(tmp_path, "Civil Code\nPart I General\nsome stray text\nArticle 1  Body.\n")
    assert err.line == 3
    assert "text outside any article" in err.reason
    assert f"{tmp_path / 'code.txt'}:3:" in str(err)


def test_text_between_heading_and_article_is_an_error(tmp_path: Path) -> None:
    err = _error(tmp_path, "Article 1  Body.\nChapter II Persons\nstray text\nArticle 2  B.\n")
    assert err.line == 3


def test_duplicate_article_id_is_an_error(tmp_path: Path) -> None:
    err = _error(tmp_path, "Article 1  Body.\nArticle 2  Body.\n\nArticle 1  Again.\n")
    assert err.line == 4 and "duplicate Article 1" in err.reason and "line 1" in err.reason


def test_article_without_text_is_an_error(tmp_path: Path) -> None:
    err = _error(tmp_path, "Article 1  Body.\nArticle 2\nArticle 3  Body.\n")
    assert err.line == 2 and "no text" in err.reason


def test_dangling_caption_before_heading_without_article_is_an_error(tmp_path: Path) -> None:
    err = _error(tmp_path, "Part I General\n(Orphan caption)\nChapter I X\nArticle 1  B.\n")
    assert err.line == 2


def test_parenthesised_line_inside_article_is_continuation(tmp_path: Path) -> None:
    arts = _parse(tmp_path, "Article 1  Body.\n(a note in parentheses)\nChapter II X\n")
    assert arts["1"].text == "Body.\n(a note in parentheses)"


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    err = _error(tmp_path, b"Article 1  Body.\nArticle 2  Bad \xff byte.\n")
    assert err.line == 2 and "UTF-8" in err.reason


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        list(parse_civil_code(tmp_path / "nope.txt"))


def test_parse_corpus_detects_and_dispatches(tmp_path: Path) -> None:
    p = _write(tmp_path, SAMPLE)
    assert detect_format(p) == "coliee"
    assert [a.doc_id for a in parse_corpus(p)] == [a.doc_id for a in parse_civil_code(p)]
    assert {a.language for a in parse_corpus(p, "coliee", language="ja")} == {"ja"}


def test_parse_corpus_rejects_unknown_formats(tmp_path: Path) -> None:
    p = _write(tmp_path, SAMPLE, "code.csv")
    with pytest.raises(InputError) as exc:
        detect_format(p)
    assert all(f in str(exc.value) for f in CORPUS_FORMATS) and "--format" in str(exc.value)
    with pytest.raises(InputError, match="unknown corpus format 'csv'"):
        parse_corpus(p, "csv")
    assert [a.doc_id for a in parse_corpus(p, "coliee")][0] == "1"
    with pytest.raises(InputError, match="file not found"):
        parse_corpus(tmp_path / "missing.txt")


# --- the real file -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_path() -> Path:
    return _data_dir() / "coliee" / "civil_code_en-1to724-2.txt"


def test_real_civil_code_has_768_unique_live_articles(real_path: Path) -> None:
    arts = list(parse_civil_code(real_path))
    assert len(arts) == 768
    assert len({a.doc_id for a in arts}) == 768
    # Independent count: "Article N" heading lines minus the single deleted ones.
    lines = real_path.read_text(encoding="utf-8-sig").splitlines()
    headings = [ln for ln in lines if re.match(r"^Article \d+(-\d+)*\s", ln)]
    deleted = [ln for ln in headings if re.search(r"\sDeleted\.?$", ln)]
    assert len(headings) == 776
    assert len(headings) - len(deleted) == len(arts)


def test_real_civil_code_fields(real_path: Path) -> None:
    arts = {a.doc_id: a for a in parse_civil_code(real_path)}
    for gone in ("38", "84", "208", "363", "480", "516", "635", "640"):
        assert gone not in arts
    for suffix in ("3-2", "398-22", "724-2"):
        assert suffix in arts
    assert arts["1"].caption == "Fundamental Principles"
    assert arts["1"].headings["part"] == "Part I General Provisions"
    assert arts["724-2"].headings["part"] == "Part III Claims"
    assert "(a) a person that holds the majority" in arts["465-9"].text
    assert all(a.text and a.sentences and all(a.sentences) for a in arts.values())
    assert not any(a.text.startswith("Article") for a in arts.values())
    # Most articles have a caption; the ones without follow an article that shares it.
    with_caption = sum(a.caption is not None for a in arts.values())
    assert 700 < with_caption < 768
