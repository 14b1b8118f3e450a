"""Split an article's text into the units the rerankers attend over.

The rules, in order (kept deliberately simple so that they are predictable):

1. **Structural units.** Every non-blank line is a unit. Statute files put each paragraph
   ("(1)", "(2)"), item ("(i)", "(ii)", "(a)") and, in ALQAC, each numbered clause ("1.", "a)")
   on its own line, so lines are the paragraphs and items. A single line that still holds
   several paragraphs inline ("... good faith. (2) The exercise ...") is cut before each
   "(n)"/"(roman)" marker that follows sentence-final punctuation.
2. **Long units.** A unit longer than ``max_chars`` (default :data:`MAX_UNIT_CHARS` = 400;
   :data:`MAX_UNIT_CHARS_JA` = 200 for Japanese, whose characters carry about twice as much
   text) is cut into sentences: English/Vietnamese after ". ", "? ", "! " when the next word
   starts with a capital letter (so "Act No. 138" and "Art. 5" stay whole), Japanese after
   "。", "！", "？". A sentence that is still longer than ``max_chars`` is cut after "; "
   (the civil code's "...; provided, however, that ..." provisos). Delimiters stay with the
   left-hand piece.
3. Whitespace is stripped; empty strings are never returned. If none of the rules cuts
   anything the result is ``[text.strip()]``; blank text gives ``[]``.

Unknown languages are treated like English (space-separated, "." ends a sentence).
"""

from __future__ import annotations

import re

MAX_UNIT_CHARS = 400
"""Units longer than this (in characters) are split into sentences."""
MAX_UNIT_CHARS_JA = 200
"""The same for Japanese text (no spaces, denser script)."""

# A paragraph/item marker written inline after the end of a sentence: "... faith. (2) The".
# Requiring the preceding punctuation keeps cross references ("paragraph (1) of") whole.
_INLINE_MARKER = re.compile(r"(?<=[.;:])\s+(?=\((?:\d{1,3}|[ivxlc]{1,7})\)\s)")

# Candidate sentence ends for space-separated scripts: punctuation, optional closing
# quotes/brackets, then whitespace. Whether to cut is decided in _split_western.
_WESTERN_END = re.compile(r"[.?!][\"'”’)\]]*\s+")

# Words that end with "." without ending a sentence (lower-cased, without the period).
_ABBREVIATIONS = frozenset(
    {
        "no",
        "nos",
        "art",
        "arts",
        "para",
        "paras",
        "cf",
        "e.g",
        "i.e",
        "etc",
        "vs",
        "mr",
        "mrs",
        "ms",
        "dr",
        "co",
        "ltd",
        "inc",
        "p",
        "pp",
        "vol",
        "sec",
    }
)

# Japanese sentences end with a full-width terminator, possibly followed by closing brackets.
_JA_SENTENCE = re.compile(r"[^。！？]*[。！？]+[」』）)]*|[^。！？]+$")

_SEMICOLON = re.compile(r"(?<=;)\s+")


def article_sentences(text: str, language: str, max_chars: int | None = None) -> list[str]:
    """Split ``text`` (an article body) into paragraphs/items, then long ones into sentences.

    ``language`` is an ISO code ("en", "vi", "ja"; a region suffix like "en-US" is ignored);
    ``max_chars`` overrides the per-language length above which a unit is split.
    Returns the non-empty, stripped units in text order (see the module docstring).
    """
    japanese = language.lower().split("-")[0] == "ja"
    if max_chars is None:
        max_chars = MAX_UNIT_CHARS_JA if japanese else MAX_UNIT_CHARS
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        for unit in _INLINE_MARKER.split(line):
            out.extend(_split_long(unit.strip(), japanese, max_chars))
    out = [u for u in out if u]
    if not out and text.strip():
        return [text.strip()]
    return out


def _split_long(unit: str, japanese: bool, max_chars: int) -> list[str]:
    """Cut a unit longer than ``max_chars`` into sentences, then at semicolons."""
    if len(unit) <= max_chars:
        return [unit]
    if japanese:
        return [s.strip() for s in _JA_SENTENCE.findall(unit) if s.strip()]
    pieces: list[str] = []
    for sentence in _split_western(unit):
        if len(sentence) > max_chars:
            pieces.extend(p.strip() for p in _SEMICOLON.split(sentence))
        else:
            pieces.append(sentence)
    return [p for p in pieces if p]


def _split_western(unit: str) -> list[str]:
    """Cut after ". ", "? ", "! " when a capitalised word follows and no abbreviation precedes."""
    pieces: list[str] = []
    start = 0
    for m in _WESTERN_END.finditer(unit):
        nxt = unit[m.end() : m.end() + 1]
        if not nxt or not (nxt.isupper() or nxt in '"“('):
            continue
        words = unit[start : m.start()].rsplit(None, 1)
        if unit[m.start()] == "." and words and _is_abbreviation(words[-1]):
            continue
        pieces.append(unit[start : m.end()].strip())
        start = m.end()
    pieces.append(unit[start:].strip())
    return [p for p in pieces if p]


def _is_abbreviation(word: str) -> bool:
    """True for "No", "Art", "e.g", single letters ("A. Smith") and the like."""
    word = word.lstrip("(\"'“")
    return len(word) == 1 or word.lower() in _ABBREVIATIONS
