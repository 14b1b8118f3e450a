"""Corpus parsers: turn a statute file into a stream of :class:`indexer.articles.Article`.

Formats (see ``docs/corpus-formats.md``):

* ``coliee`` — the COLIEE English civil code text (``.txt``), :mod:`indexer.parsers.coliee`;
* ``coliee-xml`` — COLIEE's XML civil code, the Japanese ``civil.xml`` (``.xml``),
  :mod:`indexer.parsers.coliee_xml`;
* ``alqac`` — the ALQAC ``law.json`` (``.json``), :mod:`indexer.parsers.alqac`;
* ``jsonl`` — one JSON object per article (``.jsonl``/``.ndjson``), :mod:`indexer.parsers.jsonl`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from indexer.articles import Article
from indexer.parsers.alqac import parse_alqac_laws
from indexer.parsers.coliee import parse_civil_code
from indexer.parsers.coliee_xml import parse_coliee_xml
from indexer.parsers.jsonl import parse_jsonl
from lexrerank.errors import InputError

CORPUS_FORMATS = ("coliee", "coliee-xml", "alqac", "jsonl")

_BY_SUFFIX = {".txt": "coliee", ".xml": "coliee-xml", ".json": "alqac", ".jsonl": "jsonl",
              ".ndjson": "jsonl"}


def detect_format(path: str | Path) -> str:
    """The corpus format of ``path`` from its extension: .txt coliee, .xml coliee-xml, .json
    alqac, .jsonl jsonl.

    Raises :class:`InputError` naming the ``--format`` values when the extension is unknown.
    """
    fmt = _BY_SUFFIX.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(
            str(path),
            f"cannot tell the corpus format from the extension {Path(path).suffix!r}: "
            f"pass --format {'|'.join(CORPUS_FORMATS)}",
        )
    return fmt


def parse_corpus(
    path: str | Path, fmt: str | None = None, language: str | None = None
) -> Iterator[Article]:
    """Parse the corpus file ``path`` in format ``fmt`` (detected from the extension if None).

    ``language`` overrides each format's default ("en" for coliee and jsonl, "ja" for
    coliee-xml, "vi" for alqac; in JSONL a record's own ``language`` field still wins). The
    format and the file's existence are checked at call time; content errors surface as
    :class:`InputError` while iterating, so callers that must not half-write should consume
    the iterator first.
    """
    path = Path(path)
    if fmt is None:
        fmt = detect_format(path)
    elif fmt not in CORPUS_FORMATS:
        raise InputError(
            str(path), f"unknown corpus format {fmt!r}: use --format {'|'.join(CORPUS_FORMATS)}"
        )
    if not path.exists():
        raise InputError(str(path), "file not found")
    if path.is_dir():
        raise InputError(str(path), "is a directory; give the corpus file")
    if fmt == "coliee":
        return parse_civil_code(path, language=language or "en")
    if fmt == "coliee-xml":
        return parse_coliee_xml(path, language=language or "ja")
    if fmt == "alqac":
        return parse_alqac_laws(path, language=language or "vi")
    return parse_jsonl(path, language=language or "en")


__all__ = ["CORPUS_FORMATS", "detect_format", "parse_corpus"]
