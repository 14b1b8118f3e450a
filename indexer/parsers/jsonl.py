"""Parser for the generic JSONL corpus format: one statute article per line.

Each non-blank line is one JSON object (UTF-8; a BOM and CRLF line ends are accepted)::

    {"id": "civ-1", "text": "(1) Private rights ...\\n(2) The exercise ...", "caption": "Basics"}
    {"id": "civ-2", "text": "This Code must be construed ...", "headings": {"chapter": "I"}}
    {"id": "gdpr-5", "text": "...", "language": "en", "law_id": "GDPR", "article_id": "5"}

Fields:

* ``id`` (required): string, unique in the file, no whitespace; it becomes the ``doc_id``.
* ``text`` (required): non-empty string, the article body; "\\n" separates paragraphs/items.
* ``caption``: string or null, the article's title.
* ``sentences``: non-empty list of non-empty strings, the units the rerankers attend over;
  when absent they come from :func:`indexer.sentences.article_sentences`.
* ``language``: ISO code ("en", "vi", "ja"); default: the ``language`` argument.
* ``law_id``, ``article_id``: strings or null.
* ``headings``: object mapping a level name ("part", "chapter", ...) to its heading string.

Blank lines are skipped. Any other key, invalid JSON, a missing or empty ``id``/``text``, a
wrong type or a duplicate ``id`` raises :class:`InputError` with the path and 1-based line.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from indexer.articles import Article
from indexer.sentences import article_sentences
from lexrerank.errors import InputError

REQUIRED_FIELDS = ("id", "text")
OPTIONAL_FIELDS = ("caption", "sentences", "language", "law_id", "article_id", "headings")


def parse_jsonl(path: str | Path, language: str = "en") -> Iterator[Article]:
    """Yield one :class:`Article` per non-blank line of a JSONL corpus file, in file order.

    ``language`` is the default for records without a ``language`` field. Raises
    :class:`InputError` (path, line, reason) at the first bad line.
    """
    path = Path(path)
    seen: dict[str, int] = {}
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(
                str(path), f"invalid JSON: {e.msg} (column {e.colno})", line_no
            ) from None
        except RecursionError:
            raise InputError(str(path), "JSON nested too deeply", line_no) from None
        article = _article(path, line_no, rec, language)
        if article.doc_id in seen:
            raise InputError(
                str(path),
                f"duplicate id {article.doc_id!r} (first on line {seen[article.doc_id]})",
                line_no,
            )
        seen[article.doc_id] = line_no
        yield article


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line) of a UTF-8 file, BOM dropped, CR/LF removed."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise InputError(str(path), "file not found") from None
    except IsADirectoryError:
        raise InputError(str(path), "is a directory; give a .jsonl file") from None
    with f:
        # Split on b"\n" only: str.splitlines would also split on U+2028 inside JSON strings.
        for n, raw in enumerate(f, 1):
            if n == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise InputError(str(path), f"not UTF-8 text ({e.reason})", n) from None


def _article(path: Path, line_no: int, rec: object, default_language: str) -> Article:
    """Validate one decoded record and build its Article (:class:`InputError` if invalid)."""

    def fail(reason: str) -> InputError:
        return InputError(str(path), reason, line_no)

    if not isinstance(rec, dict):
        raise fail(f"expected a JSON object per line, got {type(rec).__name__}")
    _check_keys(rec, fail)
    doc_id, text = _id_and_text(rec, fail)
    caption = _optional_str(rec, "caption", fail)
    law_id = _optional_str(rec, "law_id", fail)
    article_id = _optional_str(rec, "article_id", fail)
    language = _optional_str(rec, "language", fail) or default_language
    headings = _headings(rec, fail)
    return Article(
        doc_id=doc_id,
        text=text.strip(),
        sentences=_sentences(rec, text, language, fail),
        language=language,
        law_id=law_id,
        article_id=article_id,
        caption=caption,
        headings=headings,
    )


def _check_keys(rec: dict, fail: Callable[[str], InputError]) -> None:
    """Only known keys, and every required one."""
    unknown = sorted(set(rec) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        # Strict, so that a misspelt key ("txt", "title") is reported instead of being lost.
        raise fail(
            f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)}"
        )
    for key in REQUIRED_FIELDS:
        if key not in rec:
            raise fail(f"missing required key {key!r}")


def _id_and_text(rec: dict, fail: Callable[[str], InputError]) -> tuple[str, str]:
    """``id`` (a non-empty string without whitespace) and ``text`` (a non-blank string)."""
    doc_id, text = rec["id"], rec["text"]
    if not isinstance(doc_id, str):
        raise fail(f"'id' must be a string, not {type(doc_id).__name__}")
    if not doc_id or any(c.isspace() for c in doc_id):
        raise fail(f"'id' must be non-empty and contain no whitespace: {doc_id!r}")
    if not isinstance(text, str):
        raise fail(f"'text' must be a string, not {type(text).__name__}")
    if not text.strip():
        raise fail(f"'text' of {doc_id!r} is empty")
    return doc_id, text


def _headings(rec: dict, fail: Callable[[str], InputError]) -> dict[str, str]:
    """``headings``: an object of strings (absent or null: empty)."""
    headings = rec.get("headings") or {}
    if not isinstance(headings, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headings.items()
    ):
        raise fail('\'headings\' must be an object of strings, e.g. {"chapter": "Chapter I"}')
    return dict(headings)


def _sentences(rec: dict, text: str, language: str, fail: Callable[[str], InputError]
               ) -> tuple[str, ...]:
    """The record's own ``sentences`` (stripped, blanks dropped), else ``text`` split."""
    if "sentences" in rec and rec["sentences"] is not None:
        sents = rec["sentences"]
        if not isinstance(sents, list) or not all(isinstance(s, str) for s in sents):
            raise fail("'sentences' must be a list of strings")
        sentences = tuple(s.strip() for s in sents if s.strip())
        if not sentences:
            raise fail("'sentences' is empty; leave it out to split 'text' automatically")
        return sentences
    return tuple(article_sentences(text, language))


def _optional_str(rec: dict, key: str, fail: Callable[[str], InputError]) -> str | None:
    """An optional string field: absent or null gives None; empty strings count as absent."""
    value = rec.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise fail(f"{key!r} must be a string or null, not {type(value).__name__}")
    return value.strip() or None
