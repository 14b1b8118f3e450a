"""Parser for COLIEE's XML civil code (``coliee-ja/civil.xml``, the Japanese distribution).

The file, as COLIEE's organisers extract it from the e-Gov law XML::

    <Articles>
      <Article num="398-2">
        <caption>（根抵当権）</caption>                  <- may be empty: <caption/>
        <text>第三百九十八条の二　抵当権は、…できる。       <- heading + first paragraph
    ２　前項の規定による抵当権…                         <- paragraphs: full-width numerals
    一　元本を領収し、…                                 <- items: kanji numerals
    </text>
      </Article>
      <Article num="38:84"><caption/><text>第三十八条から第八十四条まで　削除</text></Article>
    </Articles>

Choices made here:

* ``doc_id`` is the ``num`` attribute (``"3-2"``, ``"724-2"``): the ids the English COLIEE text
  uses for the same articles, so an English and a Japanese index agree on article identity.
  A ``num`` must be digits with optional ``-n`` suffixes; ids must be unique.
* Ranges (``num="38:84"``) and articles whose text is ``削除`` (deleted) are not documents.
* ``text`` is the body without the article's own heading (``第三百九十八条の二　``): stripped
  lines joined with "\\n". The heading must name the article's ``num`` (a mismatch is an error:
  the file would be misaligned). ``caption`` drops the full-width parentheses; an empty
  caption is ``None``.
* ``sentences`` are :func:`indexer.sentences.article_sentences` in Japanese: each paragraph and
  item line, and long ones cut after 。.
* Malformed XML, an unexpected element, a missing ``num`` or ``<text>`` raises
  :class:`InputError` with the file, the line and the reason (nothing is yielded after it, so
  callers that consume the iterator first never write half a corpus).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from indexer.articles import Article
from indexer.sentences import article_sentences
from lexrerank.errors import InputError
from reranker.datasets import JAPANESE_HEADING, japanese_article_id
from reranker.input_files import read_input
from reranker.xml_input import expat_parser
from reranker.xml_input import parse as parse_xml

_ID = re.compile(r"\d+(?:-\d+)*")
_RANGE = re.compile(r"\d+(?:-\d+)*:\d+(?:-\d+)*")
_DELETED = "削除"
_CAPTION_PARENS = "（）()"


def parse_coliee_xml(path: str | Path, language: str = "ja") -> Iterator[Article]:
    """Yield the live articles of a COLIEE ``<Articles>`` XML file, in file order.

    ``language`` fills :attr:`Article.language` and chooses the sentence rules (default "ja").
    Raises :class:`InputError` (path, line, reason) for a missing or malformed file.
    """
    path = Path(path)
    data = read_input(path, "the civil.xml file")
    seen: dict[str, int] = {}
    # Every entry is checked before the first article comes out (a civil code is ~800).
    articles = [_article(path, entry, seen, language) for entry in _read_entries(path, data)]
    yield from (a for a in articles if a is not None)


def _read_entries(path: Path, data: bytes) -> list[dict]:
    """Every <Article> as {num, line, caption, text}; the XML's structure is checked here."""
    entries: list[dict] = []
    state: dict = {"root": False, "article": None, "field": None}
    parser = expat_parser(path)

    def fail(reason: str) -> None:
        raise InputError(str(path), reason, parser.CurrentLineNumber)

    def start(tag: str, attrs: dict[str, str]) -> None:
        if not state["root"]:
            if tag != "Articles":
                fail(f"root element is <{tag}>, expected <Articles> (COLIEE civil.xml)")
            state["root"] = True
        elif tag == "Article" and state["article"] is None:
            state["article"] = {"num": attrs.get("num"), "line": parser.CurrentLineNumber,
                                "caption": None, "text": None}
        elif tag in ("caption", "text") and state["article"] is not None \
                and state["field"] is None:
            if state["article"][tag] is not None:
                fail(f"<Article num={state['article']['num']!r}> has two <{tag}> elements")
            state["field"] = tag
            state["article"][tag] = []
        else:
            fail(f"unexpected <{tag}> (expected <Article num><caption/><text/></Article>)")

    def end(tag: str) -> None:
        if tag in ("caption", "text"):
            state["field"] = None
        elif tag == "Article":
            entries.append(state["article"])
            state["article"] = None

    def chars(text: str) -> None:
        if state["field"] is not None:
            state["article"][state["field"]].append(text)
        elif text.strip():
            fail(f"text outside <caption>/<text>: {text.strip()[:40]!r}")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parse_xml(parser, data, path)
    if not entries:
        raise InputError(str(path), "no <Article> elements: is this COLIEE's civil.xml?", 1)
    return entries


def _article(path: Path, entry: dict, seen: dict[str, int], language: str) -> Article | None:
    """The Article of one entry, or None for a range or a deleted article."""
    line = entry["line"]
    num = (entry["num"] or "").strip()
    if not num:
        raise InputError(str(path), '<Article> has no num attribute (expected num="398-2")',
                         line)
    if num in seen:
        raise InputError(str(path), f"duplicate Article num={num!r} (first at line {seen[num]})",
                         line)
    seen[num] = line
    if entry["text"] is None:
        raise InputError(str(path), f"<Article num={num!r}> has no <text>", line)
    raw = "".join(entry["text"]).strip()
    if _RANGE.fullmatch(num):
        return None  # "第三十八条から第八十四条まで　削除": a span of deleted articles
    if not _ID.fullmatch(num):
        raise InputError(str(path), f"num={num!r} is not an article number like 398-2", line)
    heading = JAPANESE_HEADING.match(raw)
    if heading is None:
        raise InputError(str(path), f"Article {num}: text does not start with its heading "
                                    f"第…条 ({raw[:20]!r})", line)
    named = japanese_article_id(heading.group(1) + "条" + heading.group(2))
    if named != num:
        raise InputError(str(path), f"Article {num}: its heading names article {named}", line)
    lines = [s.strip() for s in raw[heading.end():].splitlines()]
    text = "\n".join(s for s in lines if s)
    if text == _DELETED:
        return None
    if not text:
        raise InputError(str(path), f"Article {num} has no text after its heading", line)
    caption = "".join(entry["caption"] or []).strip().strip(_CAPTION_PARENS).strip() or None
    return Article(
        doc_id=num,
        text=text,
        sentences=tuple(article_sentences(text, language)),
        language=language,
        caption=caption,
    )
