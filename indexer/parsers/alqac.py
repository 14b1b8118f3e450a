"""Parser for the ALQAC law corpus (``alqac2023/law.json``).

Format: ``[{"id": law_id, "articles": [{"id": article_id, "text": "..."}]}]``. The first line of
an article's ``text`` is its title ("Phạm vi điều chỉnh"), then the body: clauses "1.", "2.",
points "a)", "b)", often separated by blank lines.

Choices made here:

* ``doc_id`` is :func:`reranker.datasets.alqac_doc_id` (``"Luật Du lịch@1"``): an article id
  is only unique within its law. Ids may be JSON strings or integers; (law, article) pairs
  must be unique.
* ``caption`` is the first line when it looks like a title (see :func:`is_title_line`);
  ``text`` is then the rest, with lines stripped and blank lines dropped. Three articles in the
  2023 data are a title only; their ``text`` is the title too, so that no article is empty.
* ``headings`` is ``{"law": law_id}``; ``law_id``/``article_id`` are set; language "vi".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from indexer.articles import Article
from indexer.sentences import article_sentences
from lexrerank.errors import InputError
from reranker.datasets import alqac_doc_id
from reranker.input_files import read_input

# Clause/point markers that open a body line, never a title: "1.", "1)", "a)", "đ)", "-".
_CLAUSE = re.compile(r"^(?:\d+[.)]|[a-zđ]\)|[-–•+*])(?:\s|$)")
_MAX_TITLE_CHARS = 300  # the longest title in the 2023 data has 261 characters


def is_title_line(line: str) -> bool:
    """True if ``line`` (an article's first line) reads as a title, not as body text.

    A title is short, does not start with a clause marker and does not end like a sentence
    or a lead-in (".", ";", ":", ",").
    """
    line = line.strip()
    return (
        0 < len(line) <= _MAX_TITLE_CHARS
        and not _CLAUSE.match(line)
        and not line.endswith((".", ";", ":", ","))
    )


def parse_alqac_laws(path: str | Path, language: str = "vi") -> Iterator[Article]:
    """Yield every article of an ALQAC ``law.json``, law by law, in file order.

    Raises :class:`InputError` for a missing file, invalid JSON (with its line), a missing or
    mistyped key, an empty article or a duplicate (law, article) pair.
    """
    path = Path(path)
    laws = _load_json(path)
    if not isinstance(laws, list):
        raise InputError(
            str(path), 'expected a JSON array of laws: [{"id": ..., "articles": [...]}]'
        )
    seen: set[str] = set()
    for n, law in enumerate(laws, 1):
        where = f"law #{n}"
        if not isinstance(law, dict):
            raise InputError(str(path), f"{where} is not a JSON object")
        law_id = _id(path, law, "id", where)
        where = f"law {law_id!r}"
        articles = law.get("articles")
        if not isinstance(articles, list):
            raise InputError(str(path), f"{where}: missing or non-list key 'articles'")
        for m, art in enumerate(articles, 1):
            a_where = f"{where}, article #{m}"
            if not isinstance(art, dict):
                raise InputError(str(path), f"{a_where} is not a JSON object")
            article_id = _id(path, art, "id", a_where)
            a_where = f"{where}, article {article_id!r}"
            raw = art.get("text")
            if not isinstance(raw, str):
                raise InputError(str(path), f"{a_where}: missing or non-string key 'text'")
            doc_id = alqac_doc_id(law_id, article_id)
            if doc_id in seen:
                raise InputError(str(path), f"{a_where}: duplicate article id in this law")
            seen.add(doc_id)
            lines = [ln.strip() for ln in raw.splitlines() if ln.strip()]
            if not lines:
                raise InputError(str(path), f"{a_where}: empty 'text'")
            caption = lines[0] if is_title_line(lines[0]) else None
            body = lines[1:] if caption is not None else lines
            # A title-only article keeps its title as text: an Article is never empty.
            text = "\n".join(body) if body else lines[0]
            yield Article(
                doc_id=doc_id,
                text=text,
                sentences=tuple(article_sentences(text, language)),
                language=language,
                law_id=law_id,
                article_id=article_id,
                caption=caption,
                headings={"law": law_id},
            )


def _load_json(path: Path) -> object:
    """Parse a JSON file; a missing file or a syntax error becomes InputError (with line)."""
    raw = read_input(path, "the law.json file")
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


def _id(path: Path, obj: dict, key: str, where: str) -> str:
    """A required id: a non-empty string, or an integer taken as its decimal string."""
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
