"""Evaluation and training query sets: COLIEE XML and ALQAC JSON, read into :class:`Query`.

Pure library code: imports neither OpenSearch nor Celery.

* COLIEE (``riteval_<YEAR>_en.xml``, ``riteval_<YEAR>_jp.xml`` or a test file in the same
  shape)::

      <pair id="R04-01-I" label="N"><t1>(Caption)
      Article 5 (1) ...gold article text...</t1><t2>the query</t2></pair>

  The gold articles are the headings at the start of a line of ``<t1>``: English
  ``Article 572``, ``Article 3-2``, ``Article 537(1)``; Japanese ``第五百七十二条``,
  ``第三百九十八条の二`` in kanji numerals (:func:`japanese_article_id`). A reference inside
  body text ("the provisions of Article 5", "第五条第一項の規定") is not gold. The
  ``simple_<YEAR>_jp.xml`` form lists the gold ids as ``<article>398-2</article>`` elements
  instead of a ``<t1>``. Pairs with no gold at all are skipped and counted
  (:class:`QuerySet`). Query ids are normalized with :func:`normalize_qid`.
* ALQAC (``train.json``): ``[{"question_id", "text", "relevant_articles": [{"law_id",
  "article_id"}]}]``; gold ids are :func:`alqac_doc_id` strings. Ids are kept as written.

Every problem raises :class:`reranker.errors.InputError` naming the file and, where known,
the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reranker.errors import InputError
from reranker.input_files import read_input
from reranker.xml_input import expat_parser
from reranker.xml_input import parse as parse_xml


@dataclass(frozen=True)
class Query:
    """One query: ``qid`` (normalized for COLIEE), its ``text``, and the gold ``doc_id``s."""

    qid: str
    text: str
    gold: tuple[str, ...]


def alqac_doc_id(law_id: str, article_id: str) -> str:
    """The document id of ALQAC article ``article_id`` of law ``law_id``: ``"law@article"``."""
    return f"{law_id}@{article_id}"


_ERA = re.compile(r"^([A-Za-z]+)(\d+)$")


def normalize_qid(qid: str) -> str:
    """Canonical COLIEE query id, so that differently padded spellings compare equal.

    The id is split on "-"; the era prefix's number and every purely numeric *middle*
    component are zero-padded to two digits; the last component is kept as written.
    ``"R02-1-A"`` -> ``"R02-01-A"``, ``"R1-13-A"`` -> ``"R01-13-A"``,
    ``"H18-1-2"`` -> ``"H18-01-2"``, ``"R05-01-A"`` unchanged. Surrounding whitespace is
    dropped. Ids of other shapes (no "-") come back stripped but otherwise unchanged.
    """
    parts = str(qid).strip().split("-")
    if len(parts) < 2:
        return parts[0]
    era = _ERA.match(parts[0])
    if era:
        parts[0] = f"{era.group(1)}{int(era.group(2)):02d}"
    for i in range(1, len(parts) - 1):
        if parts[i].isdigit():
            parts[i] = f"{int(parts[i]):02d}"
    return "-".join(parts)


# A gold heading: "Article" at the start of a t1 line (after optional whitespace), then the
# number with optional "-n" suffixes, then whitespace, "(" (R04 on: "Article 537(1)"), or the
# end of the line. "Article 5" inside a sentence is not at a line start and is not gold.
_GOLD_HEADING = re.compile(r"^\s*Article\s*(\d+(?:-\d+)*)(?=\s|\(|$)", re.MULTILINE)

_KANJI_DIGITS = {c: i for i, c in enumerate("〇一二三四五六七八九")}
_KANJI_UNITS = {"十": 10, "百": 100, "千": 1000}
_KANJI = "〇一二三四五六七八九十百千万"
#: A Japanese article heading at the start of a text: 第 + kanji number + 条, then "の" +
#: number per suffix level (第三百九十八条の二 is 398-2), then the (full-width) space before
#: the text, consumed. Groups: the number, the suffixes. "第三十八条から第八十四条まで　削除"
#: (a deleted range) and "第五条第一項" (a reference) are not headings.
JAPANESE_HEADING = re.compile(rf"第([{_KANJI}]+)条((?:の[{_KANJI}]+)*)(?:\s+|$)")
_JA_GOLD_HEADING = re.compile(r"^\s*" + JAPANESE_HEADING.pattern, re.MULTILINE)


def kanji_number(text: str) -> int:
    """The value of a kanji numeral as Japanese statutes write article numbers.

    Multiplicative form with 十/百/千 (and 万): 九十 -> 90, 三百九十八 -> 398, 千五十 -> 1050,
    百 -> 100; a unit without a digit before it counts once. Positional digits (一〇五 -> 105)
    are read too. Raises ValueError for an empty string or a character that is not a numeral.
    """
    if not text:
        raise ValueError("empty kanji numeral")
    total, section, digits = 0, 0, None
    for ch in text:
        if ch in _KANJI_DIGITS:
            digits = _KANJI_DIGITS[ch] if digits is None else digits * 10 + _KANJI_DIGITS[ch]
        elif ch in _KANJI_UNITS:
            section += (1 if digits is None else digits) * _KANJI_UNITS[ch]
            digits = None
        elif ch == "万":
            total += (section + (digits or 0) or 1) * 10_000
            section, digits = 0, None
        else:
            raise ValueError(f"{ch!r} in {text!r} is not a kanji numeral")
    return total + section + (digits or 0)


def japanese_article_id(heading: str) -> str:
    """The article id of a heading's number part: "三百九十八条の二" -> "398-2", "九十" -> "90".

    Accepts the number with or without 第 and 条 (``第九十条``, ``九十条``, ``九十``); each
    "の" + numeral adds a "-n" level, as in the civil code's ``num`` attributes.
    """
    core = heading.strip().removeprefix("第")
    main, _, suffixes = core.partition("条")
    parts = [main, *[p for p in suffixes.split("の") if p]] if suffixes else main.split("の")
    return "-".join(str(kanji_number(p)) for p in parts)


def coliee_gold(t1: str) -> tuple[str, ...]:
    """The article ids of the headings in a COLIEE ``<t1>``, in order, de-duplicated.

    English "Article N" headings and Japanese "第…条(の…)" headings are both recognised.
    """
    found = [(m.start(), m.group(1)) for m in _GOLD_HEADING.finditer(t1)]
    found += [(m.start(), japanese_article_id(m.group(1) + "条" + m.group(2)))
              for m in _JA_GOLD_HEADING.finditer(t1)]
    return tuple(dict.fromkeys(article for _, article in sorted(found)))


@dataclass(frozen=True)
class QuerySet:
    """The queries of one or more files, and the ids of the pairs skipped for having no gold."""

    queries: list[Query]
    skipped: tuple[str, ...] = ()


def read_coliee_xml(path: str | Path) -> QuerySet:
    """Read a COLIEE ``<dataset><pair id>...</pair></dataset>`` file into queries.

    Each pair needs an ``id`` and a non-empty ``<t2>`` (the query). Its gold articles come from
    ``<article>N</article>`` elements when it has any (the ``simple_*_jp.xml`` form), otherwise
    from the headings in ``<t1>`` (see :func:`coliee_gold`). A pair with neither ``<t1>`` nor
    ``<article>`` has no gold (COLIEE ships a few, e.g. R04-09-I): it is skipped and its id
    listed in :attr:`QuerySet.skipped`. Bad XML, a ``<t1>`` without a heading, an empty
    ``<article>`` or a duplicate id (after :func:`normalize_qid`) raises :class:`InputError`
    with the line of the problem.
    """
    path = Path(path)
    data = _read_bytes(path)
    queries: list[Query] = []
    skipped: list[str] = []
    seen: dict[str, int] = {}
    parser = expat_parser(path)
    state: dict = {"pair": None, "field": None}

    def start(tag: str, attrs: dict[str, str]) -> None:
        line = parser.CurrentLineNumber
        if tag == "pair":
            state["pair"] = {"id": attrs.get("id"), "line": line, "t1": None, "t2": None,
                             "articles": []}
        elif tag in ("t1", "t2") and state["pair"] is not None:
            state["field"] = tag
            state["pair"][tag] = []
        elif tag == "article" and state["pair"] is not None:
            state["field"] = "article"
            state["pair"]["articles"].append(([], line))

    def end(tag: str) -> None:
        if tag in ("t1", "t2", "article"):
            state["field"] = None
        elif tag == "pair" and state["pair"] is not None:
            query = _coliee_query(path, state["pair"], seen)
            if query.gold:
                queries.append(query)
            else:
                skipped.append(query.qid)
            state["pair"] = None

    def chars(data: str) -> None:
        field = state["field"]
        if field == "article":
            state["pair"]["articles"][-1][0].append(data)
        elif field is not None:
            state["pair"][field].append(data)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parse_xml(parser, data, path)
    if not queries and not skipped:
        raise InputError(str(path), "no <pair> elements: is this a COLIEE query file?")
    return QuerySet(queries, tuple(skipped))


def _coliee_query(path: Path, pair: dict, seen: dict[str, int]) -> Query:
    """Build one Query from the collected parts of a <pair>; validate them.

    The Query's ``gold`` is empty for a pair with neither <t1> nor <article> (skipped).
    """
    line = pair["line"]
    raw_id = (pair["id"] or "").strip()
    if not raw_id:
        raise InputError(str(path), '<pair> has no id attribute (expected id="R04-01-I")', line)
    qid = normalize_qid(raw_id)
    if qid in seen:
        raise InputError(
            str(path), f"duplicate query id {raw_id!r} (same as line {seen[qid]})", line
        )
    seen[qid] = line
    text = " ".join("".join(pair["t2"] or []).split())
    if not text:
        raise InputError(str(path), f"pair {raw_id!r} has no query text in <t2>", line)
    if pair["articles"]:
        listed: list[str] = []
        for parts, article_line in pair["articles"]:
            article = "".join(parts).strip()
            if not article:
                raise InputError(str(path), f"pair {raw_id!r}: empty <article>", article_line)
            listed.append(article)
        return Query(qid=qid, text=text, gold=tuple(dict.fromkeys(listed)))
    if pair["t1"] is None:
        return Query(qid=qid, text=text, gold=())
    gold = coliee_gold("".join(pair["t1"]))
    if not gold:
        raise InputError(
            str(path),
            f"pair {raw_id!r}: no 'Article N' or '第…条' heading at a line start in <t1>, "
            "so the gold articles are unknown",
            line,
        )
    return Query(qid=qid, text=text, gold=gold)


def read_alqac_json(path: str | Path) -> list[Query]:
    """Read ALQAC questions (``question_id``, ``text``, ``relevant_articles``) into queries.

    ``article_id``/``question_id`` may be JSON strings or integers (kept as their decimal
    string). Invalid JSON (with its line), a missing key, a wrong type or a duplicate id
    raises :class:`InputError`.
    """
    path = Path(path)
    items = _load_json(path)
    if not isinstance(items, list):
        raise InputError(str(path), "expected a JSON array of questions at the top level")
    queries: list[Query] = []
    seen: set[str] = set()
    for n, item in enumerate(items, 1):
        where = f"question #{n}"
        if not isinstance(item, dict):
            raise InputError(str(path), f"{where} is not a JSON object")
        qid = _id_field(path, item, "question_id", where)
        where = f"question {qid!r}"
        if qid in seen:
            raise InputError(str(path), f"duplicate question_id {qid!r}")
        seen.add(qid)
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InputError(str(path), f"{where}: 'text' must be a non-empty string")
        rel = item.get("relevant_articles")
        if not isinstance(rel, list) or not rel:
            raise InputError(
                str(path),
                f"{where}: 'relevant_articles' must be a non-empty list of "
                '{"law_id": ..., "article_id": ...}',
            )
        gold: list[str] = []
        for r in rel:
            if not isinstance(r, dict):
                raise InputError(str(path), f"{where}: relevant_articles entry is not an object")
            gold.append(
                alqac_doc_id(
                    _id_field(path, r, "law_id", where), _id_field(path, r, "article_id", where)
                )
            )
        queries.append(Query(qid=qid, text=" ".join(text.split()), gold=tuple(dict.fromkeys(gold))))
    if not queries:
        raise InputError(str(path), "no questions in the file")
    return queries


def read_queries(paths: Sequence[str | Path] | str | Path) -> list[Query]:
    """The queries of :func:`read_query_set` (pairs without gold left out)."""
    return read_query_set(paths).queries


def read_query_set(paths: Sequence[str | Path] | str | Path) -> QuerySet:
    """Read query files, choosing the reader by extension (.xml COLIEE, .json ALQAC) or content.

    Query ids must be unique across all files; a missing file, an unknown format or a
    duplicate id raises :class:`InputError`. COLIEE pairs without gold are skipped and listed.
    """
    if isinstance(paths, (str, Path)):  # a lone path is a str, which is also a Sequence
        paths = [paths]
    out: list[Query] = []
    skipped: list[str] = []
    origin: dict[str, Path] = {}
    for p in paths:
        p = Path(p)
        if _query_format(p) == "coliee":
            file_set = read_coliee_xml(p)
        else:
            file_set = QuerySet(read_alqac_json(p))
        skipped.extend(file_set.skipped)
        for q in file_set.queries:
            if q.qid in origin:
                raise InputError(
                    str(p),
                    f"query id {q.qid!r} also appears in {origin[q.qid]}: give each query set once",
                )
            origin[q.qid] = p
            out.append(q)
    return QuerySet(out, tuple(skipped))


def _query_format(path: Path) -> str:
    """ "coliee" or "alqac" for a query file, by suffix, else by its first non-blank byte."""
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return "coliee"
    if suffix == ".json":
        return "alqac"
    head = _read_bytes(path)[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return "coliee"
    if head.startswith((b"[", b"{")):
        return "alqac"
    raise InputError(
        str(path), "unknown query file format: give COLIEE XML (.xml) or ALQAC JSON (.json)"
    )


def _read_bytes(path: Path) -> bytes:
    return read_input(path, "a query file")


def _load_json(path: Path) -> object:
    """Parse a JSON file; syntax errors become InputError with their line."""
    raw = _read_bytes(path)
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise InputError(str(path), f"not UTF-8 text (byte offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise InputError(
            str(path), f"invalid JSON: {e.msg} (column {e.colno})", line=e.lineno
        ) from None
    except RecursionError:
        raise InputError(str(path), "JSON nested too deeply") from None


def _id_field(path: Path, obj: dict, key: str, where: str) -> str:
    """A required id-like field: a non-empty string, or an integer taken as its decimal string."""
    if key not in obj:
        raise InputError(str(path), f"{where}: missing key {key!r}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(
            str(path), f"{where}: {key!r} must be a string, not {type(value).__name__}"
        )
    value = str(value).strip()
    if not value:
        raise InputError(str(path), f"{where}: {key!r} is empty")
    return value
