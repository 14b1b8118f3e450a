"""Parser for the COLIEE English civil code (``civil_code_en-1to724-2.txt``).

The file is a sequence of lines (UTF-8, with or without BOM; CRLF, LF or CR line ends)::

    Civil Code (Part I, Part II and Part III)      <- optional title, first line only
    Part I General Provisions                      <- headings: Part, Chapter, Section,
    Chapter I Common Provisions                       Subsection, Division + a numeral
    (Fundamental Principles)                       <- caption of the next article
    Article 1  (1) Private rights must be ...      <- "Article N" + first line of the body
    (2) The exercise of rights ...                 <- continuation lines: paragraphs, items
    Article 208  Deleted                           <- deleted: not a document
    Articles 38 to 84  Deleted                     <- deleted range ("to", "through", "and")

Choices made here:

* ``doc_id`` is the article number as written (``"3-2"``, ``"724-2"``); ids must be unique.
* ``text`` is the body without the "Article N" prefix: stripped lines joined with "\\n".
* ``caption`` is the parenthesised line directly before the article, without its
  parentheses. In the printed code one caption may cover several consecutive articles; here a
  caption goes only to the article right after it (the others get ``None``) because the file
  does not mark how far a caption reaches. A caption right before a deleted article is dropped.
* A parenthesised line that is *not* followed by an article heading is an ordinary line of the
  current article (no such line exists in the real file).
* ``headings`` holds the current heading line of each level (``part`` ... ``division``); a new
  heading clears all lower levels. A heading ends the current article, so text between a
  heading and the next article is an error.
* A line that starts with "Article N " always opens an article (continuation lines in the
  file start with "(1)", "(i)", "(a)" or plain words, never with a cross reference).
* Lines before the first article must be headings or captions, except one title line at the
  very start of the file; anything else raises :class:`InputError` with the line number.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import Path

from indexer.articles import Article
from indexer.sentences import article_sentences
from lexrerank.errors import InputError

HEADING_LEVELS = ("part", "chapter", "section", "subsection", "division")

_ID = r"\d+(?:-\d+)*"
# Deleted articles: "Article 208  Deleted", "Article 618 Deleted", "Articles 38 to 84  Deleted".
_DELETED = re.compile(
    rf"^Articles?\s+{_ID}(?:\s+(?:to|through|and)\s+{_ID})?\s+Deleted\.?$", re.IGNORECASE
)
_ARTICLE = re.compile(rf"^Article\s+(?P<id>{_ID})(?:\s+(?P<body>.*))?$")
_HEADING = re.compile(
    r"^(?P<level>Part|Chapter|Section|Subsection|Division)\s+(?:[IVXLCDM]+|\d+(?:-\d+)*)(?:\s|$)"
)
# A caption is a whole line in parentheses; paragraph/item lines "(1) ...", "(ii) ...",
# "(a) ..." also start with "(" and must not be mistaken for one.
_CAPTION = re.compile(r"^\((?P<caption>.*)\)$")
_MARKER = re.compile(r"^\((?:\d+|[ivxlcdm]+|[a-z])\)\s")


def parse_civil_code(path: str | Path, language: str = "en") -> Iterator[Article]:
    """Yield the live articles of a COLIEE civil code text file, in file order.

    ``language`` only fills :attr:`Article.language` (the format itself is the English one).
    Raises :class:`InputError` (path, line, reason) for a missing or malformed file.
    """
    path = Path(path)
    headings: dict[str, str] = {}
    caption: tuple[str, int] | None = None  # pending caption and its line
    current: dict | None = None  # the article being read: id, caption, headings, lines, line
    seen: dict[str, int] = {}
    articles_seen = 0  # live or deleted; zero at the end means "not a civil code file"
    first_text_line = True
    line_no = 0

    for line_no, raw in _lines(path):
        line = raw.strip()
        if not line:
            continue
        is_first, first_text_line = first_text_line, False

        if caption is not None and not _ARTICLE.match(line) and not _DELETED.match(line):
            # The parenthesised line was not a caption after all: a line of the current article.
            _continue(path, current, f"({caption[0]})", caption[1])
            caption = None

        if _DELETED.match(line):
            articles_seen += 1
            caption = None
            yield from _finish(path, current, language)
            current = None
        elif m := _ARTICLE.match(line):
            articles_seen += 1
            doc_id = m.group("id")
            if doc_id in seen:
                raise InputError(
                    str(path),
                    f"duplicate Article {doc_id} (first at line {seen[doc_id]})",
                    line_no,
                )
            seen[doc_id] = line_no
            yield from _finish(path, current, language)
            current = {
                "id": doc_id,
                "line": line_no,
                "caption": caption[0] if caption else None,
                "headings": dict(headings),
                "lines": [m.group("body").strip()] if m.group("body") else [],
            }
            caption = None
        elif m := _HEADING.match(line):
            yield from _finish(path, current, language)
            current = None
            level = m.group("level").lower()
            # A higher heading starts a new scope: clear this level and every lower one.
            for lower in HEADING_LEVELS[HEADING_LEVELS.index(level) :]:
                headings.pop(lower, None)
            headings[level] = line
        elif (m := _CAPTION.match(line)) and not _MARKER.match(line):
            caption = (m.group("caption").strip(), line_no)
        elif current is not None:
            current["lines"].append(line)
        elif is_first:
            pass  # the document title, e.g. "Civil Code (Part I, Part II and Part III)"
        else:
            raise InputError(
                str(path),
                f"text outside any article: {line[:60]!r} (expected 'Article N ...', a "
                "heading such as 'Chapter I ...', or a caption '(...)')",
                line_no,
            )

    if caption is not None:
        _continue(path, current, f"({caption[0]})", caption[1])
    yield from _finish(path, current, language)
    if articles_seen == 0:
        raise InputError(
            str(path),
            "no 'Article N' line found: is this the COLIEE civil code text? (for other "
            "corpora use --format alqac or --format jsonl)",
            max(line_no, 1),
        )


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line) from a UTF-8 file; BOM dropped; LF, CRLF or CR ends."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise InputError(str(path), "file not found") from None
    except IsADirectoryError:
        raise InputError(str(path), "is a directory; give the civil code text file") from None
    with f:
        n = 0
        # Bytes, decoded line by line, so that a decoding error names its exact line.
        for raw in f:
            if n == 0:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(str(path), f"not UTF-8 text ({e.reason})", n + 1) from None
            # CRLF and LF end a bytes line; a bare CR (old Mac files) ends a line too.
            for part in text.removesuffix("\n").removesuffix("\r").split("\r"):
                n += 1
                yield n, part


def _continue(path: Path, current: dict | None, line: str, line_no: int) -> None:
    """Append a continuation line to the current article; outside one it is an error."""
    if current is None:
        raise InputError(
            str(path),
            f"parenthesised line {line[:60]!r} is not followed by an 'Article N' line and is "
            "not inside an article",
            line_no,
        )
    current["lines"].append(line)


def _finish(path: Path, current: dict | None, language: str) -> Iterator[Article]:
    """Yield the completed article (if any); an article with no body is an error."""
    if current is None:
        return
    text = "\n".join(current["lines"]).strip()
    if not text:
        raise InputError(str(path), f"Article {current['id']} has no text", current["line"])
    yield Article(
        doc_id=current["id"],
        text=text,
        sentences=tuple(article_sentences(text, language)),
        language=language,
        caption=current["caption"],
        headings=current["headings"],
    )
