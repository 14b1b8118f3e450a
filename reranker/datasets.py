"""Evaluation and training query sets: COLIEE XML and ALQAC JSON, read into :class:`Query`.

Pure library code: imports neither OpenSearch nor Celery.

* COLIEE (``riteval_<YEAR>_en.xml`` or a test file in the same shape)::

      <pair id="R04-01-I" label="N"><t1>(Caption)
      Article 5 (1) ...gold article text...</t1><t2>the query</t2></pair>

  The gold articles are the "Article N" headings at the start of a line of ``<t1>``
  (``Article 572``, ``Article 3-2``, ``Article 537(1)``). "Article N" inside body text
  ("the provisions of Article 5") is a cross reference, not gold. Query ids are normalized
  with :func:`normalize_qid`.
* ALQAC (``train.json``): ``[{"question_id", "text", "relevant_articles": [{"law_id",
  "article_id"}]}]``; gold ids are :func:`alqac_doc_id` strings. Ids are kept as written.

Every problem raises :class:`lexrerank.errors.InputError` naming the file and, where known,
the line.
"""

from __future__ import annotations

import json
import re
import xml.parsers.expat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lexrerank.errors import InputError


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


def coliee_gold(t1: str) -> tuple[str, ...]:
    """The article ids of the "Article N" headings in a COLIEE ``<t1>``, in order, de-duplicated."""
    return tuple(dict.fromkeys(m.group(1) for m in _GOLD_HEADING.finditer(t1)))


def read_coliee_xml(path: str | Path) -> list[Query]:
    """Read a COLIEE ``<dataset><pair id><t1/><t2/></pair>...`` file into queries.

    Each pair needs an ``id``, a non-empty ``<t2>`` (the query) and a ``<t1>`` with at least
    one gold "Article N" heading. Bad XML, a missing part or a duplicate id (after
    :func:`normalize_qid`) raises :class:`InputError` with the line of the problem.
    """
    path = Path(path)
    data = _read_bytes(path)
    queries: list[Query] = []
    seen: dict[str, int] = {}
    # expat (not ElementTree) because it reports the line of every element, so that errors
    # can point at the offending <pair>.
    parser = xml.parsers.expat.ParserCreate()
    state: dict = {"pair": None, "field": None}

    def start(tag: str, attrs: dict[str, str]) -> None:
        line = parser.CurrentLineNumber
        if tag == "pair":
            state["pair"] = {"id": attrs.get("id"), "line": line, "t1": None, "t2": None}
        elif tag in ("t1", "t2") and state["pair"] is not None:
            state["field"] = tag
            state["pair"][tag] = []

    def end(tag: str) -> None:
        if tag in ("t1", "t2"):
            state["field"] = None
        elif tag == "pair" and state["pair"] is not None:
            queries.append(_coliee_query(path, state["pair"], seen))
            state["pair"] = None

    def chars(data: str) -> None:
        if state["field"] is not None:
            state["pair"][state["field"]].append(data)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as e:
        raise InputError(
            str(path),
            f"not well-formed XML ({xml.parsers.expat.errors.messages[e.code]}, "
            f"column {e.offset + 1})",
            line=e.lineno,
        ) from e
    if not queries:
        raise InputError(str(path), "no <pair> elements: is this a COLIEE query file?")
    return queries


def _coliee_query(path: Path, pair: dict, seen: dict[str, int]) -> Query:
    """Build one Query from the collected parts of a <pair>; validate them."""
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
    if pair["t1"] is None:
        raise InputError(str(path), f"pair {raw_id!r} has no <t1> with the gold articles", line)
    gold = coliee_gold("".join(pair["t1"]))
    if not gold:
        raise InputError(
            str(path),
            f"pair {raw_id!r}: no 'Article N' heading at a line start in <t1>, "
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
    """Read query files, choosing the reader by extension (.xml COLIEE, .json ALQAC) or content.

    Query ids must be unique across all files; a missing file, an unknown format or a
    duplicate id raises :class:`InputError`.
    """
    if isinstance(paths, (str, Path)):  # a lone path is a str, which is also a Sequence
        paths = [paths]
    out: list[Query] = []
    origin: dict[str, Path] = {}
    for p in paths:
        p = Path(p)
        reader = read_coliee_xml if _query_format(p) == "coliee" else read_alqac_json
        for q in reader(p):
            if q.qid in origin:
                raise InputError(
                    str(p),
                    f"query id {q.qid!r} also appears in {origin[q.qid]}: give each query set once",
                )
            origin[q.qid] = p
            out.append(q)
    return out


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
    """The file's bytes, or InputError if it is missing or unreadable."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(str(path), "file not found") from None
    except IsADirectoryError:
        raise InputError(str(path), "is a directory; give a query file") from None
    except OSError as e:
        raise InputError(str(path), f"cannot read file ({e.strerror})") from None


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
