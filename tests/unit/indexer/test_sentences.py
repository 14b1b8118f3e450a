"""Tests for indexer.sentences.article_sentences."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from indexer.sentences import MAX_UNIT_CHARS, MAX_UNIT_CHARS_JA, article_sentences


def _data_dir() -> Path:
    env = os.environ.get("LEXRERANK_DATA")
    d = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    if not d.is_dir():
        pytest.skip(f"data directory {d} missing (set LEXRERANK_DATA)")
    return d


def _no_space(s: str) -> str:
    return "".join(s.split())


def test_lines_are_units_stripped_and_blank_lines_dropped() -> None:
    text = "  (1) First paragraph.  \n\n(2) Second paragraph.\n   \n"
    assert article_sentences(text, "en") == ["(1) First paragraph.", "(2) Second paragraph."]


def test_coliee_paragraphs_and_items_are_each_a_unit() -> None:
    text = (
        "(1) A person must obtain consent for the following acts:\n"
        "(i) borrowing money;\n"
        "(ii) giving a gift; or\n"
        "(a) a sub-item\n"
        "(2) The family court may decide otherwise."
    )
    units = article_sentences(text, "en")
    assert units == text.split("\n")


def test_alqac_numbered_clauses_and_points_are_units() -> None:
    text = "1. Nhà nước đầu tư cho các hoạt động sau đây:\n\na) Thống kê;\n\nb) Xây dựng.\n2. Khác."
    assert article_sentences(text, "vi") == [
        "1. Nhà nước đầu tư cho các hoạt động sau đây:",
        "a) Thống kê;",
        "b) Xây dựng.",
        "2. Khác.",
    ]


def test_inline_paragraph_markers_after_sentence_end_split() -> None:
    text = "(1) Private rights must be congruent. (2) Abuse of rights is not permitted."
    assert article_sentences(text, "en") == [
        "(1) Private rights must be congruent.",
        "(2) Abuse of rights is not permitted.",
    ]


def test_cross_references_to_paragraphs_do_not_split() -> None:
    text = "The provisions of paragraph (1) of Article 5 apply; see item (ii) thereof."
    assert article_sentences(text, "en") == [text]


def test_short_unit_with_two_sentences_is_kept_whole() -> None:
    text = "(1) This is short. It has two sentences."
    assert article_sentences(text, "en") == [text]


def test_long_unit_splits_on_sentence_end_followed_by_capital() -> None:
    first = "(1) " + "the obligee may demand performance of the obligation " * 6 + "in full."
    second = "In this case, that payment has the effect of performance " * 3 + "as agreed."
    text = f"{first} {second}"
    assert len(text) > MAX_UNIT_CHARS
    assert article_sentences(text, "en") == [first, second]


def test_long_unit_does_not_split_after_abbreviation_or_before_digit() -> None:
    body = "an arbitration agreement as provided in the Arbitration Act (Act No. 138 of 2003) "
    text = body * 6 + "applies. See Art. Five of that act."
    assert len(text) > MAX_UNIT_CHARS
    units = article_sentences(text, "en")
    # "No. 138" (digit follows) and "Art. Five" (abbreviation) are not sentence ends.
    assert units == [body * 6 + "applies.", "See Art. Five of that act."]


def test_very_long_sentence_splits_at_semicolons() -> None:
    a = "the seller must deliver the thing " * 8 + "to the buyer;"
    b = "provided, however, that this does not apply " * 6 + "if agreed otherwise."
    text = f"{a} {b}"
    assert len(text) > MAX_UNIT_CHARS and len(a) < MAX_UNIT_CHARS
    assert article_sentences(text, "en") == [a, b]


def test_semicolons_in_a_short_unit_are_kept() -> None:
    text = "(i) borrowing money; or guaranteeing an obligation; or lending."
    assert article_sentences(text, "en") == [text]


def test_japanese_long_unit_splits_on_full_stop() -> None:
    s1 = "私権は、公共の福祉に適合しなければならない。" * 10
    s2 = "権利の濫用は、これを許さない。"
    units = article_sentences(s1 + s2, "ja")
    assert len(s1 + s2) > MAX_UNIT_CHARS_JA
    assert len(units) == 11
    assert units[-1] == s2
    assert all(u.endswith("。") for u in units)


def test_japanese_short_unit_is_kept() -> None:
    text = "私権は、公共の福祉に適合しなければならない。権利の濫用は、これを許さない。"
    assert article_sentences(text, "ja") == [text]


def test_max_chars_parameter() -> None:
    text = "First sentence here. Second sentence here."
    assert article_sentences(text, "en", max_chars=10) == [
        "First sentence here.",
        "Second sentence here.",
    ]


def test_fallback_and_blank() -> None:
    assert article_sentences("  one unit  ", "en") == ["one unit"]
    assert article_sentences("", "en") == []
    assert article_sentences(" \n \n", "en") == []


@given(st.text(alphabet=st.sampled_from("ab .;:()1iA\n。"), max_size=1200))
def test_never_empty_never_loses_characters(text: str) -> None:
    for language in ("en", "vi", "ja"):
        units = article_sentences(text, language, max_chars=40)
        assert all(u and u == u.strip() for u in units)
        assert _no_space("".join(units)) == _no_space(text)


def test_real_civil_code_articles_split_losslessly() -> None:
    from indexer.parsers.coliee import parse_civil_code

    path = _data_dir() / "coliee" / "civil_code_en-1to724-2.txt"
    arts = list(parse_civil_code(path))
    units = [u for a in arts for u in a.sentences]
    # Every line of every article is at least one unit.
    assert len(units) >= sum(a.text.count("\n") + 1 for a in arts)
    for a in arts:
        assert _no_space("".join(a.sentences)) == _no_space(a.text)
