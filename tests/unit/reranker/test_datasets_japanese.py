"""Japanese COLIEE queries: kanji article numbers, both query forms, pairs without gold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lexrerank.errors import InputError
from reranker.datasets import (
    coliee_gold,
    japanese_article_id,
    kanji_number,
    read_coliee_xml,
    read_queries,
    read_query_set,
)

RITEVAL_JP = """<?xml version="1.0" encoding="UTF-8"?>
<dataset>
<pair id="R04-01-U" label="N">
<t1>（未成年者の法律行為）
第五条　未成年者が法律行為をするには、その法定代理人の同意を得なければならない。
２　第一項の規定にかかわらず、第百二十条の規定を準用する。
（取消権者）
第百二十条　行為能力の制限によって取り消すことができる行為は、取り消すことができる。</t1>
<t2>
親権者の同意を得ずに契約を締結した未成年者は、取り消すことができない。
</t2>
</pair>
<pair id="R04-09-I" label="N">
<t2>gold を持たない問題。</t2>
</pair>
<pair id="R4-10-A" label="Y">
<t1>第三百九十八条の二　抵当権は、設定することができる。
第三十八条から第八十四条まで　削除</t1>
<t2>根抵当権を設定することができる。</t2>
</pair>
</dataset>
"""

SIMPLE_JP = """<?xml version="1.0" encoding="UTF-8"?>
<dataset>
<pair id="R04-01-U" label="N">
<article>5</article>
<article>120</article>
<t2>親権者の同意を得ずに契約を締結した未成年者は、取り消すことができない。</t2>
</pair>
<pair id="R04-09-I" label="N">
<t2>gold を持たない問題。</t2>
</pair>
<pair id="R04-10-A" label="Y"><article> 398-2 </article><t2>根抵当権</t2></pair>
</dataset>
"""


@pytest.mark.parametrize(
    ("numeral", "value"),
    [
        ("一", 1), ("九", 9), ("十", 10), ("十一", 11), ("二十", 20), ("九十", 90),
        ("九十九", 99), ("百", 100), ("百一", 101), ("百十", 110), ("百二十", 120),
        ("二百", 200), ("三百九十八", 398), ("七百二十四", 724), ("千", 1000),
        ("千五十", 1050), ("二千三百", 2300), ("一〇五", 105), ("〇", 0), ("一万二千", 12000),
    ],
)
def test_kanji_number(numeral: str, value: int) -> None:
    assert kanji_number(numeral) == value


@pytest.mark.parametrize("bad", ["", "五a", "第五", "5"])
def test_kanji_number_rejects_what_is_not_a_numeral(bad: str) -> None:
    with pytest.raises(ValueError):
        kanji_number(bad)


@pytest.mark.parametrize(
    ("heading", "article"),
    [
        ("第九十条", "90"), ("第三百九十八条の二", "398-2"), ("第千五十条", "1050"),
        ("第三百九十八条の二十二", "398-22"), ("第七百二十四条の二", "724-2"),
        ("第三条の二", "3-2"), ("九十条", "90"), ("三百九十八の二", "398-2"),
    ],
)
def test_japanese_article_id(heading: str, article: str) -> None:
    assert japanese_article_id(heading) == article


def test_japanese_gold_is_line_start_headings_only() -> None:
    t1 = ("（未成年者の法律行為）\n第五条　本文、第九条の規定。\n２　第一項\n"
          "　第百二十条　字下げの見出し\n第三十八条から第八十四条まで　削除\n第五条　重複")
    # References (第九条の規定, 第一項) and the deleted range are not gold; order kept.
    assert coliee_gold(t1) == ("5", "120")


def test_english_and_japanese_headings_in_one_t1_keep_their_order() -> None:
    assert coliee_gold("第三条　x\nArticle 1 y\n第二条　z") == ("3", "1", "2")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_riteval_jp_reads_kanji_headings_and_skips_pairs_without_gold(tmp_path: Path) -> None:
    result = read_coliee_xml(_write(tmp_path, "riteval_R04_jp.xml", RITEVAL_JP))
    assert [(q.qid, q.gold) for q in result.queries] == [
        ("R04-01-U", ("5", "120")), ("R04-10-A", ("398-2",))]
    assert result.skipped == ("R04-09-I",)
    assert result.queries[0].text.startswith("親権者の同意を得ずに")


def test_simple_jp_reads_article_elements(tmp_path: Path) -> None:
    result = read_coliee_xml(_write(tmp_path, "simple_R04_jp.xml", SIMPLE_JP))
    assert [(q.qid, q.gold) for q in result.queries] == [
        ("R04-01-U", ("5", "120")), ("R04-10-A", ("398-2",))]
    assert result.skipped == ("R04-09-I",)


def test_read_query_set_counts_skipped_across_files(tmp_path: Path) -> None:
    a = _write(tmp_path, "riteval_R04_jp.xml", RITEVAL_JP)
    b = _write(tmp_path, "other.xml", SIMPLE_JP.replace("R04-", "R03-"))
    result = read_query_set([a, b])
    assert len(result.queries) == 4 and result.skipped == ("R04-09-I", "R03-09-I")
    assert read_queries([a, b]) == result.queries


def test_a_file_of_only_pairs_without_gold_is_not_an_error(tmp_path: Path) -> None:
    xml = '<dataset><pair id="R04-09-I"><t2>q</t2></pair></dataset>'
    result = read_coliee_xml(_write(tmp_path, "x.xml", xml))
    assert result.queries == [] and result.skipped == ("R04-09-I",)


def test_t1_without_any_heading_is_still_an_error(tmp_path: Path) -> None:
    xml = '<dataset>\n<pair id="R04-01-A"><t1>第五条の規定による。</t1><t2>q</t2></pair></dataset>'
    with pytest.raises(InputError) as exc:
        read_coliee_xml(_write(tmp_path, "x.xml", xml))
    assert exc.value.line == 2 and "heading" in exc.value.reason


# --- the real files -----------------------------------------------------------------------------


def test_every_heading_in_the_real_riteval_files_agrees_with_the_simple_files(
        japanese_data: Path) -> None:
    folder = japanese_data
    riteval = read_query_set(sorted((folder / "train").glob("riteval_*_jp.xml")))
    simple = read_query_set(sorted((folder / "simple").glob("simple_*_jp.xml")))
    assert len(riteval.queries) + len(riteval.skipped) == 1041
    assert riteval.skipped == simple.skipped and len(riteval.skipped) == 7
    gold = {q.qid: q.gold for q in simple.queries}
    # Every kanji form in the data (1-5 characters, の suffixes up to の二十二) converts to the
    # id the simple form gives.
    assert {q.qid: q.gold for q in riteval.queries} == gold


def test_every_numeral_form_in_the_real_headings_converts(japanese_data: Path) -> None:
    folder = japanese_data
    numeral = "[〇一二三四五六七八九十百千]+"
    heading = re.compile(rf"^\s*第({numeral})条((?:の{numeral})*)", re.MULTILINE)
    forms = set()
    for f in (folder / "train").glob("riteval_*_jp.xml"):
        forms |= {m.group(1) for m in heading.finditer(f.read_text(encoding="utf-8"))}
    values = {kanji_number(f) for f in forms}
    # Distinct spellings are distinct numbers, all within the code (articles 1 to 724);
    # civil.xml's 787 headings are checked against their num by the corpus parser's test.
    assert len(forms) > 400 and len(values) == len(forms) and max(values) <= 724
