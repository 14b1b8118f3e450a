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
    reader = _CodeReader(path, language)
    line_no = 0
    for line_no, raw in _lines(path):
        line = raw.strip()
        if line:
            yield from reader.read(line, line_no)
    yield from reader.close(line_no)


class _CodeReader:
    """What the parser knows between lines: the headings in force, a pending caption, the
    article being read, the ids seen. :meth:`read` takes one non-blank line, :meth:`close`
    the end of the file; both yield the articles they complete."""

    def __init__(self, path: Path, language: str) -> None:
        self.path = path
        self.language = language
        self.headings: dict[str, str] = {}
        self.caption: tuple[str, int] | None = None  # pending caption and its line
        # The article being read: id, caption, headings, lines, line.
        self.current: dict | None = None
        self.seen: dict[str, int] = {}
        self.articles_seen = 0  # live or deleted; zero at the end means "not a civil code"
        self.first_text_line = True

    def read(self, line: str, line_no: int) -> Iterator[Article]:
        """One stripped, non-blank line."""
        is_first, self.first_text_line = self.first_text_line, False
        if self.caption is not None and not _ARTICLE.match(line) and not _DELETED.match(line):
            # The parenthesised line was not a caption after all: a line of the current article.
            self._caption_as_text(*self.caption)
        if _DELETED.match(line):
            yield from self._deleted()
        elif m := _ARTICLE.match(line):
            yield from self._article(m, line_no)
        elif m := _HEADING.match(line):
            yield from self._heading(m.group("level").lower(), line)
        elif (m := _CAPTION.match(line)) and not _MARKER.match(line):
            self.caption = (m.group("caption").strip(), line_no)
        elif self.current is not None:
            self.current["lines"].append(line)
        elif not is_first:  # the first may be the title, e.g. "Civil Code (Part I, ...)"
            raise InputError(
                str(self.path),
                f"text outside any article: {line[:60]!r} (expected 'Article N ...', a "
                "heading such as 'Chapter I ...', or a caption '(...)')",
                line_no,
            )

    def close(self, last_line: int) -> Iterator[Article]:
        """The end of the file (``last_line``: its last line number, 0 when empty)."""
        if self.caption is not None:
            self._caption_as_text(*self.caption)
        yield from self._finish()
        if self.articles_seen == 0:
            raise InputError(
                str(self.path),
                "no 'Article N' line found: is this the COLIEE civil code text? (for other "
                "corpora use --format alqac or --format jsonl)",
                max(last_line, 1),
            )

    def _deleted(self) -> Iterator[Article]:
        """"Article 208  Deleted": no document, and any pending caption is dropped."""
        self.articles_seen += 1
        self.caption = None
        yield from self._finish()

    def _article(self, m: re.Match[str], line_no: int) -> Iterator[Article]:
        """"Article N ...": the previous article is complete, this one starts."""
        self.articles_seen += 1
        doc_id = m.group("id")
        if doc_id in self.seen:
            raise InputError(
                str(self.path),
                f"duplicate Article {doc_id} (first at line {self.seen[doc_id]})",
                line_no,
            )
        self.seen[doc_id] = line_no
        yield from self._finish()
        self.current = {
            "id": doc_id,
            "line": line_no,
            "caption": self.caption[0] if self.caption else None,
            "headings": dict(self.headings),
            "lines": [m.group("body").strip()] if m.group("body") else [],
        }
        self.caption = None

    def _heading(self, level: str, line: str) -> Iterator[Article]:
        """A heading ends the current article and replaces its level and every lower one."""
        yield from self._finish()
        for lower in HEADING_LEVELS[HEADING_LEVELS.index(level) :]:
            self.headings.pop(lower, None)
        self.headings[level] = line

    def _caption_as_text(self, caption: str, line_no: int) -> None:
        """The pending caption is a continuation line; outside an article it is an error."""
        self.caption = None
        line = f"({caption})"
        if self.current is None:
            raise InputError(
                str(self.path),
                f"parenthesised line {line[:60]!r} is not followed by an 'Article N' line and "
                "is not inside an article",
                line_no,
            )
        self.current["lines"].append(line)

    def _finish(self) -> Iterator[Article]:
        """Yield the completed article (if any); an article with no body is an error."""
        current, self.current = self.current, None
        if current is None:
            return
        text = "\n".join(current["lines"]).strip()
        if not text:
            raise InputError(str(self.path), f"Article {current['id']} has no text",
                             current["line"])
        yield Article(
            doc_id=current["id"],
            text=text,
            sentences=tuple(article_sentences(text, self.language)),
            language=self.language,
            caption=current["caption"],
            headings=current["headings"],
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
