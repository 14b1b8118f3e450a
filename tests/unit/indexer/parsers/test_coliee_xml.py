"""Tests for indexer.parsers.coliee_xml (COLIEE's XML civil code, the Japanese civil.xml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.parsers import detect_format, parse_corpus
from indexer.parsers.coliee_xml import parse_coliee_xml
from lexrerank.errors import InputError

SAMPLE = """<?xml version="1.0" encoding="utf-8"?>
<Articles>
  <Article num="3">
    <caption/>
    <text>第三条　私権の享有は、出生に始まる。
２　外国人は、法令又は条約の規定により禁止される場合を除き、私権を享有する。</text>
  </Article>
  <Article num="3-2">
    <caption></caption>
    <text>第三条の二　法律行為の当事者が意思能力を有しなかったときは、無効とする。</text>
  </Article>
  <Article num="13">
    <caption>（保佐人の同意を要する行為等）</caption>
    <text>第十三条　被保佐人が次に掲げる行為をするには、その保佐人の同意を得なければならない。
一　元本を領収し、又は利用すること。
二　借財又は保証をすること。</text>
  </Article>
  <Article num="38:84">
    <caption/>
    <text>第三十八条から第八十四条まで　削除</text>
  </Article>
  <Article num="208">
    <caption/>
    <text>第二百八条　削除</text>
  </Article>
  <Article num="398-2">
    <caption>（根抵当権）</caption>
    <text>第三百九十八条の二　抵当権は、設定することができる。
２　前項の規定による抵当権は、定めなければならない。</text>
  </Article>
</Articles>
"""


def _write(tmp_path: Path, text: str, name: str = "civil.xml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_sample_articles_ids_captions_and_text(tmp_path: Path) -> None:
    articles = list(parse_coliee_xml(_write(tmp_path, SAMPLE)))
    # The range 38:84 and the deleted 208 are not documents.
    assert [a.doc_id for a in articles] == ["3", "3-2", "13", "398-2"]
    by_id = {a.doc_id: a for a in articles}
    # Empty captions (<caption/> and <caption></caption>) are None; parentheses dropped.
    assert by_id["3"].caption is None and by_id["3-2"].caption is None
    assert by_id["13"].caption == "保佐人の同意を要する行為等"
    assert by_id["398-2"].caption == "根抵当権"
    # The heading 第三百九十八条の二 is not part of the text.
    assert by_id["398-2"].text.startswith("抵当権は、")
    assert by_id["3"].text == ("私権の享有は、出生に始まる。\n２　外国人は、法令又は条約の"
                               "規定により禁止される場合を除き、私権を享有する。")
    assert {a.language for a in articles} == {"ja"}


def test_sentences_are_paragraphs_and_items(tmp_path: Path) -> None:
    by_id = {a.doc_id: a for a in parse_coliee_xml(_write(tmp_path, SAMPLE))}
    assert by_id["13"].sentences == (
        "被保佐人が次に掲げる行為をするには、その保佐人の同意を得なければならない。",
        "一　元本を領収し、又は利用すること。",
        "二　借財又は保証をすること。",
    )
    assert len(by_id["3"].sentences) == 2 and by_id["3"].sentences[1].startswith("２　")


def test_long_paragraph_is_cut_after_the_full_stop(tmp_path: Path) -> None:
    long = "甲は乙に対して債務を負う" * 10 + "。" + "乙は丙に対して債権を有する" * 10 + "。"
    xml = f'<Articles><Article num="1"><caption/><text>第一条　{long}</text></Article></Articles>'
    (article,) = parse_coliee_xml(_write(tmp_path, xml))
    assert len(article.sentences) == 2 and all(s.endswith("。") for s in article.sentences)


def test_format_is_detected_from_the_extension(tmp_path: Path) -> None:
    path = _write(tmp_path, SAMPLE)
    assert detect_format(path) == "coliee-xml"
    assert [a.doc_id for a in parse_corpus(path)] == ["3", "3-2", "13", "398-2"]
    assert {a.language for a in parse_corpus(path, "coliee-xml", language="en")} == {"en"}


@pytest.mark.parametrize(
    ("xml", "line", "reason"),
    [
        ('<Articles>\n<Article num="1"><caption/><text>第一条　x</text>\n</Articles>', 3,
         "not well-formed XML"),
        ("<dataset>\n</dataset>", 1, "expected <Articles>"),
        ('<Articles>\n<Article><caption/><text>第一条　x</text></Article></Articles>', 2,
         "no num attribute"),
        ('<Articles>\n<Article num="1"><caption/></Article></Articles>', 2, "has no <text>"),
        ('<Articles>\n<Article num="1"><text>第一条　x</text></Article>\n'
         '<Article num="1"><text>第一条　y</text></Article></Articles>', 3,
         "duplicate Article num='1' (first at line 2)"),
        ('<Articles>\n<Article num="1"><text>第二条　x</text></Article></Articles>', 2,
         "its heading names article 2"),
        ('<Articles>\n<Article num="1"><text>私権は</text></Article></Articles>', 2,
         "does not start with its heading"),
        ('<Articles>\n<Article num="1a"><text>第一条　x</text></Article></Articles>', 2,
         "not an article number"),
        ('<Articles>\n<Article num="1"><text>第一条　</text></Article></Articles>', 2,
         "no text after its heading"),
        ('<Articles>\n<Article num="1"><para>x</para></Article></Articles>', 2,
         "unexpected <para>"),
        ('<Articles>\nstray<Article num="1"><text>第一条　x</text></Article></Articles>', 2,
         "text outside"),
        ("<Articles>\n</Articles>", 1, "no <Article> elements"),
    ],
)
def test_malformed_files_name_the_line_and_reason(tmp_path: Path, xml: str, line: int,
                                                  reason: str) -> None:
    path = _write(tmp_path, xml)
    with pytest.raises(InputError) as exc:
        list(parse_coliee_xml(path))
    assert exc.value.path == str(path) and exc.value.line == line
    assert reason in exc.value.reason


def test_nothing_is_yielded_before_a_late_error(tmp_path: Path) -> None:
    # The whole file is checked before the first article comes out.
    bad = SAMPLE.replace("</Articles>", '<Article num="999"><text>x</text></Article></Articles>')
    articles = parse_coliee_xml(_write(tmp_path, bad))
    with pytest.raises(InputError):
        next(articles)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        list(parse_coliee_xml(tmp_path / "nope.xml"))


# --- the real file ------------------------------------------------------------------------------


def test_real_civil_xml_shares_ids_with_the_english_code(japanese_data: Path) -> None:
    from indexer.parsers.coliee import parse_civil_code
    from reranker.datasets import read_queries

    data = japanese_data.parent
    ja = {a.doc_id: a for a in parse_coliee_xml(data / "coliee-ja" / "civil.xml")}
    en = {a.doc_id for a in parse_civil_code(data / "coliee" / "civil_code_en-1to724-2.txt")}
    # 800 entries: 7 ranges and 6 deleted articles are not documents.
    assert len(ja) == 787
    assert {"1", "3-2", "398-2", "724-2", "213-2", "264-14"} <= set(ja)
    # The Japanese text is a newer revision: it holds every English article and adds the
    # 2021 property-law articles.
    assert en <= set(ja)
    assert {"213-2", "264-2", "264-14"} <= set(ja) - en
    assert all(a.sentences and a.text for a in ja.values())
    assert ja["4"].text == "年齢十八歳をもって、成年とする。"
    # Every gold article of the Japanese queries is a document.
    queries = read_queries(sorted((data / "coliee-ja" / "simple").glob("simple_*_jp.xml")))
    assert {g for q in queries for g in q.gold} <= set(ja)


BOMB = """<?xml version="1.0"?>
<!DOCTYPE Articles [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>
<Articles><Article num="1"><text>第一条　&d;</text></Article></Articles>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE Articles [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Articles><Article num="1"><text>第一条　&x;</text></Article></Articles>
"""


@pytest.mark.parametrize("xml", [BOMB, EXTERNAL])
def test_a_dtd_is_refused_before_any_entity_is_expanded(tmp_path: Path, xml: str) -> None:
    from reranker.datasets import read_coliee_xml

    for reader in (lambda p: list(parse_coliee_xml(p)), read_coliee_xml):
        with pytest.raises(InputError) as exc:
            reader(_write(tmp_path, xml))
        assert "DOCTYPE" in exc.value.reason and exc.value.line == 2
