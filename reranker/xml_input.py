"""Reading untrusted XML files (COLIEE corpora and query sets) with expat, safely.

expat, not ElementTree, because it reports the line of every element, so that errors can point
at the offending one. A document type declaration is refused outright: COLIEE files have none,
and a DTD is how XML bombs (entity expansion, "billion laughs") and external entities get in.
"""

from __future__ import annotations

import xml.parsers.expat
from pathlib import Path
from typing import Any

from reranker.errors import InputError


def expat_parser(path: str | Path) -> Any:
    """A namespace-unaware expat parser that raises :class:`InputError` on any DOCTYPE."""
    parser = xml.parsers.expat.ParserCreate()

    def refuse_doctype(name: str, *_: object) -> None:
        raise InputError(str(path), f"<!DOCTYPE {name}> is not allowed (COLIEE files have "
                                    "no DTD, and entities are not expanded)",
                         parser.CurrentLineNumber)

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    return parser


def parse(parser: Any, data: bytes, path: str | Path) -> None:
    """Feed ``data`` to ``parser``; malformed XML becomes InputError with its line and column."""
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as e:
        raise InputError(
            str(path),
            f"not well-formed XML ({xml.parsers.expat.errors.messages[e.code]}, "
            f"column {e.offset + 1})",
            line=e.lineno,
        ) from e
