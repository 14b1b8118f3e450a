"""What reading a search body takes besides ``json``: content decoding and a Unicode check.

Used by :func:`gateway.limits.parse_search_body`, on the bodies the gateway parses itself (a
search it may rerank); every other body goes to OpenSearch as the client sent it.

- :func:`decoded_body`: a body sent with ``Content-Encoding: gzip`` (or ``x-gzip``,
  ``deflate``), as OpenSearch accepts it, decoded to at most ``max_bytes``: a small body that
  would expand past the limit (a compression bomb) stops there and is refused with a 413.
- :func:`has_lone_surrogate`: JSON text with a UTF-16 surrogate that is not half of a pair
  (``"\\ud800"``, or the raw bytes ED A0 80 that Python's ``json`` reads as one) is not
  Unicode: it cannot be encoded to send upstream or to a worker, so it is refused up front.
"""

from __future__ import annotations

import zlib
from typing import Any

# Content-Encoding token -> zlib wbits: gzip framing; zlib framing (deflate, RFC 9110).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
          "deflate": zlib.MAX_WBITS}


class EncodingError(ValueError):
    """A body that cannot be decoded; ``status`` is the 4xx to answer (400 or 413)."""

    def __init__(self, status: int, error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.error_type = status, error_type


def decoded_body(raw: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """``raw`` decoded as its ``Content-Encoding`` says (unchanged without one or for
    ``identity``). Raises :class:`EncodingError`: 413 when the decoded body would pass
    ``max_bytes`` (decoding stops there), 400 when it is not valid, truncated, or in an
    encoding the gateway does not read (``br``, ``zstd``, several codings in a row)."""
    coding = (content_encoding or "").strip().lower()
    if coding in ("", "identity"):
        return raw
    wbits = _WBITS.get(coding)
    if wbits is None:
        raise EncodingError(400, "illegal_argument_exception",
                            f"request body has Content-Encoding {coding[:40]!r}: the gateway "
                            "decodes gzip and deflate only (or send it uncompressed)")
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(raw, max_bytes + 1)  # one byte more tells "too large"
    except zlib.error as exc:
        raise EncodingError(400, "parse_exception",
                            f"request body is not valid {coding}: {exc}") from None
    if len(out) > max_bytes:
        raise EncodingError(413, "content_too_long_exception",
                            f"request body decompresses to more than {max_bytes} bytes: send "
                            "less (limit: LEXRERANK_MAX_BODY_BYTES)")
    if not decoder.eof or decoder.unused_data:
        raise EncodingError(400, "parse_exception",
                            f"request body is not one complete {coding} stream")
    return out


def may_hold_surrogates(raw: bytes) -> bool:
    """False when ``raw`` surely has no surrogate: no ``\\u`` escape and no ED lead byte."""
    return b"\\u" in raw or b"\xed" in raw


def has_lone_surrogate(value: Any) -> bool:
    """True when a string (key or value) anywhere in parsed JSON ``value`` holds a lone
    surrogate (a valid pair was already joined into one character by the parser)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if not node.isascii() and not is_unicode(node):
                return True
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def is_unicode(text: str) -> bool:
    """True when ``text`` can be encoded as UTF-8 (it holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
